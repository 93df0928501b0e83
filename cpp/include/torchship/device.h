#pragma once
#include <torch/types.h>

#include <string>

namespace torchship {

// "cpu", "cuda", "cuda:N" or "auto" (CUDA device 0 when one is usable, else CPU).
// Throws InvalidInputError for a malformed spec or a CUDA device that is not there.
torch::Device parse_device(const std::string& spec);

bool cuda_available();

// Process-wide torch settings, applied once at start-up (never per request).
struct ProcessSettings {
  int intra_op_threads = 0;   // 0: leave torch's default
  int inter_op_threads = 0;   // 0: leave torch's default
  bool allow_tf32 = false;    // off by default so CUDA fp32 matches CPU fp32
  bool cudnn_benchmark = false;
  bool jit_profiling = true;  // TorchScript profiling executor (torch's default)
};
void apply_process_settings(const ProcessSettings& settings);

// A server's intra-op threads: `requested` when > 0; else 1 on CUDA, where the host only copies and a
// multi-threaded team costs more than it saves (ResNet-50 on an H100: 4,997 img/s with 1 thread, 3,008
// with 4, and 57 ms of server CPU per request with torch's default; docs/benchmarks-gpu.md); else 0,
// torch's default.
int server_intra_op_threads(int requested, const torch::Device& device);

}  // namespace torchship

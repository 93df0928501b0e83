#include "torchship/device.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/csrc/jit/runtime/graph_executor.h>

#include "torchship/errors.h"

namespace torchship {

bool cuda_available() { return torch::cuda::is_available(); }

torch::Device parse_device(const std::string& spec) {
  if (spec == "auto") return cuda_available() ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  if (spec == "cpu") return torch::kCPU;
  if (spec == "cuda" || spec.rfind("cuda:", 0) == 0) {
    int index = 0;
    if (spec.size() > 5) {
      const std::string digits = spec.substr(5);
      if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 3) {
        throw InvalidInputError("bad device '" + spec + "': expected cpu, cuda, cuda:N or auto");
      }
      index = std::stoi(digits);
    }
    if (!cuda_available()) {
      throw InvalidInputError("device '" + spec + "' requested but CUDA is not available (torch " +
                              TORCHSHIP_TORCH_VERSION + " sees no GPU)");
    }
    const auto count = static_cast<int>(torch::cuda::device_count());
    if (index >= count) {
      throw InvalidInputError("device '" + spec + "' requested but only " + std::to_string(count) +
                              " CUDA device(s) are visible");
    }
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  throw InvalidInputError("bad device '" + spec + "': expected cpu, cuda, cuda:N or auto");
}

void apply_process_settings(const ProcessSettings& s) {
  if (s.intra_op_threads > 0) at::set_num_threads(s.intra_op_threads);
  if (s.inter_op_threads > 0) {
    try {
      at::set_num_interop_threads(s.inter_op_threads);
    } catch (const c10::Error&) {
      // Only settable before the first inter-op task; keep what is there.
    }
  }
  auto& ctx = at::globalContext();
  ctx.setAllowTF32CuBLAS(s.allow_tf32);
  ctx.setAllowTF32CuDNN(s.allow_tf32);
  ctx.setBenchmarkCuDNN(s.cudnn_benchmark);
  torch::jit::getProfilingMode() = s.jit_profiling;
}

int server_intra_op_threads(int requested, const torch::Device& device) {
  if (requested > 0) return requested;
  return device.is_cuda() ? 1 : 0;
}

}  // namespace torchship

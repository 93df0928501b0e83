#pragma once
// A loaded model version: its config (state loaded once) and N instances
// (per-device execution state), fed by one DynamicBatcher.
#include <torch/types.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "torchship/backend.h"
#include "torchship/batcher.h"
#include "torchship/model_config.h"
#include "torchship/stats.h"

namespace torchship {

struct ModelOptions {
  torch::Device device = torch::kCPU;
  std::string format = "auto";  // "auto" | "torchscript" | "pt2"
  // Overrides of config.json; unset = take the config's value.
  std::optional<int> instance_count;
  std::optional<int64_t> max_batch_size;
  std::optional<std::chrono::microseconds> max_queue_delay;
  std::optional<int64_t> max_queue_size;
  bool warmup = true;
  // Run in this floating dtype (fp16/bf16) instead of the exported one: weights
  // are cast at load, floating inputs per batch, floating outputs back to the
  // config's dtype, so clients see the same contract. Unset: as exported.
  std::optional<torch::ScalarType> precision;
  bool channels_last = false;  // 4-D weights and inputs in NHWC (cuDNN's fast layout)
};

// "exported" (unset), "fp32", "fp16" or "bf16"; throws InvalidInputError.
std::optional<torch::ScalarType> parse_precision(const std::string& name);

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

class Model {
 public:
  // Loads the artifact of `version_dir` into config.instance_count instances,
  // warms them up and starts the batcher. Throws LoadError naming model,
  // version, file and cause.
  Model(ModelConfig config, std::string version, const std::filesystem::path& version_dir, const ModelOptions& options);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return config_; }
  const std::string& name() const { return config_.name; }
  const std::string& version() const { return version_; }
  const std::string& format() const { return format_; }
  const std::filesystem::path& artifact() const { return artifact_; }
  torch::Device device() const { return device_; }
  bool ready() const { return ready_.load(); }
  ModelStats& stats() { return *stats_; }
  double load_seconds() const { return load_seconds_; }

  // Inputs in config order, CPU or device tensors. Validated, batched with
  // other callers' requests, run; outputs in config order, on the CPU.
  std::vector<torch::Tensor> infer(std::vector<torch::Tensor> inputs,
                                   std::optional<std::chrono::microseconds> timeout = {});
  // Same, with inputs by name (any order); unknown or missing names are errors.
  std::vector<torch::Tensor> infer(const NamedTensors& inputs, std::optional<std::chrono::microseconds> timeout = {});
  // Asynchronous inference, for servers: validates on the caller's thread (throws InvalidInputError,
  // OverloadedError or UnavailableError there, counted), then queues. `on_done` runs exactly once, on a
  // batcher worker, with the outputs (config order, CPU) or the error; it should only hand them on.
  // The model never runs on the caller's thread. A request whose `cancelled` flag is set while it is
  // still queued is dropped (CancelledError).
  void submit(std::vector<torch::Tensor> inputs, std::optional<std::chrono::steady_clock::time_point> deadline,
              DynamicBatcher::Done on_done, DynamicBatcher::CancelFlag cancelled = {});
  void submit(const NamedTensors& inputs, std::optional<std::chrono::steady_clock::time_point> deadline,
              DynamicBatcher::Done on_done, DynamicBatcher::CancelFlag cancelled = {});
  // Throws OverloadedError (and counts it) while the request queue is full, so a
  // server can refuse a request before decoding it. Advisory: infer() decides.
  void refuse_if_overloaded();
  // Orders named inputs as the config lists them; throws InvalidInputError.
  std::vector<torch::Tensor> order_inputs(const NamedTensors& inputs) const;

  // Stops accepting requests and drains the ones queued or in flight.
  void shutdown();

 private:
  class Instance;
  std::vector<torch::Tensor> run_batch(int instance, const std::vector<torch::Tensor>& batch);
  void warm_up();
  void check_outputs(const std::vector<torch::Tensor>& outputs, int64_t rows) const;
  // Counts a failed request by its error type; returns the error to rethrow (internal errors get the model's name).
  std::exception_ptr count_failure(std::exception_ptr error, std::chrono::steady_clock::time_point started);

  ModelConfig config_;
  std::string version_;
  torch::Device device_;
  std::string format_;
  std::filesystem::path artifact_;
  std::unique_ptr<ModelStats> stats_;
  std::vector<std::unique_ptr<Instance>> instances_;
  std::unique_ptr<DynamicBatcher> batcher_;
  std::atomic<bool> ready_{false};
  double load_seconds_ = 0;
};

// Finds the artifact for `format` in a version directory: model.pt for
// TorchScript; model.pt2 (CPU) or model.cuda.pt2 (CUDA) for AOTInductor.
std::filesystem::path find_artifact(const std::filesystem::path& version_dir, const std::string& format,
                                    const torch::Device& device);

}  // namespace torchship

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
#include "torchship/image_pipeline.h"
#include "torchship/model_config.h"
#include "torchship/stats.h"
#include "torchship/variants.h"

namespace torchship {

struct ModelOptions {
  torch::Device device = torch::kCPU;
  // Which artifact of the version (docs/variants.md): format "auto" | "torchscript" | "pt2", the
  // compute precision ("fp32", "fp16", "bf16", "int8") and the layout. A TorchScript fp32 artifact
  // is converted at load when no variant matches exactly; nothing else is.
  std::string format = "auto";
  std::string precision = "fp32";
  bool channels_last = false;
  // Overrides of config.json; unset = take the config's value.
  std::optional<int> instance_count;
  std::optional<int64_t> max_batch_size;
  std::optional<std::chrono::microseconds> max_queue_delay;
  std::optional<int64_t> max_queue_size;
  bool warmup = true;
  // Threads that run requests themselves (a server's I/O threads). A model whose batch-1 call is measured
  // small runs on them, and gets at least this many instances unless instance_count is set above.
  int caller_threads = 0;
};

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

class Model {
 public:
  // Loads the artifact `options` choose among the version's variants into config.instance_count instances,
  // warms them up and starts the batcher. Throws LoadError naming model,
  // version, file and cause.
  Model(ModelConfig config, std::string version, const std::filesystem::path& version_dir, const ModelOptions& options);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return config_; }
  const std::string& name() const { return config_.name; }
  const std::string& version() const { return version_; }
  std::string format() const { return format_name(variant_.variant.format); }
  const std::filesystem::path& artifact() const { return variant_.file; }
  const VariantChoice& variant() const { return variant_; }
  torch::Device device() const { return device_; }
  bool ready() const { return ready_.load(); }
  ModelStats& stats() { return *stats_; }
  double load_seconds() const { return load_seconds_; }
  // The model's image requests (config.json's image record), or nullptr when it takes no images.
  const ImagePipeline* image() const { return image_.get(); }

  // Inputs in config order, CPU or device tensors. Validated, batched with
  // other callers' requests, run; outputs in config order, on the CPU.
  std::vector<torch::Tensor> infer(std::vector<torch::Tensor> inputs,
                                   std::optional<std::chrono::microseconds> timeout = {});
  // Same, with inputs by name (any order); unknown or missing names are errors.
  std::vector<torch::Tensor> infer(const NamedTensors& inputs, std::optional<std::chrono::microseconds> timeout = {});
  // Asynchronous inference, for servers: validates on the caller's thread (throws InvalidInputError,
  // OverloadedError or UnavailableError there, counted), then queues. `on_done` runs exactly once, on a
  // batcher worker, with the outputs (config order, CPU) or the error; it should only hand them on.
  // The model runs on the caller's thread only when it is idle and measured small (a batch-1 call under
  // kSmallCallSeconds with single-threaded kernels: the handoff would cost more). A request whose `cancelled` flag is set while it is
  // still queued is dropped (CancelledError).
  void submit(std::vector<torch::Tensor> inputs, std::optional<std::chrono::steady_clock::time_point> deadline,
              DynamicBatcher::Done on_done, DynamicBatcher::CancelFlag cancelled = {});
  void submit(const NamedTensors& inputs, std::optional<std::chrono::steady_clock::time_point> deadline,
              DynamicBatcher::Done on_done, DynamicBatcher::CancelFlag cancelled = {});
  // Several requests (inputs in config order) that one I/O thread read in one round: each validated like
  // submit(), then queued together, so an idle small model runs them here as one batch (DynamicBatcher).
  // Never throws: a request refused gets its error through its `done`, on this thread.
  void submit(std::vector<DynamicBatcher::Submission> group);
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
  void check_arguments(const Backend& backend) const;  // throws LoadError
  // `on_done` wrapped to count the request's outcome and time in stats_ (in_flight already counted).
  DynamicBatcher::Done counted(DynamicBatcher::Done on_done, std::chrono::steady_clock::time_point started);
  // Counts a failed request by its error type; returns the error to rethrow (internal errors get the model's name).
  std::exception_ptr count_failure(std::exception_ptr error, std::chrono::steady_clock::time_point started);

  ModelConfig config_;
  std::string version_;
  torch::Device device_;
  VariantChoice variant_;
  std::unique_ptr<ModelStats> stats_;
  std::vector<std::unique_ptr<Instance>> instances_;
  std::unique_ptr<DynamicBatcher> batcher_;
  std::unique_ptr<ImagePipeline> image_;
  std::atomic<bool> ready_{false};
  double load_seconds_ = 0;
  double warm_batch1_seconds_ = -1;  // the optimised batch-1 call at warm-up; -1: not measured
  static constexpr double kSmallCallSeconds = 50e-6;
};

}  // namespace torchship

#include "torchship/model.h"

#include <ATen/Parallel.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <c10/util/accumulate.h>
#include <torch/torch.h>

#include "describe.h"
#include "torchship/dtypes.h"
#include "torchship/errors.h"
#include "torchship/op_libraries.h"

namespace torchship {
namespace {

using Clock = std::chrono::steady_clock;

torch::Tensor example_input(const TensorSpec& spec, int64_t batch) {
  std::vector<int64_t> shape = spec.example_shape;
  shape[0] = batch;
  for (auto& d : shape) d = d < 0 ? 1 : d;
  const auto options = torch::TensorOptions().dtype(spec.dtype);
  if (c10::isFloatingType(spec.dtype)) return torch::randn(shape, options);
  return torch::zeros(shape, options);
}

// Counts the request in flight for as long as it lives.
class InFlight {
 public:
  explicit InFlight(std::atomic<int64_t>& counter) : counter_(counter) { counter_.fetch_add(1); }
  ~InFlight() { counter_.fetch_sub(1); }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;

 private:
  std::atomic<int64_t>& counter_;
};

}  // namespace

// One copy of the model on one device. On CUDA it owns a stream and pinned
// host staging buffers reused across batches; it synchronizes only its stream.
class Model::Instance {
 public:
  Instance(const VariantChoice& choice, const torch::Device& device, const std::vector<TensorSpec>& outputs)
      : device_(device),
        backend_(load_backend(choice.file, device)),
        precision_(choice.convert_to),
        channels_last_(choice.convert_channels_last) {
    backend_->convert(precision_, channels_last_);
    for (const auto& spec : outputs) output_dtypes_.push_back(spec.dtype);
    if (device_.is_cuda()) {
      c10::impl::VirtualGuardImpl impl(device_.type());
      stream_ = impl.getStreamFromGlobalPool(device_, /*isHighPriority=*/false);
    }
  }

  std::vector<torch::Tensor> run(const std::vector<torch::Tensor>& batch) {
    if (!device_.is_cuda()) {
      std::vector<torch::Tensor> inputs;
      inputs.reserve(batch.size());
      for (const auto& t : batch) inputs.push_back(convert_input(t.device() == device_ ? t : t.to(device_)));
      return convert_outputs(backend_->forward(inputs));
    }
    c10::StreamGuard guard(*stream_);
    std::vector<torch::Tensor> inputs;
    for (size_t i = 0; i < batch.size(); ++i) {
      const auto& t = batch[i];
      if (t.device() == device_) {
        inputs.push_back(convert_input(t));
      } else {  // concat() may already have gathered it into the staging buffer
        const bool staged = i < staging_.size() && staging_[i].defined() && t.data_ptr() == staging_[i].data_ptr();
        const auto& host = staged ? t : stage(i, t);
        inputs.push_back(convert_input(host.to(device_, /*non_blocking=*/true)));
      }
    }
    std::vector<torch::Tensor> outputs = convert_outputs(backend_->forward(inputs));
    std::vector<torch::Tensor> host;
    host.reserve(outputs.size());
    for (const auto& out : outputs) {
      auto h = torch::empty(out.sizes(), out.options().device(torch::kCPU).pinned_memory(true));
      h.copy_(out, /*non_blocking=*/true);
      host.push_back(std::move(h));
    }
    stream_->synchronize();
    return host;
  }

  // The batcher's concatenation on CUDA: straight into the pinned buffer run() copies from, so a batch
  // is copied once on the host instead of twice (cat, then stage). The buffer is free again here:
  // run() synchronizes its stream before returning, and one worker drives this instance.
  torch::Tensor concat(size_t i, const std::vector<torch::Tensor>& parts) {
    for (const auto& p : parts) {
      if (!p.device().is_cpu()) return torch::cat(parts, 0);  // callers may pass device tensors
    }
    std::vector<int64_t> shape = parts.front().sizes().vec();
    shape[0] = 0;
    for (const auto& p : parts) shape[0] += p.size(0);
    auto view = staging_view(i, shape, parts.front().options());
    return torch::cat_out(view, parts, 0);
  }

  const Backend& backend() const { return *backend_; }

 private:
  // On the device: to the run precision and layout (casts after the copy, so
  // only the exported dtype crosses PCIe and the cast runs on the GPU).
  torch::Tensor convert_input(const torch::Tensor& t) const {
    const auto dtype = precision_ && c10::isFloatingType(t.scalar_type()) ? *precision_ : t.scalar_type();
    const auto layout = channels_last_ && t.dim() == 4 ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Preserve;
    return t.to(dtype, /*non_blocking=*/false, /*copy=*/false, layout);  // one kernel for both, none when neither
  }

  // Back to the config's dtypes and row-major layout, so callers never see the run precision.
  std::vector<torch::Tensor> convert_outputs(std::vector<torch::Tensor> outputs) const {
    if (!precision_ && !channels_last_) return outputs;
    for (size_t i = 0; i < outputs.size() && i < output_dtypes_.size(); ++i) {
      auto& out = outputs[i];
      const bool cast = c10::isFloatingType(out.scalar_type()) && c10::isFloatingType(output_dtypes_[i]);
      out = out.to(cast ? output_dtypes_[i] : out.scalar_type(), /*non_blocking=*/false, /*copy=*/false,
                   at::MemoryFormat::Contiguous);
    }
    return outputs;
  }

  // Copies a CPU tensor into this instance's pinned buffer for input i.
  torch::Tensor stage(size_t i, const torch::Tensor& t) { return staging_view(i, t.sizes(), t.options()).copy_(t); }

  // Input i's pinned buffer as a tensor of `shape`, growing the buffer when needed.
  torch::Tensor staging_view(size_t i, c10::IntArrayRef shape, const torch::TensorOptions& options) {
    if (staging_.size() <= i) staging_.resize(i + 1);
    auto& buffer = staging_[i];
    const int64_t numel = c10::multiply_integers(shape);
    if (!buffer.defined() || buffer.scalar_type() != options.dtype().toScalarType() || buffer.numel() < numel) {
      buffer = torch::empty({numel}, options.device(torch::kCPU).pinned_memory(true));
    }
    return buffer.narrow(0, 0, numel).view(shape);
  }

  torch::Device device_;
  std::unique_ptr<Backend> backend_;
  std::optional<torch::ScalarType> precision_;
  bool channels_last_;
  std::vector<torch::ScalarType> output_dtypes_;
  std::optional<c10::Stream> stream_;
  std::vector<torch::Tensor> staging_;
};

Model::Model(ModelConfig config, std::string version, const std::filesystem::path& version_dir,
             const ModelOptions& options)
    : config_(std::move(config)), version_(std::move(version)), device_(options.device) {
  const auto started = Clock::now();
  if (options.instance_count) config_.instance_count = *options.instance_count;
  if (options.max_batch_size) config_.max_batch_size = *options.max_batch_size;
  if (options.max_queue_delay) config_.max_queue_delay = *options.max_queue_delay;
  if (options.max_queue_size) config_.max_queue_size = *options.max_queue_size;
  const VariantRequest request{options.format, device_, options.precision, options.channels_last};
  variant_ = choose_variant(list_variants(config_.raw, version_dir), request, version_dir);
  const std::string what = "model '" + config_.name + "' version " + version_ + " (" + variant_.describe() + ")";
  const auto with_hint = [](const std::exception& e) {
    const auto message = detail::describe(e);
    const auto hint = unknown_operator_hint(message);
    return hint.empty() ? message : hint + ". " + message;
  };
  // torchvision's ops are loaded only when a model calls them: its library brings libpython and
  // libtorch_python into the process (9 MB of RSS in the server) that other models do not need. (The crash
  // while the server drained, once blamed on them, was a use-after-free in the HTTP front end's shutdown
  // that they made likelier: serve/src/http/server.cpp, issue 12.)
  const auto load_instances = [&] {
    while (instances_.size() < static_cast<size_t>(config_.instance_count)) {
      instances_.push_back(std::make_unique<Instance>(variant_, device_, config_.outputs));
    }
  };
  try {
    try {
      load_instances();
    } catch (const std::exception& e) {
      const auto message = detail::describe(e);
      if (message.find("torchvision::") == std::string::npos || !load_torchvision_ops()) throw;
      load_instances();
    }
  } catch (const std::exception& e) {
    throw LoadError("cannot load " + what + " on " + device_.str() + ": " + with_hint(e));
  }
  check_arguments(instances_.front()->backend());
  if (config_.image) image_ = std::make_unique<ImagePipeline>(config_, version_dir);
  stats_ = std::make_unique<ModelStats>(config_.max_batch_size);
  if (options.warmup) {
    try {
      warm_up();
    } catch (const std::exception& e) {
      throw LoadError("warm-up of " + what + " failed: " + with_hint(e));
    }
  }
  const bool run_on_caller = at::get_num_threads() == 1;  // single-threaded kernels: no OpenMP team to keep warm
  // Servers' requests run on the I/O thread only for a model whose batch-1 call took under
  // kSmallCallSeconds at warm-up: there the handoff to a worker and back costs more than the call.
  const bool small = run_on_caller && warm_batch1_seconds_ >= 0 && warm_batch1_seconds_ < kSmallCallSeconds;
  if (small && !options.instance_count && options.caller_threads > config_.instance_count) {
    // One instance per I/O thread, so that no thread waits for another's call and hands it its requests
    // (docs/benchmarks.md, "Why 4 connections"). Each still batches what its thread read in one round.
    config_.instance_count = options.caller_threads;
    try {
      load_instances();
      if (options.warmup) warm_up();
    } catch (const std::exception& e) {
      throw LoadError("cannot load " + what + " on " + device_.str() + " (instance " +
                      std::to_string(instances_.size() + 1) + "): " + with_hint(e));
    }
  }
  BatcherOptions batching{config_.max_batch_size, config_.max_queue_delay, config_.max_queue_size,
                          config_.instance_count};
  batching.run_on_caller = run_on_caller;
  batching.run_small_on_caller = small;
  DynamicBatcher::ConcatFn concat;
  if (device_.is_cuda()) {
    concat = [this](int instance, size_t input, const std::vector<torch::Tensor>& parts) {
      return instances_.at(static_cast<size_t>(instance))->concat(input, parts);
    };
  }
  batcher_ = std::make_unique<DynamicBatcher>(
      batching, [this](int instance, const std::vector<torch::Tensor>& batch) { return run_batch(instance, batch); },
      *stats_, std::move(concat));
  load_seconds_ = std::chrono::duration<double>(Clock::now() - started).count();
  ready_.store(true);
}

Model::~Model() { shutdown(); }

void Model::shutdown() {
  ready_.store(false);
  if (batcher_) batcher_->shutdown();
}

void Model::warm_up() {
  std::vector<int64_t> sizes = config_.warmup_batch_sizes;
  if (sizes.empty()) sizes = {1, config_.max_batch_size};
  // TorchScript's profiling executor records on an instance's first call and
  // optimises on its second, whatever the shapes; after that a new batch size
  // costs no more on its first call than later (measured on ResNet-18, CPU),
  // so only the first size runs twice.
  bool first = true;
  for (const auto batch : sizes) {
    const int64_t rows = std::clamp<int64_t>(batch, 1, config_.max_batch_size);
    std::vector<torch::Tensor> inputs;
    for (const auto& spec : config_.inputs) inputs.push_back(example_input(spec, rows));
    for (auto& instance : instances_) {
      if (first) instance->run(inputs);
      check_outputs(instance->run(inputs), rows);
    }
    first = false;
  }
  // The optimised batch-1 call, best of three (the second call above includes the optimisation).
  std::vector<torch::Tensor> one;
  for (const auto& spec : config_.inputs) one.push_back(example_input(spec, 1));
  for (int i = 0; i < 3; ++i) {
    const auto started = Clock::now();
    instances_.front()->run(one);
    const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
    if (warm_batch1_seconds_ < 0 || seconds < warm_batch1_seconds_) warm_batch1_seconds_ = seconds;
  }
}

// The runtime passes inputs positionally, in config.json's order: forward must take that many, and
// an input that forward names must sit at the same position (two swapped inputs of one shape would
// otherwise be served silently wrong). Other names are the artifact's own (a traced `x` for `image`).
void Model::check_arguments(const Backend& backend) const {
  const auto arguments = backend.forward_arguments();
  if (!arguments) return;
  std::string declared, found;
  for (const auto& spec : config_.inputs) declared += (declared.empty() ? "" : ", ") + spec.name;
  size_t required = 0;
  for (const auto& a : *arguments) {
    found += (found.empty() ? "" : ", ") + a.name;
    required += a.has_default ? 0 : 1;
  }
  const auto n = config_.inputs.size();
  if (n < required || n > arguments->size()) {
    throw LoadError("model '" + config_.name + "': forward takes " + std::to_string(arguments->size()) +
                    " argument(s) (" + found + "), " + std::to_string(required) + " required; config.json declares " +
                    std::to_string(n) + " input(s) (" + declared + ")");
  }
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < arguments->size(); ++j) {
      if (j != i && (*arguments)[j].name == config_.inputs[i].name) {
        throw LoadError("model '" + config_.name + "': input '" + config_.inputs[i].name + "' is argument " +
                        std::to_string(j + 1) + " of forward (" + found + ") but input " + std::to_string(i + 1) +
                        " in config.json (" + declared + "); the runtime passes inputs in config.json's order");
      }
    }
  }
}

// What warm-up returned must be what config.json promises clients: a model that returns another
// count, dtype or shape would otherwise report ready and then fail (or silently differ) per request.
void Model::check_outputs(const std::vector<torch::Tensor>& outputs, int64_t rows) const {
  const auto& specs = config_.outputs;
  if (outputs.size() != specs.size()) {
    std::string declared;
    for (const auto& spec : specs) declared += (declared.empty() ? "'" : ", '") + spec.name + "'";
    throw LoadError("the model returns " + std::to_string(outputs.size()) + " output(s), config.json declares " +
                    std::to_string(specs.size()) + " (" + declared + ")");
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& spec = specs[i];
    const auto& out = outputs[i];
    if (out.scalar_type() != spec.dtype) {
      throw LoadError("output '" + spec.name + "' is " + dtype_name(out.scalar_type()) + ", config.json declares " +
                      dtype_name(spec.dtype));
    }
    bool fits = out.dim() == static_cast<int64_t>(spec.shape.size()) && out.dim() > 0 && out.size(0) == rows;
    for (int64_t d = 1; fits && d < out.dim(); ++d) {
      const auto want = spec.shape[static_cast<size_t>(d)];
      fits = want < 0 || want == out.size(d);
    }
    if (!fits) {
      throw LoadError("output '" + spec.name + "' has shape " + shape_string(out.sizes()) + " for a batch of " +
                      std::to_string(rows) + ", config.json declares " + shape_string(spec.shape));
    }
  }
}

std::vector<torch::Tensor> Model::run_batch(int instance, const std::vector<torch::Tensor>& batch) {
  return instances_.at(static_cast<size_t>(instance))->run(batch);
}

void Model::refuse_if_overloaded() {
  try {
    batcher_->check_capacity();
  } catch (const OverloadedError&) {
    stats_->failed_overloaded.fetch_add(1);
    throw;
  }
}

std::vector<torch::Tensor> Model::order_inputs(const NamedTensors& named) const {
  std::vector<torch::Tensor> ordered(config_.inputs.size());
  for (const auto& [name, tensor] : named) {
    const int i = config_.input_index(name);
    if (i < 0) {
      std::string expected;
      for (const auto& spec : config_.inputs) expected += (expected.empty() ? "'" : ", '") + spec.name + "'";
      throw InvalidInputError("model '" + config_.name + "' has no input '" + name + "' (inputs: " + expected + ")");
    }
    if (ordered[static_cast<size_t>(i)].defined()) {
      throw InvalidInputError("input '" + name + "' given more than once");
    }
    ordered[static_cast<size_t>(i)] = tensor;
  }
  return ordered;
}

std::vector<torch::Tensor> Model::infer(const NamedTensors& inputs, std::optional<std::chrono::microseconds> timeout) {
  std::vector<torch::Tensor> ordered;
  try {
    ordered = order_inputs(inputs);
  } catch (const InvalidInputError&) {
    stats_->failed_invalid.fetch_add(1);
    throw;
  }
  return infer(std::move(ordered), timeout);
}

std::exception_ptr Model::count_failure(std::exception_ptr error, Clock::time_point started) {
  stats_->failed_nanoseconds.fetch_add(
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - started).count()),
      std::memory_order_relaxed);
  try {
    std::rethrow_exception(error);
  } catch (const InvalidInputError&) {
    stats_->failed_invalid.fetch_add(1);
  } catch (const OverloadedError&) {
    stats_->failed_overloaded.fetch_add(1);
  } catch (const UnavailableError&) {
    stats_->failed_unavailable.fetch_add(1);
  } catch (const TimeoutError&) {
    stats_->failed_timeout.fetch_add(1);
  } catch (const CancelledError&) {
    // counted by the batcher as cancelled: not a failure of the model
  } catch (const std::exception& e) {
    stats_->failed_internal.fetch_add(1);
    return std::make_exception_ptr(
        Error("model '" + config_.name + "' version " + version_ + " failed: " + detail::describe(e)));
  }
  return error;
}

std::vector<torch::Tensor> Model::infer(std::vector<torch::Tensor> inputs,
                                        std::optional<std::chrono::microseconds> timeout) {
  const auto started = Clock::now();
  InFlight in_flight(stats_->in_flight);
  try {
    if (!ready_.load()) throw UnavailableError("model '" + config_.name + "' is not ready");
    validate_inputs(config_, inputs);
    auto outputs = batcher_->run(std::move(inputs), timeout);
    stats_->requests_ok.fetch_add(1, std::memory_order_relaxed);
    stats_->request_seconds.observe(std::chrono::duration<double>(Clock::now() - started).count());
    return outputs;
  } catch (...) {
    std::rethrow_exception(count_failure(std::current_exception(), started));
  }
}

void Model::submit(const NamedTensors& inputs, std::optional<Clock::time_point> deadline,
                   DynamicBatcher::Done on_done, DynamicBatcher::CancelFlag cancelled) {
  std::vector<torch::Tensor> ordered;
  try {
    ordered = order_inputs(inputs);
  } catch (const InvalidInputError&) {
    stats_->failed_invalid.fetch_add(1);
    throw;
  }
  submit(std::move(ordered), deadline, std::move(on_done), std::move(cancelled));
}

void Model::submit(std::vector<torch::Tensor> inputs, std::optional<Clock::time_point> deadline,
                   DynamicBatcher::Done on_done, DynamicBatcher::CancelFlag cancelled) {
  const auto started = Clock::now();
  try {
    if (!ready_.load()) throw UnavailableError("model '" + config_.name + "' is not ready");
    validate_inputs(config_, inputs);
    stats_->in_flight.fetch_add(1);
    try {
      batcher_->submit(std::move(inputs), deadline, counted(std::move(on_done), started), std::move(cancelled));
    } catch (...) {
      stats_->in_flight.fetch_sub(1);
      throw;
    }
  } catch (...) {
    std::rethrow_exception(count_failure(std::current_exception(), started));
  }
}

void Model::submit(std::vector<DynamicBatcher::Submission> group) {
  const auto started = Clock::now();
  std::vector<DynamicBatcher::Submission> valid;
  valid.reserve(group.size());
  for (auto& s : group) {
    try {
      if (!ready_.load()) throw UnavailableError("model '" + config_.name + "' is not ready");
      validate_inputs(config_, s.inputs);
    } catch (...) {
      s.done(count_failure(std::current_exception(), started), {});
      continue;
    }
    stats_->in_flight.fetch_add(1);
    s.done = counted(std::move(s.done), started);
    valid.push_back(std::move(s));
  }
  if (!valid.empty()) batcher_->submit(std::move(valid));
}

DynamicBatcher::Done Model::counted(DynamicBatcher::Done on_done, Clock::time_point started) {
  return [this, started, on_done = std::move(on_done)](std::exception_ptr error, std::vector<torch::Tensor> outputs) {
    stats_->in_flight.fetch_sub(1);
    if (error) {
      on_done(count_failure(error, started), {});
      return;
    }
    stats_->requests_ok.fetch_add(1, std::memory_order_relaxed);
    stats_->request_seconds.observe(std::chrono::duration<double>(Clock::now() - started).count());
    on_done(nullptr, std::move(outputs));
  };
}

}  // namespace torchship

#include "service.h"

#include <thread>

#include "metrics.h"
#include "protocol.h"
#include "torchship/dtypes.h"
#include "torchship/errors.h"

namespace torchship::serve {
namespace {

using json = nlohmann::json;

const char* platform(const Model& model) {
  return model.format() == "pt2" ? "pytorch_aotinductor" : "pytorch_libtorch";
}

json tensor_metadata(const std::vector<TensorSpec>& specs) {
  json list = json::array();
  for (const auto& s : specs) list.push_back({{"name", s.name}, {"datatype", dtype_name(s.dtype)}, {"shape", s.shape}});
  return list;
}

// Triton's dims leave out the batch dimension when max_batch_size > 0 (ours always is).
json config_tensors(const std::vector<TensorSpec>& specs) {
  json list = json::array();
  for (const auto& s : specs) {
    list.push_back({{"name", s.name},
                    {"data_type", config_data_type(s.dtype)},
                    {"dims", std::vector<int64_t>(s.shape.begin() + (s.shape.empty() ? 0 : 1), s.shape.end())}});
  }
  return list;
}

json duration(uint64_t count, double seconds) {
  return {{"count", count}, {"ns", static_cast<uint64_t>(seconds * 1e9)}};
}

json model_statistics(Model& model) {
  auto& s = model.stats();
  const auto request = s.request_seconds.snapshot();
  const auto queue = s.queue_seconds.snapshot();
  const auto compute = s.compute_seconds.snapshot();
  const auto decode = s.decode_seconds.snapshot();
  const auto encode = s.encode_seconds.snapshot();
  const auto batch = s.batch_size.snapshot();
  const uint64_t failed = s.failed_invalid + s.failed_overloaded + s.failed_timeout + s.failed_unavailable +
                          s.failed_internal;
  const auto none = duration(0, 0);
  return {{"name", model.name()},
          {"version", model.version()},
          {"last_inference", s.last_inference_ms.load()},
          {"inference_count", static_cast<uint64_t>(batch.sum)},  // rows run
          {"execution_count", s.batches.load()},                  // batches run
          {"inference_stats",
           {{"success", duration(request.count, request.sum)},
            {"fail", {{"count", failed}, {"ns", s.failed_nanoseconds.load()}}},
            {"queue", duration(queue.count, queue.sum)},
            // compute_input / compute_output: decoding each request's body into tensors and encoding its
            // answer (per request); compute_infer: running each batch (per batch). Gathering a batch's
            // inputs is in /metrics (torchship_gather_duration_seconds).
            {"compute_input", duration(decode.count, decode.sum)},
            {"compute_infer", duration(compute.count, compute.sum)},
            {"compute_output", duration(encode.count, encode.sum)},
            {"cache_hit", none},
            {"cache_miss", none}}},
          {"batch_stats", json::array()}};
}

}  // namespace

std::string config_data_type(torch::ScalarType dtype) {
  const auto name = dtype_name(dtype);
  return name == "BYTES" ? "TYPE_STRING" : "TYPE_" + name;
}

Service::Service(ServiceOptions options)
    : options_(std::move(options)),
      workers_(std::make_unique<WorkerPool>(
          options_.worker_threads > 0 ? options_.worker_threads
                                      : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())))) {
  server_metadata_ = server_metadata().dump();
}

void Service::post(std::function<void()> task) {
  {
    std::lock_guard lock(workers_mutex_);
    if (workers_) return workers_->post(std::move(task));
  }
  task();
}

void Service::stop_workers() {
  std::unique_ptr<WorkerPool> pool;
  {
    std::lock_guard lock(workers_mutex_);
    pool = std::move(workers_);
  }
  pool.reset();  // joins, outside the lock: its tasks may post more
}

json Service::server_metadata() const {
  return {{"name", "torchship"},
          {"version", options_.version},
          {"extensions", {"binary_tensor_data", "model_configuration", "statistics", "model_repository"}}};
}

void Service::set_repository(const ModelRepository* repository) {
  // Built before the pointer is published; read only after loading it (acquire).
  for (const auto& model : repository->models()) models_.emplace(model->name(), model);
  repository_.store(repository, std::memory_order_release);
}

const ModelRepository& Service::repository() const {
  const auto* repo = repository_.load(std::memory_order_acquire);
  if (repo == nullptr) throw UnavailableError("the server is still loading its models");
  return *repo;
}

Readiness Service::readiness() const {
  const auto* repo = repository_.load(std::memory_order_acquire);
  if (repo == nullptr) return {false, "not ready: loading models"};
  if (draining()) return {false, "not ready: shutting down"};
  for (const auto& m : repo->models()) {
    if (!m->ready()) return {false, "not ready: model '" + m->name() + "' is not ready"};
  }
  if (!options_.ready_with_failed_models && !repo->failures().empty()) {
    const auto& f = repo->failures().front();
    return {false, "not ready: model '" + f.name + "' failed to load (" + std::to_string(repo->failures().size()) +
                       " failed; --ready-with-failed-models serves the others as ready): " + f.reason};
  }
  return {true, ""};
}

std::shared_ptr<Model> Service::find_model(std::string_view name_view, std::optional<std::string_view> version_view) const {
  const auto& repo = repository();
  // The hot path: a known name and no version, or the loaded one.
  if (const auto it = models_.find(name_view);
      it != models_.end() && (!version_view || *version_view == it->second->version())) {
    return it->second;
  }
  const std::string name(name_view);
  const std::string version(version_view.value_or(""));
  try {  // unknown, failed or malformed: the repository says which, naming what exists
    if (version_view && !valid_version(version)) {
      throw InvalidInputError("invalid model version " + echo(version) + ": expected digits");
    }
    return repo.get(name, version);
  } catch (const NotFoundError&) {
    if (!valid_model_name(name)) {
      throw InvalidInputError("invalid model name " + echo(name) +
                              ": letters, digits, '_', '-' and '.', not starting with '.', at most 128 characters");
    }
    throw;
  }
}

std::shared_ptr<Model> Service::sole_model() const {
  repository();  // throws while the repository is loading
  if (models_.size() == 1) return models_.begin()->second;
  std::string names;
  for (const auto& [name, model] : models_) names += (names.empty() ? "" : ", ") + name;
  throw NotFoundError("/image takes an image for the one model served, but " + std::to_string(models_.size()) +
                      " are served (" + names + "): send it to /v2/models/{model}/image");
}

std::shared_ptr<Model> Service::ready_model(std::string_view name, std::optional<std::string_view> version) const {
  auto model = find_model(name, version);
  if (!model->ready() || draining()) {
    throw UnavailableError("model '" + model->name() + "' version " + model->version() + " is not ready");
  }
  return model;
}

json Service::model_metadata(const Model& model) const {
  return {{"name", model.name()},
          {"versions", {model.version()}},
          {"platform", platform(model)},
          {"inputs", tensor_metadata(model.config().inputs)},
          {"outputs", tensor_metadata(model.config().outputs)}};
}

json Service::model_config(const Model& model) const {
  const auto& c = model.config();
  json doc{{"name", c.name},
           {"platform", platform(model)},
           {"backend", "torchship"},
           {"max_batch_size", c.max_batch_size},
           {"input", config_tensors(c.inputs)},
           {"output", config_tensors(c.outputs)},
           {"instance_group", {{{"count", c.instance_count}, {"kind", model.device().is_cpu() ? "KIND_CPU" : "KIND_GPU"}}}},
           {"dynamic_batching",
            {{"max_queue_delay_microseconds", c.max_queue_delay.count()},
             {"default_queue_policy", {{"max_queue_size", c.max_queue_size}}}}}};
  // torchship's own contract (labels, preprocessing, weights) travels as parameters, as JSON text.
  json parameters = json::object();
  for (const char* key : {"labels", "preprocessing", "weights"}) {
    if (const auto it = c.raw.find(key); it != c.raw.end() && !it->is_null()) {
      parameters[key] = {{"string_value", it->is_string() ? it->get<std::string>() : it->dump()}};
    }
  }
  // Which artifact answers (format, device, precision, layout, conversion at load): docs/variants.md.
  parameters["variant"] = {{"string_value", model.variant().describe()}};
  doc["parameters"] = parameters;
  return doc;
}

json Service::statistics(std::optional<std::string_view> name, std::optional<std::string_view> version) const {
  json list = json::array();
  if (name) {
    list.push_back(model_statistics(*find_model(*name, version)));
  } else {
    for (const auto& m : repository().models()) list.push_back(model_statistics(*m));
  }
  return {{"model_stats", list}};
}

json Service::repository_index(bool ready_only) const {
  const auto& repo = repository();
  json list = json::array();
  for (const auto& m : repo.models()) {
    const bool ready = m->ready() && !draining();
    if (ready_only && !ready) continue;
    list.push_back({{"name", m->name()}, {"version", m->version()}, {"state", ready ? "READY" : "UNAVAILABLE"},
                    {"reason", ready ? "" : "shutting down"}});
  }
  if (!ready_only) {
    for (const auto& f : repo.failures()) {
      list.push_back({{"name", f.name}, {"version", f.version}, {"state", "UNAVAILABLE"}, {"reason", f.reason}});
    }
  }
  return list;
}

std::string Service::metrics(const http::Counters& http, const grpc_front::Counters* grpc) const {
  const auto* repo = repository_.load(std::memory_order_acquire);
  static const std::vector<ModelFailure> kNone;
  return render_metrics(repo ? repo->models() : std::vector<std::shared_ptr<Model>>{}, repo ? repo->failures() : kNone,
                        http, grpc, readiness().ready);
}

}  // namespace torchship::serve

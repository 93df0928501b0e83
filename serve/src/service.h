#pragma once
// The Open Inference Protocol's semantics, once, for both front ends (HTTP and gRPC): which
// model a name means, readiness, metadata, the model_configuration and statistics extensions,
// the repository index, and asynchronous inference. Documents are built as JSON in Triton's
// form; the HTTP front end sends them as they are, the gRPC one parses them into its messages.
// No sockets and no wire formats here.
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "grpc/counters.h"
#include "http/counters.h"
#include "torchship/repository.h"
#include "worker_pool.h"

namespace torchship::serve {

// A stage's duration for the per-stage statistics (decode, encode), the same way on both front ends.
inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

struct ServiceOptions {
  std::string version;                     // reported by server metadata
  bool ready_with_failed_models = false;   // server readiness ignores models that failed to load
  int worker_threads = 0;                  // decode/encode pool; 0: one per core
  size_t inline_decode_bytes = 16 << 10;   // bodies up to this size are decoded on the I/O thread
  ImageLimits image_limits;                // encoded images: checked from the header, before decoding
  int jpeg_quality = 90;                   // image answers encoded as JPEG
};

struct Readiness {
  bool ready = false;
  std::string reason;  // why not
};

class Service {
 public:
  explicit Service(ServiceOptions options);

  // Publishes the loaded repository; it must outlive the service's use. Until then: live, not ready.
  void set_repository(const ModelRepository* repository);
  void begin_drain() { draining_.store(true); }
  bool draining() const { return draining_.load(std::memory_order_relaxed); }

  Readiness readiness() const;
  const std::string& server_metadata_json() const { return server_metadata_; }
  nlohmann::json server_metadata() const;

  // Throws NotFoundError naming what exists, InvalidInputError for a malformed name or version,
  // UnavailableError with the reason for a model that failed to load.
  std::shared_ptr<Model> find_model(std::string_view name, std::optional<std::string_view> version) const;
  // The one model served, for routes that name none (the book's PUT /image); NotFoundError otherwise.
  std::shared_ptr<Model> sole_model() const;
  // Throws like find_model, and UnavailableError when the model is not ready.
  std::shared_ptr<Model> ready_model(std::string_view name, std::optional<std::string_view> version) const;

  nlohmann::json model_metadata(const Model& model) const;
  nlohmann::json model_config(const Model& model) const;  // Triton's ModelConfig in JSON
  // {"model_stats": [...]}: one model (name set) or all; Triton's ModelStatisticsResponse in JSON.
  nlohmann::json statistics(std::optional<std::string_view> name, std::optional<std::string_view> version) const;
  // [{"name", "version", "state", "reason"}], loaded and failed models; ready_only: only READY ones.
  nlohmann::json repository_index(bool ready_only) const;
  std::string metrics(const http::Counters& http, const grpc_front::Counters* grpc) const;

  // Runs `task` on the worker pool (inline once the pool has stopped).
  void post(std::function<void()> task);
  // Joins the worker pool after what it holds has run; at shutdown, after the models drained.
  void stop_workers();
  const ServiceOptions& options() const { return options_; }

 private:
  const ModelRepository& repository() const;

  ServiceOptions options_;
  std::string server_metadata_;
  std::atomic<const ModelRepository*> repository_{nullptr};
  std::map<std::string, std::shared_ptr<Model>, std::less<>> models_;  // filled by set_repository()
  std::atomic<bool> draining_{false};
  std::mutex workers_mutex_;
  std::unique_ptr<WorkerPool> workers_;
};

// Open Inference Protocol datatype name -> Triton's ModelConfig DataType ("FP32" -> "TYPE_FP32").
std::string config_data_type(torch::ScalarType dtype);

}  // namespace torchship::serve

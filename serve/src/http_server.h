#pragma once
// The HTTP face of the runtime: Open Inference Protocol (KServe v2) routes,
// health and Prometheus metrics over cpp-httplib. It holds no model logic:
// every inference goes through Model::infer (the model's dynamic batcher), and
// the core's typed errors become HTTP statuses in one place.
#include <cstddef>
#include <memory>
#include <string>

#include "protocol.h"
#include "torchship/repository.h"

namespace torchship::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: any free port
  // cpp-httplib gives each connection a thread for its whole keep-alive life:
  // 64 concurrent keep-alive clients plus room for probes and scrapes.
  int threads = 72;
  size_t max_body_bytes = size_t{64} << 20;
  size_t keep_alive_max_count = 100000;  // requests per connection before the server closes it
  int keep_alive_timeout_seconds = 5;    // an idle connection is closed after this
  ParseLimits limits;
  std::string version;  // reported by GET /v2
};

class HttpServer {
 public:
  explicit HttpServer(ServerOptions options);
  ~HttpServer();  // stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds (port 0: any free port) and serves on a background thread; returns
  // the bound port. Until set_repository() the server is live but not ready.
  // Throws std::runtime_error when the address cannot be bound.
  int start();

  // Publishes the loaded repository: model routes open and readiness turns
  // true. The repository must outlive stop().
  void set_repository(const ModelRepository* repository);

  // Readiness turns false and every response asks its client to close the
  // connection; requests keep being answered.
  void begin_drain();

  // Stops accepting connections, finishes the requests in flight, joins the
  // listener and its connection threads. Idempotent.
  void stop();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace torchship::serve

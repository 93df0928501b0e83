#pragma once
// The Open Inference Protocol (KServe v2) over gRPC: inference.GRPCInferenceService, wire-compatible
// with tritonclient. A thin codec over Service, like the HTTP front end: errors go through
// classify() (status.h), inference finishes asynchronously from the batcher's callback.
// gRPC and protobuf stay behind this header (pimpl): main.cpp never sees them.
#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "grpc/counters.h"

namespace torchship::serve {
class Service;
}

namespace torchship::serve::grpc_front {

class Server {
 public:
  // `max_message_bytes`: the largest request (and response) message; gRPC's default is 4 MiB.
  // `counters` count every finished call by status code (for /metrics); they must outlive the server.
  Server(Service& service, std::string host, int port, Counters& counters, size_t max_message_bytes = size_t{64} << 20);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts serving; returns the bound port (`port` 0: any free one). Throws
  // std::runtime_error naming the address when it cannot bind.
  int start();
  // Stops accepting calls, lets the ones in flight finish until `deadline` (then cancels them),
  // and waits for them. Idempotent.
  void shutdown(std::chrono::steady_clock::time_point deadline);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace torchship::serve::grpc_front

#pragma once
// The Open Inference Protocol over HTTP: routes a transport request to the Service and renders
// the answer (JSON, or binary tensor data). Cheap routes answer on the I/O thread; inference
// bodies larger than --inline-decode-bytes, or compressed, are decoded on the worker pool, and
// the model runs on its batcher's workers: an I/O thread never waits for a model.
#include "http/server.h"
#include "protocol.h"
#include "service.h"

namespace torchship::serve {

class HttpApi final : public http::Handler {
 public:
  // `grpc_counters`: the gRPC front end's, for /metrics; nullptr when there is none.
  // `io_threads`: the transport's (http::Server::io_threads).
  HttpApi(Service& service, const http::Counters& counters, ParseLimits limits, size_t max_body_bytes, int io_threads,
          const grpc_front::Counters* grpc_counters = nullptr)
      : service_(service),
        counters_(counters),
        grpc_counters_(grpc_counters),
        limits_(limits),
        max_body_bytes_(max_body_bytes),
        rounds_(static_cast<size_t>(io_threads)) {}

  void handle(http::Request request, http::Reply reply) override;
  // Submits the inference requests this I/O thread decoded in its round, one group per model.
  void end_round(int io_thread) override;
  std::string_view allowed_methods(std::string_view path) const override;

 private:
  void infer(http::Request request, http::Reply reply, std::shared_ptr<Model> model);
  // On an I/O thread (`in_round`) the request waits in its thread's round, else it is submitted at once.
  void decode_and_submit(http::Request& request, const http::Reply& reply, const std::shared_ptr<Model>& model,
                         bool in_round);
  void image(http::Request request, http::Reply reply, std::shared_ptr<Model> model);

  Service& service_;
  const http::Counters& counters_;
  const grpc_front::Counters* grpc_counters_;
  const ParseLimits limits_;
  const size_t max_body_bytes_;

  struct Pending {
    std::shared_ptr<Model> model;
    DynamicBatcher::Submission submission;
  };
  // Inference requests decoded on I/O thread i since its round began; only that thread touches rounds_[i].
  std::vector<std::vector<Pending>> rounds_;
};

// The binary tensor data extension's Inference-Header-Content-Length value; throws InvalidInputError.
size_t parse_header_length(std::string_view value);

// The error answer for an exception, through status.h's one table.
http::Response error_response(std::exception_ptr error, std::string_view method, std::string_view path);

}  // namespace torchship::serve

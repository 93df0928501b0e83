#pragma once
// Every flag of torchship-server, declared once: the struct holds the values (with their safe
// defaults) and add_flags() names them for the command line. main() hands the parts to the
// transport, the service and the core.
#include <CLI/CLI.hpp>

#include <chrono>
#include <string>
#include <vector>

#include "http/server.h"
#include "protocol.h"
#include "service.h"

namespace torchship::serve {

struct Options {
  // What to serve.
  std::string repository;
  std::vector<std::string> models;
  bool strict = false;
  bool ready_with_failed_models = false;
  bool follow_symlinks = false;
  // How models run.
  std::string device = "auto";
  std::string format = "auto";
  int64_t max_batch_size = 0;
  int64_t max_queue_delay_us = -1;
  int64_t max_queue_size = 0;
  int instance_count = 0;
  int intra_op_threads = 0;
  std::string precision = "fp32";
  bool channels_last = false;
  std::vector<std::string> extra_libraries;
  bool cudnn_benchmark = false;
  bool allow_tf32 = false;
  // Front ends.
  http::ServerOptions http;
  std::string grpc_host = "127.0.0.1";
  int grpc_port = -1;  // -1: no gRPC front end
  int worker_threads = 0;
  size_t inline_decode_bytes = ServiceOptions{}.inline_decode_bytes;
  ParseLimits parse_limits;
  ImageLimits image_limits;
  int jpeg_quality = ServiceOptions{}.jpeg_quality;
  int64_t drain_timeout_s = 30;
  std::string log_level = "info";
};

inline void add_flags(CLI::App& app, Options& o) {
  using std::chrono::milliseconds;
  auto& l = o.http.limits;
  app.add_option("--model-repository", o.repository, "model repository directory (written by `torchship export`)")
      ->required()
      ->check(CLI::ExistingDirectory);
  app.add_option("--model", o.models, "load only this model (repeat for several); default: every model found")
      ->allow_extra_args(false);
  app.add_flag("--strict", o.strict, "exit with an error when any model fails to load (default: serve the others)");
  app.add_flag("--ready-with-failed-models", o.ready_with_failed_models,
               "report the server ready although some models failed to load (they stay not ready)");
  app.add_flag("--follow-symlinks", o.follow_symlinks,
               "serve model directories and artifacts whose real path leaves the repository");

  app.add_option("--device", o.device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  app.add_option("--format", o.format,
                 "artifact format to load: auto (TorchScript, else .pt2; docs/variants.md), torchscript or pt2")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "torchscript", "pt2"}));
  app.add_option("--max-batch-size", o.max_batch_size, "override config.json's max_batch_size")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  app.add_option("--max-queue-delay-us", o.max_queue_delay_us,
                 "override the dynamic batcher's max_queue_delay_microseconds")
      ->check(CLI::Range(int64_t{0}, int64_t{10'000'000}));
  app.add_option("--max-queue-size", o.max_queue_size, "override the queue bound (beyond it: 503 + Retry-After)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  app.add_option("--instance-count", o.instance_count,
                 "override the number of model instances (default: config.json's; a model measured small at "
                 "warm-up gets at least one per I/O thread)")
      ->check(CLI::Range(1, 64));
  app.add_option("--intra-op-threads", o.intra_op_threads,
                 "torch intra-op threads; 0: 1 on CUDA (the host only copies), torch's default on CPU")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  app.add_option("--precision", o.precision,
                 "the variant's compute precision: fp32, fp16, bf16 or int8 (an exported variant; a TorchScript fp32 "
                 "artifact is converted at load to fp16/bf16 when none is exported); requests and responses keep "
                 "the config's dtypes. 'exported' is the older name of fp32")
      ->capture_default_str()
      ->check(CLI::IsMember({"exported", "fp32", "fp16", "bf16", "int8"}));
  app.add_flag("--channels-last", o.channels_last,
               "the channels_last variant (4-D weights and activations in NHWC; converted at load for TorchScript)");
  app.add_option("--extra-library", o.extra_libraries,
                 "operator library (.so) to load before any model, for custom ops its artifacts call (repeat for "
                 "several); torchvision's ops are loaded automatically when torchvision is installed beside torch")
      ->allow_extra_args(false)
      ->check(CLI::ExistingFile);
  app.add_flag("--cudnn-benchmark", o.cudnn_benchmark,
               "let cuDNN time its algorithms per new input shape (faster steady state, slower first batches)");
  app.add_flag("--allow-tf32", o.allow_tf32, "TF32 for fp32 matmul/conv on Ampere+ (off: CUDA fp32 matches CPU)");

  app.add_option("--host", o.http.host, "HTTP address to bind; loopback unless you mean to expose the server")
      ->capture_default_str();
  app.add_option("--http-port", o.http.port, "HTTP port; 0 picks a free port (printed on stdout)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  app.add_option("--grpc-host", o.grpc_host, "gRPC address to bind")->capture_default_str();
  app.add_option("--grpc-port", o.grpc_port,
                 "gRPC port (KServe v2 GRPCInferenceService); 0 picks a free port (printed); -1: no gRPC")
      ->capture_default_str()
      ->check(CLI::Range(-1, 65535));
  app.add_option("--io-threads", o.http.io_threads, "HTTP I/O threads multiplexing every connection; 0: one per core")
      ->capture_default_str()
      ->check(CLI::Range(0, 256));
  app.add_option("--worker-threads", o.worker_threads,
                 "threads decoding large or compressed bodies and encoding large answers; 0: one per core")
      ->capture_default_str()
      ->check(CLI::Range(0, 256));
  app.add_option("--inline-decode-bytes", o.inline_decode_bytes,
                 "inference bodies up to this size are decoded on the I/O thread; larger ones on a worker")
      ->capture_default_str()
      ->check(CLI::Range(size_t{0}, size_t{1} << 24));

  app.add_option("--max-connections", l.max_connections,
                 "open HTTP connections; beyond: 503 and closed at once (also bounded by the open-files limit)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{1} << 20));
  app.add_option("--max-header-bytes", l.max_header_bytes, "request line and headers; beyond: 431 and closed")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1024}, size_t{1} << 24));
  app.add_option("--max-header-count", l.max_header_count, "header fields per request; beyond: 431 and closed")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{1} << 16));
  app.add_option("--max-body-bytes", l.max_body_bytes, "largest request body, after decompression; beyond: 413")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1024}, size_t{1} << 34));
  app.add_option_function<int64_t>(
         "--header-timeout-ms", [&l](int64_t v) { l.header_timeout = milliseconds(v); },
         "deadline from a request's first byte to the end of its headers; beyond: 408 and closed (default 10000)")
      ->check(CLI::Range(int64_t{1}, int64_t{3'600'000}));
  app.add_option("--min-body-bytes-per-second", l.min_body_bytes_per_second,
                 "slowest body accepted, after --header-timeout-ms of grace; slower: 408 and closed")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{1} << 34));
  app.add_option_function<int64_t>(
         "--keep-alive-timeout-ms", [&l](int64_t v) { l.keep_alive_timeout = milliseconds(v); },
         "an idle keep-alive connection is closed after this (default 60000)")
      ->check(CLI::Range(int64_t{1}, int64_t{86'400'000}));
  app.add_option_function<int64_t>(
         "--send-timeout-ms", [&l](int64_t v) { l.send_timeout = milliseconds(v); },
         "a client that does not read its answer within this is disconnected (default 30000)")
      ->check(CLI::Range(int64_t{1}, int64_t{3'600'000}));
  app.add_option("--max-pipelined-requests", l.max_pipelined_requests,
                 "requests parsed ahead and not yet answered, per connection; beyond: reading pauses")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{1024}));
  app.add_option("--max-image-pixels", o.image_limits.max_pixels,
                 "largest encoded image accepted, width x height, read from its header before decoding; beyond: 413")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 32));
  app.add_option("--max-image-side", o.image_limits.max_side,
                 "largest width or height of an encoded image, from its header; beyond: 413")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  app.add_option("--jpeg-quality", o.jpeg_quality, "quality of image answers sent as JPEG (image-to-image models)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  app.add_option("--drain-timeout-s", o.drain_timeout_s,
                 "on SIGTERM: how long requests in flight may take before every connection is closed")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{3600}));

  app.add_option("--log-level", o.log_level, "trace, debug, info (one access line per request), warning, error, off")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warning", "warn", "error", "critical", "off"}));
}

}  // namespace torchship::serve

// torchship-server: the Open Inference Protocol (KServe v2) over HTTP for a
// torchship model repository. This file owns the process: command line,
// logging, process-wide torch settings, signals, and the order of start-up and
// shutdown. Only here are exit codes chosen.
//
//   torchship-server --model-repository model_repository --http-port 0
//
// Start-up: bind, print "listening on port PORT (http://HOST:PORT)" on stdout, then load
// and warm up every model while /v2/health/live answers; /v2/health/ready turns
// 200 once all are loaded. SIGTERM/SIGINT: readiness turns 503, the listener
// closes, requests in flight finish, the batchers drain, exit 0.
#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>

#include <csignal>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "http_server.h"
#include "log.h"
#include "torchship/device.h"
#include "torchship/errors.h"
#include "torchship/repository.h"

#ifndef TORCHSHIP_MALLOC
#define TORCHSHIP_MALLOC "system malloc"
#endif

namespace {

using namespace torchship;

struct Options {
  std::string repository;
  std::vector<std::string> models;
  std::string device = "auto";
  std::string host = "127.0.0.1";
  int port = 8000;
  int threads = serve::ServerOptions{}.threads;
  std::string format = "auto";
  int64_t max_batch_size = 0;
  int64_t max_queue_delay_us = 0;
  int64_t max_queue_size = 0;
  int instance_count = 0;
  size_t max_body_bytes = serve::ServerOptions{}.max_body_bytes;
  std::string log_level = "info";
  int intra_op_threads = 0;
  std::string precision = "exported";
  bool channels_last = false;
  bool cudnn_benchmark = false;
  bool allow_tf32 = false;
};

std::string url_host(const std::string& host) { return host.find(':') != std::string::npos ? "[" + host + "]" : host; }

int run(const Options& o, sigset_t signals) {
  const auto device = parse_device(o.device);
  ProcessSettings settings;
  settings.intra_op_threads = server_intra_op_threads(o.intra_op_threads, device);
  settings.cudnn_benchmark = o.cudnn_benchmark;
  settings.allow_tf32 = o.allow_tf32;
  apply_process_settings(settings);  // once, before any model loads

  RepositoryOptions repo_options;
  repo_options.model.device = device;
  repo_options.model.format = o.format;
  repo_options.model.precision = parse_precision(o.precision);
  repo_options.model.channels_last = o.channels_last;
  repo_options.only_models = o.models;
  if (o.max_batch_size > 0) repo_options.model.max_batch_size = o.max_batch_size;
  if (o.max_queue_delay_us >= 0) repo_options.model.max_queue_delay = std::chrono::microseconds(o.max_queue_delay_us);
  if (o.max_queue_size > 0) repo_options.model.max_queue_size = o.max_queue_size;
  if (o.instance_count > 0) repo_options.model.instance_count = o.instance_count;

  serve::ServerOptions server_options;
  server_options.host = o.host;
  server_options.port = o.port;
  server_options.threads = o.threads;
  server_options.max_body_bytes = o.max_body_bytes;
  server_options.version = TORCHSHIP_VERSION;

  // Declared in reverse order of shutdown: the loader thread joins first, then
  // the server stops, then the models drain and unload.
  std::unique_ptr<ModelRepository> repository;
  std::exception_ptr load_error;
  serve::HttpServer server(server_options);
  const int port = server.start();
  serve::log::info("torch intra-op threads: " + std::to_string(at::get_num_threads()) +
                   ", allocator: " TORCHSHIP_MALLOC);
  std::cout << "torchship-server listening on port " << port << " (http://" << url_host(o.host) << ":" << port << ")"
            << std::endl;

  std::jthread loader([&] {
    try {
      const auto started = std::chrono::steady_clock::now();
      repository = std::make_unique<ModelRepository>(o.repository, repo_options);
      std::string names;
      for (const auto& m : repository->models()) {
        names += (names.empty() ? "" : ", ") + m->name() + " v" + m->version() + " (" + m->format() + ")";
      }
      server.set_repository(repository.get());
      const auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      serve::log::info("ready: " + names + " on " + device.str() + ", precision " + o.precision +
                       (o.channels_last ? ", channels_last" : "") + ", in " + std::to_string(seconds) + " s");
    } catch (...) {
      load_error = std::current_exception();
      kill(getpid(), SIGUSR1);  // wakes the main thread's sigwait
    }
  });

  int signal = 0;
  sigwait(&signals, &signal);
  if (signal == SIGUSR1) {
    loader.join();
    server.stop();
    std::rethrow_exception(load_error);
  }
  serve::log::info(std::string(strsignal(signal)) + ": draining (no new connections; requests in flight finish)");
  server.begin_drain();
  server.stop();
  loader.join();  // a load still in progress cannot be interrupted; let it finish
  if (repository) repository->shutdown();
  serve::log::info("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Signals are taken by sigwait() on the main thread: block them before any
  // thread starts (torch's pools, the logger, httplib's), so all inherit the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);  // a client that hangs up is an error on its socket, not the process's end

  Options o;
  CLI::App app{"torchship-server: the Open Inference Protocol (KServe v2) over HTTP for a torchship model repository"};
  app.add_option("--model-repository", o.repository, "model repository directory (written by `torchship export`)")
      ->required()
      ->check(CLI::ExistingDirectory);
  app.add_option("--model", o.models, "load only this model (repeat for several); default: every model found")
      ->allow_extra_args(false);
  app.add_option("--device", o.device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  app.add_option("--http-port", o.port, "port to listen on; 0 picks a free port (printed on stdout)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  app.add_option("--host", o.host, "address to bind; loopback unless you mean to expose the server")
      ->capture_default_str();
  app.add_option("--threads", o.threads, "HTTP connection threads; each keep-alive connection holds one")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("--format", o.format, "artifact to load: auto (TorchScript, else .pt2), torchscript or pt2")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "torchscript", "pt2"}));
  app.add_option("--max-batch-size", o.max_batch_size, "override config.json's max_batch_size")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  o.max_queue_delay_us = -1;
  app.add_option("--max-queue-delay-us", o.max_queue_delay_us,
                 "override the dynamic batcher's max_queue_delay_microseconds")
      ->check(CLI::Range(int64_t{0}, int64_t{10'000'000}));
  app.add_option("--max-queue-size", o.max_queue_size, "override the queue bound (beyond it: 503 + Retry-After)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  app.add_option("--instance-count", o.instance_count, "override the number of model instances")
      ->check(CLI::Range(1, 64));
  app.add_option("--max-body-bytes", o.max_body_bytes, "largest request body accepted (beyond it: 413)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1024}, size_t{1} << 34));
  app.add_option("--log-level", o.log_level, "trace, debug, info (one access line per request), warning, error, off")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warning", "warn", "error", "critical", "off"}));
  app.add_option("--intra-op-threads", o.intra_op_threads, "torch intra-op threads; 0: 1 on CUDA (the host only copies), torch's default on CPU")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  app.add_option("--precision", o.precision,
                 "run floating math in fp16 or bf16 (TorchScript only); requests and responses keep the config's "
                 "dtypes")
      ->capture_default_str()
      ->check(CLI::IsMember({"exported", "fp32", "fp16", "bf16"}));
  app.add_flag("--channels-last", o.channels_last, "4-D weights and inputs in NHWC, cuDNN's fast layout");
  app.add_flag("--cudnn-benchmark", o.cudnn_benchmark,
               "let cuDNN time its algorithms per new input shape (faster steady state, slower first batches)");
  app.add_flag("--allow-tf32", o.allow_tf32, "TF32 for fp32 matmul/conv on Ampere+ (off: CUDA fp32 matches CPU)");
  CLI11_PARSE(app, argc, argv);

  serve::log::setup(o.log_level);
  int code = 1;
  try {
    code = run(o, signals);
  } catch (const InvalidInputError& e) {  // a bad --device, say
    serve::log::critical(e.what());
    code = 2;
  } catch (const std::exception& e) {
    serve::log::critical(e.what());
  }
  serve::log::shutdown();
  return code;
}

// torchship-server: the Open Inference Protocol (KServe v2) over HTTP for a
// torchship model repository. This file owns the process: command line,
// logging, process-wide torch settings, signals, and the order of start-up and
// shutdown. Only here are exit codes chosen.
//
//   torchship-server --model-repository model_repository --http-port 0
//
// Start-up: bind, print "listening on port PORT (http://HOST:PORT)" on stdout (with --grpc-port,
// then "gRPC listening on port PORT (HOST:PORT)"), then load
// and warm up every model while /v2/health/live answers; /v2/health/ready turns
// 200 once all are loaded (a model that fails is reported and the others serve;
// --strict exits instead). SIGTERM/SIGINT: readiness turns 503, the listener
// closes, idle connections close, requests in flight finish, every connection is
// closed by --drain-timeout-s, the batchers drain, exit 0.
#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>

#include <csignal>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

#include "grpc/server.h"
#include "http/server.h"
#include "http_api.h"
#include "options.h"
#include "service.h"
#include "log.h"
#include "torchship/device.h"
#include "torchship/errors.h"
#include "torchship/op_libraries.h"
#include "torchship/repository.h"
#include "torchship/variants.h"

#ifndef TORCHSHIP_MALLOC
#define TORCHSHIP_MALLOC "system malloc"
#endif

namespace {

using namespace torchship;
using Clock = std::chrono::steady_clock;

std::string url_host(const std::string& host) { return host.find(':') != std::string::npos ? "[" + host + "]" : host; }

// Thousands of connections need thousands of descriptors: take what the hard limit allows, and
// keep --max-connections below it (with room for model files, logs and gRPC).
void raise_open_files_limit(serve::Options& o) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
  }
  constexpr rlim_t kReserve = 128;
  auto& max = o.http.limits.max_connections;
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur > kReserve && max > limit.rlim_cur - kReserve) {
    max = static_cast<size_t>(limit.rlim_cur - kReserve);
    serve::log::warn("--max-connections lowered to " + std::to_string(max) + ": the open-files limit is " +
                     std::to_string(limit.rlim_cur));
  }
}

int run(serve::Options& o, sigset_t signals) {
  const auto device = parse_device(o.device);
  ProcessSettings settings;
  settings.intra_op_threads = server_intra_op_threads(o.intra_op_threads, device);
  settings.cudnn_benchmark = o.cudnn_benchmark;
  settings.allow_tf32 = o.allow_tf32;
  apply_process_settings(settings);  // once, before any model loads
  raise_open_files_limit(o);
  // Operator libraries before any model: artifacts call their ops by name. torchvision's are loaded by
  // the first model that calls one (Model's constructor).
  for (const auto& library : o.extra_libraries) load_op_library(library);

  RepositoryOptions repo_options;
  repo_options.model.device = device;
  repo_options.model.format = o.format;
  repo_options.model.precision = parse_precision(o.precision);
  repo_options.model.channels_last = o.channels_last;
  repo_options.only_models = o.models;
  repo_options.strict = o.strict;
  repo_options.follow_symlinks = o.follow_symlinks;
  if (o.max_batch_size > 0) repo_options.model.max_batch_size = o.max_batch_size;
  if (o.max_queue_delay_us >= 0) repo_options.model.max_queue_delay = std::chrono::microseconds(o.max_queue_delay_us);
  if (o.max_queue_size > 0) repo_options.model.max_queue_size = o.max_queue_size;
  if (o.instance_count > 0) repo_options.model.instance_count = o.instance_count;
  repo_options.model.caller_threads = serve::http::Server::io_threads(o.http);

  serve::ServiceOptions service_options;
  service_options.version = TORCHSHIP_VERSION;
  service_options.ready_with_failed_models = o.ready_with_failed_models;
  service_options.worker_threads = o.worker_threads;
  service_options.inline_decode_bytes = o.inline_decode_bytes;
  service_options.image_limits = o.image_limits;
  service_options.jpeg_quality = o.jpeg_quality;

  // Declared in reverse order of shutdown: the loader thread joins first, then the front ends
  // stop, then the models drain and unload; the service (its workers) and counters go last.
  serve::http::Counters counters;
  serve::grpc_front::Counters grpc_counters;
  serve::Service service(service_options);
  std::unique_ptr<ModelRepository> repository;
  std::exception_ptr load_error;
  serve::HttpApi api(service, counters, o.parse_limits, o.http.limits.max_body_bytes,
                     serve::http::Server::io_threads(o.http), o.grpc_port >= 0 ? &grpc_counters : nullptr);
  serve::http::Server http(o.http, api, counters);
  const int port = http.start();
  serve::log::info("torch intra-op threads: " + std::to_string(at::get_num_threads()) +
                   ", allocator: " TORCHSHIP_MALLOC);
  std::cout << "torchship-server listening on port " << port << " (http://" << url_host(o.http.host) << ":" << port
            << ")" << std::endl;
  std::unique_ptr<serve::grpc_front::Server> grpc;
  if (o.grpc_port >= 0) {
    grpc = std::make_unique<serve::grpc_front::Server>(service, o.grpc_host, o.grpc_port, grpc_counters,
                                                       o.http.limits.max_body_bytes);
    int grpc_port = 0;
    try {
      grpc_port = grpc->start();
    } catch (...) {
      http.stop(Clock::now());
      throw;
    }
    std::cout << "torchship-server gRPC listening on port " << grpc_port << " (" << url_host(o.grpc_host) << ":"
              << grpc_port << ")" << std::endl;
  }

  std::jthread loader([&] {
    try {
      const auto started = Clock::now();
      repository = std::make_unique<ModelRepository>(o.repository, repo_options);
      std::string names;
      for (const auto& m : repository->models()) {
        names += (names.empty() ? "" : ", ") + m->name() + " v" + m->version() + " (" + m->variant().describe() + ")";
      }
      for (const auto& library : loaded_op_libraries()) serve::log::info("operator library: " + library);
      for (const auto& f : repository->failures()) {
        serve::log::error("model '" + f.name + "' is not available: " + f.reason);
      }
      service.set_repository(repository.get());
      const auto seconds = std::chrono::duration<double>(Clock::now() - started).count();
      serve::log::info("ready: " + (names.empty() ? std::string("no model") : names) + " on " + device.str() +
                       ", in " +
                       std::to_string(seconds) + " s" +
                       (repository->failures().empty()
                            ? std::string()
                            : "; " + std::to_string(repository->failures().size()) + " model(s) failed to load"));
    } catch (...) {
      load_error = std::current_exception();
      kill(getpid(), SIGUSR1);  // wakes the main thread's sigwait
    }
  });

  int signal = 0;
  sigwait(&signals, &signal);
  if (signal == SIGUSR1) {
    loader.join();
    http.stop(Clock::now());
    if (grpc) grpc->shutdown(Clock::now());
    service.stop_workers();
    std::rethrow_exception(load_error);
  }
  const auto deadline = Clock::now() + std::chrono::seconds(o.drain_timeout_s);
  serve::log::info(std::string(strsignal(signal)) + ": draining (no new connections; requests in flight finish; " +
                   "every connection closed within " + std::to_string(o.drain_timeout_s) + " s)");
  service.begin_drain();
  http.begin_drain();
  // No new gRPC calls; those in flight finish (the batchers still run) or are cancelled at the deadline.
  if (grpc) grpc->shutdown(deadline);
  http.stop(deadline);
  loader.join();  // a load still in progress cannot be interrupted; let it finish
  if (repository) repository->shutdown();
  service.stop_workers();
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

  serve::Options o;
  CLI::App app{"torchship-server: the Open Inference Protocol (KServe v2) over HTTP and gRPC for a torchship model "
               "repository"};
  serve::add_flags(app, o);
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

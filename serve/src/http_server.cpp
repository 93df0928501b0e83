#include "http_server.h"

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <strings.h>
#include <sys/socket.h>

#include <array>
#include <cstdio>
#include <map>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <thread>

#include "log.h"
#include "metrics.h"
#include "torchship/dtypes.h"
#include "torchship/errors.h"

namespace torchship::serve {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

constexpr const char* kJson = "application/json";
constexpr const char* kOctetStream = "application/octet-stream";
constexpr const char* kHeaderLength = "Inference-Header-Content-Length";
constexpr int kRetryAfterSeconds = 1;

// A connection is served by one thread from start to end, so the request's
// start time can wait here for the access log.
thread_local Clock::time_point t_request_started;
// The request's Content-Length, parsed once before routing (unset: none, or chunked).
thread_local std::optional<uint64_t> t_content_length;

// Statuses that are about HTTP itself rather than the model (405, 411, 413, 415).
class HttpError : public std::runtime_error {
 public:
  HttpError(int status, const std::string& message) : std::runtime_error(message), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

// Debian builds cpp-httplib 0.11 with CPPHTTPLIB_LISTEN_BACKLOG 5; with many
// clients connecting at once the kernel drops SYNs and they retry a second
// later. listen() again on the bound socket raises the backlog.
class Server final : public httplib::Server {
 public:
  void deepen_backlog() { ::listen(svr_sock_, SOMAXCONN); }
};

// {"error": "..."}; replaces invalid UTF-8 (a decoded path can hold any byte).
std::string error_body(const std::string& message) {
  return json{{"error", message}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

const char* reason_phrase(int status) {
  switch (status) {
    case 400: return "bad request";
    case 404: return "not found";
    case 405: return "method not allowed";
    case 408: return "request timeout";
    case 411: return "length required";
    case 413: return "request body too large";
    case 414: return "request URI too long";
    case 415: return "unsupported media type";
    case 416: return "range not satisfiable";
    case 431: return "request header fields too large";
    case 500: return "internal server error";
    case 503: return "service unavailable";
    default: return status < 500 ? "client error" : "server error";
  }
}

// Paths and other client text in the access log: no spaces, quotes or control bytes.
std::string log_safe(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (const char c : s.substr(0, 512)) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f || c == '"' || c == '\\' || c == '%') {
      out += '%';
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    } else {
      out += c;
    }
  }
  return out;
}

bool is_chunked(const httplib::Request& req) {
  const auto te = req.get_header_value("Transfer-Encoding");
  return te.size() == 7 && strncasecmp(te.c_str(), "chunked", 7) == 0;
}

enum class Endpoint { NotFound, ServerMetadata, Live, Ready, ModelMetadata, ModelReady, Infer, Metrics };

struct Route {
  Endpoint endpoint = Endpoint::NotFound;
  std::string_view model = {};
  std::optional<std::string_view> version = {};
};

// Splits the path by hand: no regex on the request path.
Route route(std::string_view path) {
  if (path.empty() || path.front() != '/') return {};
  path.remove_prefix(1);
  std::array<std::string_view, 7> seg;
  size_t n = 0;
  while (true) {
    if (n == seg.size()) return {};
    const auto slash = path.find('/');
    seg[n++] = path.substr(0, slash);
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  if (n == 1 && seg[0] == "metrics") return {Endpoint::Metrics};
  if (seg[0] != "v2") return {};
  if (n == 1) return {Endpoint::ServerMetadata};
  if (n == 3 && seg[1] == "health") {
    if (seg[2] == "live") return {Endpoint::Live};
    if (seg[2] == "ready") return {Endpoint::Ready};
    return {};
  }
  if (n < 3 || seg[1] != "models") return {};
  Route r;
  r.model = seg[2];
  size_t next = 3;
  if (n >= 5 && seg[3] == "versions") {
    r.version = seg[4];
    next = 5;
  }
  if (n == next) {
    r.endpoint = Endpoint::ModelMetadata;
  } else if (n == next + 1 && seg[next] == "ready") {
    r.endpoint = Endpoint::ModelReady;
  } else if (n == next + 1 && seg[next] == "infer") {
    r.endpoint = Endpoint::Infer;
  }
  return r;
}

const char* platform(const Model& model) {
  return model.format() == "pt2" ? "pytorch_aotinductor" : "pytorch_libtorch";
}

json tensor_metadata(const std::vector<TensorSpec>& specs) {
  json list = json::array();
  for (const auto& s : specs) list.push_back({{"name", s.name}, {"datatype", dtype_name(s.dtype)}, {"shape", s.shape}});
  return list;
}

}  // namespace

class HttpServer::Impl {
 public:
  explicit Impl(ServerOptions options) : options_(std::move(options)) {
    server_metadata_ =
        json{{"name", "torchship"}, {"version", options_.version}, {"extensions", {"binary_tensor_data"}}}.dump();
    configure();
  }

  int start() {
    int port = options_.port;
    if (port == 0) {
      port = server_.bind_to_any_port(options_.host);
    } else if (!server_.bind_to_port(options_.host, port)) {
      port = -1;
    }
    if (port < 0) {
      throw std::runtime_error("cannot listen on " + options_.host + ":" + std::to_string(options_.port) +
                               " (address in use, or not an address of this machine?)");
    }
    server_.deepen_backlog();
    listener_ = std::thread([this] {
      server_.listen_after_bind();
      {
        std::lock_guard lock(mutex_);
        listener_done_ = true;
      }
      listener_cv_.notify_all();
    });
    return port;
  }

  void stop() {
    std::unique_lock lock(mutex_);
    if (!listener_.joinable()) return;
    // stop() is a no-op until listen_after_bind() is running; a signal can come
    // in just after start(), so wait for the listener to be up (or gone).
    while (!listener_done_) {
      if (server_.is_running()) {
        server_.stop();
        break;
      }
      listener_cv_.wait_for(lock, std::chrono::milliseconds(1));
    }
    lock.unlock();
    listener_.join();  // returns once every connection thread has finished its request
  }

  void set_repository(const ModelRepository* repository) {
    // Built before the pointer is published; read only after loading it (acquire).
    for (const auto& model : repository->models()) models_.emplace(model->name(), model);
    repository_.store(repository, std::memory_order_release);
  }
  void begin_drain() { draining_.store(true); }

  bool ready() const {
    const auto* repo = repository_.load(std::memory_order_acquire);
    return repo != nullptr && !draining_.load() && repo->ready();
  }

 private:
  void configure() {
    const auto threads = static_cast<size_t>(options_.threads);
    server_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    server_.set_keep_alive_max_count(options_.keep_alive_max_count);
    server_.set_keep_alive_timeout(options_.keep_alive_timeout_seconds);
    server_.set_payload_max_length(options_.max_body_bytes);
    server_.set_tcp_nodelay(true);  // small responses on keep-alive connections must not wait for Nagle
    // SO_REUSEADDR but not httplib's default SO_REUSEPORT: a second server on a
    // busy port must fail, not silently share it.
    server_.set_socket_options([](socket_t sock) {
      int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    });

    // Requests without a body (GET, HEAD, and anything without Content-Length
    // or chunked encoding) are answered here, before httplib's regex routing.
    server_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      t_request_started = Clock::now();
      try {
        t_content_length = checked_content_length(req);
      } catch (...) {
        // Refused before its body is read: the connection is out of step, so it ends here.
        respond_error(req, res, std::current_exception());
        res.set_header("Connection", "close");
        return httplib::Server::HandlerResponse::Handled;
      }
      if (req.method == "GET" || req.method == "HEAD" || req.method == "OPTIONS" ||
          (!t_content_length && !is_chunked(req))) {
        dispatch(req, res, {});
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    // Requests with a body: read it here, bounded by max_body_bytes.
    const auto with_body = [this](const httplib::Request& req, httplib::Response& res,
                                  const httplib::ContentReader& reader) {
      std::string body;
      try {
        body = read_body(req, res, reader);
      } catch (...) {
        respond_error(req, res, std::current_exception());
        return;
      }
      dispatch(req, res, body);
    };
    server_.Post(".*", with_body);
    server_.Put(".*", with_body);
    server_.Patch(".*", with_body);
    server_.Delete(".*", with_body);

    // Errors httplib answers by itself (malformed HTTP, URI too long, ...) get a JSON body too.
    server_.set_error_handler(httplib::Server::HandlerWithResponse(
        [](const httplib::Request&, httplib::Response& res) {
          if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
          try {
            res.set_content(error_body(reason_phrase(res.status)), kJson);
          } catch (...) {
            return httplib::Server::HandlerResponse::Unhandled;  // the status alone still goes out
          }
          return httplib::Server::HandlerResponse::Handled;
        }));
    // Handlers catch everything themselves; this is the net below them.
    server_.set_exception_handler([this](const httplib::Request& req, httplib::Response& res, std::exception_ptr e) {
      respond_error(req, res, e);
    });
    server_.set_logger([this](const httplib::Request& req, const httplib::Response& res) { access_log(req, res); });
  }

  // A body over the limit is refused at once, not read and dropped (which would
  // also wait out the read timeout for a body that never comes).
  std::optional<uint64_t> checked_content_length(const httplib::Request& req) const {
    const auto header = req.headers.find("Content-Length");
    if (header == req.headers.end()) return std::nullopt;
    const auto length = parse_decimal(header->second);
    if (!length) throw InvalidInputError("invalid Content-Length " + echo(header->second));
    if (*length > options_.max_body_bytes) {
      throw HttpError(413, "the request body (" + std::to_string(*length) + " bytes) exceeds --max-body-bytes (" +
                               std::to_string(options_.max_body_bytes) + " bytes)");
    }
    return length;
  }

  std::string read_body(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
    const size_t max = options_.max_body_bytes;
    std::string body;
    if (t_content_length) body.reserve(std::min<size_t>(*t_content_length, max));
    bool too_large = false;
    // Past the limit, keep reading and dropping, so the connection stays in step.
    const auto receive = [&](const char* data, size_t n) {
      if (!too_large && n <= max - body.size()) {
        body.append(data, n);
      } else if (!too_large) {
        too_large = true;
        std::string().swap(body);
      }
      return true;
    };
    const auto over_limit = [max] {
      return HttpError(413, "the request body exceeds --max-body-bytes (" + std::to_string(max) + " bytes)");
    };
    if (req.is_multipart_form_data()) {
      reader([](const httplib::MultipartFormData&) { return true; }, receive);
      if (res.status == 413 || too_large) throw over_limit();
      throw HttpError(415, "multipart/form-data is not supported; send a JSON inference request "
                           "(application/json) or binary tensor data (application/octet-stream)");
    }
    const bool complete = reader(receive);
    if (res.status == 413 || too_large) throw over_limit();
    if (!complete) throw InvalidInputError("could not read the request body (shorter than its Content-Length?)");
    return body;
  }

  void dispatch(const httplib::Request& req, httplib::Response& res, std::string_view body) {
    try {
      const Route r = route(req.path);
      if (r.endpoint == Endpoint::NotFound) {
        throw NotFoundError("no route for " + echo(req.path) +
                            " (routes: /v2, /v2/health/live, /v2/health/ready, /v2/models/{model}[/versions/{version}]"
                            "[/ready | /infer], /metrics)");
      }
      const bool get = req.method == "GET" || req.method == "HEAD";
      if (r.endpoint == Endpoint::Infer ? req.method != "POST" : !get) {
        res.set_header("Allow", r.endpoint == Endpoint::Infer ? "POST" : "GET, HEAD");
        throw HttpError(405, "method " + echo(req.method) + " is not allowed on " + echo(req.path));
      }
      switch (r.endpoint) {
        case Endpoint::ServerMetadata:
          res.set_content(server_metadata_, kJson);
          break;
        case Endpoint::Live:
          res.set_content(R"({"live":true})", kJson);
          break;
        case Endpoint::Ready:
          server_ready(res);
          break;
        case Endpoint::ModelMetadata:
          model_metadata(res, r);
          break;
        case Endpoint::ModelReady:
          model_ready(res, r);
          break;
        case Endpoint::Infer:
          infer(req, res, r, body);
          break;
        case Endpoint::Metrics: {
          const auto* repo = repository_.load(std::memory_order_acquire);
          res.set_content(render_metrics(repo ? repo->models() : std::vector<std::shared_ptr<Model>>{}, http_, ready()),
                          "text/plain; version=0.0.4; charset=utf-8");
          break;
        }
        case Endpoint::NotFound:
          break;
      }
      if (res.status == -1) res.status = 200;
      if (draining_.load(std::memory_order_relaxed)) res.set_header("Connection", "close");
    } catch (...) {
      respond_error(req, res, std::current_exception());
    }
  }

  const ModelRepository& repository() const {
    const auto* repo = repository_.load(std::memory_order_acquire);
    if (repo == nullptr) throw UnavailableError("the server is still loading its models");
    return *repo;
  }

  std::shared_ptr<Model> find_model(const Route& r) const {
    const auto& repo = repository();
    // The hot path: a known name and no version, or the loaded one.
    if (const auto it = models_.find(r.model);
        it != models_.end() && (!r.version || *r.version == it->second->version())) {
      return it->second;
    }
    const std::string name(r.model);
    const std::string version(r.version.value_or(""));
    try {  // unknown, or malformed: the repository says which, naming what exists
      if (r.version && !valid_version(version)) {
        throw InvalidInputError("invalid model version " + echo(version) + ": expected digits");
      }
      return repo.get(name, version);
    } catch (const NotFoundError&) {
      // Only on the failure path: say why the name could not match.
      if (!valid_model_name(name)) {
        throw InvalidInputError("invalid model name " + echo(name) +
                                ": letters, digits, '_', '-' and '.', not starting with '.', at most 128 characters");
      }
      throw;
    }
  }

  void server_ready(httplib::Response& res) const {
    if (ready()) {
      res.set_content(R"({"ready":true})", kJson);
      return;
    }
    const auto* repo = repository_.load(std::memory_order_acquire);
    throw UnavailableError(repo == nullptr       ? "not ready: loading models"
                           : draining_.load()   ? "not ready: shutting down"
                                                : "not ready: a model is not ready");
  }

  void model_metadata(httplib::Response& res, const Route& r) const {
    const auto model = find_model(r);
    const json doc{{"name", model->name()},
                   {"versions", {model->version()}},
                   {"platform", platform(*model)},
                   {"inputs", tensor_metadata(model->config().inputs)},
                   {"outputs", tensor_metadata(model->config().outputs)}};
    res.set_content(doc.dump(), kJson);
  }

  void model_ready(httplib::Response& res, const Route& r) const {
    const auto model = find_model(r);
    if (!model->ready() || draining_.load()) {
      throw UnavailableError("model '" + model->name() + "' version " + model->version() + " is not ready");
    }
    res.set_content(json{{"name", model->name()}, {"ready", true}}.dump(), kJson);
  }

  void infer(const httplib::Request& req, httplib::Response& res, const Route& r, std::string_view body) {
    const auto model = find_model(r);
    // A full queue refuses before the body is decoded (a JSON image is ~10 ms of
    // parsing), leaving the cores to the requests already accepted.
    model->refuse_if_overloaded();
    InferRequest request;
    std::vector<OutputSelection> selection;
    try {
      std::optional<size_t> json_bytes;
      if (const auto header = req.headers.find(kHeaderLength); header != req.headers.end()) {
        json_bytes = parse_header_length(header->second);
      }
      request = parse_infer_request(body, json_bytes, options_.limits);
      selection = select_outputs(model->config(), request);
    } catch (const InvalidInputError&) {
      model->stats().failed_invalid.fetch_add(1, std::memory_order_relaxed);  // never reached Model::infer
      throw;
    }
    const auto outputs = model->infer(request.inputs);  // the dynamic batcher: queue, batch, run, split
    auto encoded = encode_infer_response(model->config(), model->version(), request.id, selection, outputs);
    if (encoded.json_bytes) {
      res.set_header(kHeaderLength, std::to_string(*encoded.json_bytes));
      res.set_header("Content-Type", kOctetStream);
    } else {
      res.set_header("Content-Type", kJson);
    }
    res.body = std::move(encoded.body);
    res.status = 200;
  }

  // The one place where errors become HTTP statuses.
  void respond_error(const httplib::Request& req, httplib::Response& res, std::exception_ptr error) noexcept {
    int status = 500;
    std::string message;
    try {
      std::rethrow_exception(error);
    } catch (const HttpError& e) {
      status = e.status();
      message = e.what();
    } catch (const InvalidInputError& e) {
      status = 400;
      message = e.what();
    } catch (const NotFoundError& e) {
      status = 404;
      message = e.what();
    } catch (const OverloadedError& e) {
      status = 503;
      message = e.what();
      res.set_header("Retry-After", std::to_string(kRetryAfterSeconds));
    } catch (const UnavailableError& e) {
      status = 503;
      message = e.what();
    } catch (const TimeoutError& e) {
      status = 503;
      message = e.what();
    } catch (const std::exception& e) {
      message = std::string("internal error: ") + e.what();
    } catch (...) {
      message = "internal error (unknown exception)";
    }
    try {
      if (status >= 500 && status != 503) {
        log::error(log_safe(req.method) + " " + log_safe(req.path) + ": " + message);
      }
      res.status = status;
      res.set_content(error_body(message), kJson);
      if (draining_.load(std::memory_order_relaxed)) res.set_header("Connection", "close");
    } catch (...) {
      res.status = 500;  // nothing sensible left to say
    }
  }

  // Called by httplib after each response, outside any handler's try: must not throw.
  void access_log(const httplib::Request& req, const httplib::Response& res) noexcept {
    http_.count(res.status);
    if (!log::enabled(log::Level::info)) return;
    try {
      write_access_line(req, res);
    } catch (...) {
      // A line lost to a failed allocation is not worth the request.
    }
  }

  void write_access_line(const httplib::Request& req, const httplib::Response& res) {
    const auto started = t_request_started;
    const auto content_length = t_content_length;
    // Cleared: httplib logs some requests it answers itself (414, a malformed request line) without
    // pre-routing, and they must not show the previous request's values.
    t_request_started = {};
    t_content_length.reset();
    const double ms =
        started == Clock::time_point{} ? 0.0 : std::chrono::duration<double, std::milli>(Clock::now() - started).count();
    const auto bytes_in =
        req.body.empty() && content_length ? *content_length : static_cast<uint64_t>(req.body.size());
    char duration[32];
    std::snprintf(duration, sizeof(duration), "%.3f", ms);
    log::info("access remote=" + req.remote_addr + ":" + std::to_string(req.remote_port) +
              " method=" + log_safe(req.method) + " path=" + log_safe(req.path) +
              " status=" + std::to_string(res.status) + " bytes_in=" + std::to_string(bytes_in) +
              " bytes_out=" + std::to_string(res.body.size()) + " duration_ms=" + duration);
  }

  const ServerOptions options_;
  std::string server_metadata_;
  Server server_;
  HttpCounters http_;
  std::atomic<const ModelRepository*> repository_{nullptr};
  std::map<std::string, std::shared_ptr<Model>, std::less<>> models_;  // by name, filled by set_repository()
  std::atomic<bool> draining_{false};

  std::mutex mutex_;
  std::condition_variable listener_cv_;
  bool listener_done_ = false;
  std::thread listener_;
};

HttpServer::HttpServer(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
HttpServer::~HttpServer() { stop(); }
int HttpServer::start() { return impl_->start(); }
void HttpServer::set_repository(const ModelRepository* repository) { impl_->set_repository(repository); }
void HttpServer::begin_drain() { impl_->begin_drain(); }
void HttpServer::stop() { impl_->stop(); }

}  // namespace torchship::serve

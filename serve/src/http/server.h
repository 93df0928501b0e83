#pragma once
// The HTTP/1.1 transport: Boost.Beast on Boost.Asio. A few I/O threads multiplex every
// connection; each connection is a session on its own strand that reads a request with the
// library's parser, hands it to a Handler and writes the answers in request order
// (pipelining). Every limit is enforced while reading, and every error that leaves the
// framing in doubt closes the connection. No model, torch or protocol knowledge here: the
// Handler decides what a request means.
#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "http/counters.h"

namespace torchship::serve::http {

struct Limits {
  size_t max_header_bytes = size_t{64} << 10;  // request line + headers; beyond: 431
  size_t max_header_count = 100;               // header fields; beyond: 431
  size_t max_body_bytes = size_t{64} << 20;    // beyond: 413
  std::chrono::milliseconds header_timeout{10'000};  // first byte to the end of the headers; beyond: 408
  size_t min_body_bytes_per_second = 64 << 10;       // slower bodies (after header_timeout of grace): 408
  std::chrono::milliseconds keep_alive_timeout{60'000};  // idle between requests, then closed
  std::chrono::milliseconds send_timeout{30'000};        // writing one response; then closed
  size_t max_connections = 10'000;         // beyond: 503 and closed at once
  size_t max_pipelined_requests = 16;      // parsed and unanswered per connection; beyond: reading pauses
};

using Headers = std::vector<std::pair<std::string, std::string>>;

// Case-insensitive lookup; "" when absent.
std::string_view header(const Headers& headers, std::string_view name);

struct Request {
  std::string method;
  std::string path;   // origin form, without the query (an absolute-form target is reduced to it)
  std::string query;  // after '?', undecoded
  Headers headers;
  std::string body;   // as received: Content-Encoding is the handler's to undo
  // Set when the connection ends before the answer is written (the client hung up).
  std::shared_ptr<const std::atomic<bool>> gone;
  int io_thread = 0;  // the I/O thread handle() runs on, 0 .. io threads - 1 (see Handler::end_round)
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  Headers headers;  // extra ones (Retry-After, Content-Encoding, ...)
};

// Called exactly once per request, from any thread.
using Reply = std::function<void(Response)>;

class Handler {
 public:
  virtual ~Handler() = default;
  // Runs on an I/O thread: must not block or do heavy work there (post it elsewhere).
  virtual void handle(Request request, Reply reply) = 0;
  // Called on I/O thread `io_thread` once the requests that one poll of its sockets found ready have all
  // been handed to handle(), before it polls again: work those requests left here goes on together (the
  // model runs them as one batch, docs/architecture.md).
  virtual void end_round(int io_thread) { (void)io_thread; }
  // The methods `path` takes ("GET, HEAD"), asked once the headers are in, so a request with any
  // other method is refused with 405 before its body is read. "": let handle() decide (404).
  virtual std::string_view allowed_methods(std::string_view path) const = 0;
};

// Methods a request may use at all; others get 405 before their body is read.
inline constexpr std::string_view kAllowedMethods = "GET, HEAD, POST";

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: any free port
  int io_threads = 0;  // 0: one per core
  Limits limits;
};

class Server {
 public:
  Server(ServerOptions options, Handler& handler, Counters& counters);
  ~Server();  // stop(now)
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The I/O threads' count: options.io_threads, or one per core.
  static int io_threads(const ServerOptions& options);

  // Binds and starts the I/O threads; returns the bound port. Throws std::runtime_error naming
  // the address when it cannot be bound.
  int start();

  // Stops accepting; idle keep-alive connections close at once, every later answer carries
  // Connection: close, requests being received or answered go on.
  void begin_drain();

  // Waits until every connection has ended or `deadline` passes, then closes what is left and
  // joins the I/O threads. Idempotent.
  void stop(std::chrono::steady_clock::time_point deadline);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace torchship::serve::http

#include "http/server.h"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <list>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <utility>

#include "http/content_coding.h"
#include "http/text.h"
#include "log.h"

namespace torchship::serve::http {
namespace {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr size_t kReadChunk = 64 << 10;
// After an error answer, how long a connection may keep sending what we will not read before it
// is closed (so the client sees the answer instead of a reset).
constexpr auto kLingerTime = std::chrono::seconds(2);
constexpr size_t kLingerMaxBytes = 1 << 20;  // and at most this much of it: then it is reset
// Connections being refused (503) at once; past this, new ones over the cap are closed unanswered.
constexpr int kMaxRefusing = 256;

// Paths and other client text in the access log: no spaces, quotes or control bytes.
std::string log_safe(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
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

// "http://host:port/v2/x?y" -> "/v2/x?y" (RFC 9112 3.2.2: servers accept the absolute form).
std::string_view origin_form(std::string_view target) {
  for (const std::string_view scheme : {"http://", "https://"}) {
    if (target.size() >= scheme.size() && iequals(target.substr(0, scheme.size()), scheme)) {
      const auto slash = target.find('/', scheme.size());
      return slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
    }
  }
  return target;
}

// RFC 3986 2.1 percent-decoding of the path; nullopt for a malformed escape.
std::optional<std::string> percent_decode(std::string_view s) {
  const auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    const int hi = i + 1 < s.size() ? hex(s[i + 1]) : -1;
    const int lo = i + 2 < s.size() ? hex(s[i + 2]) : -1;
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

// "GET, HEAD" lists "HEAD".
bool method_listed(std::string_view list, std::string_view method) {
  while (!list.empty()) {
    const auto comma = list.find(',');
    auto item = list.substr(0, comma);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    if (item == method) return true;
    list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
  }
  return false;
}

bool method_allowed(bhttp::verb v) {
  return v == bhttp::verb::get || v == bhttp::verb::head || v == bhttp::verb::post || v == bhttp::verb::put;
}

}  // namespace

std::string_view header(const Headers& headers, std::string_view name) {
  for (const auto& [k, v] : headers) {
    if (iequals(k, name)) return v;
  }
  return {};
}

struct Shared {
  Shared(ServerOptions o, Handler& h, Counters& c) : options(std::move(o)), handler(h), counters(c) {}
  const ServerOptions options;
  // Per I/O thread: Handler::end_round is posted and has not run yet (touched only on that thread).
  std::vector<char> round_scheduled;
  Handler& handler;
  Counters& counters;
  std::atomic<bool> draining{false};
  std::atomic<int> refusing{0};
};

class Session;

// Every live session, so drain and stop can reach them.
class Registry {
 public:
  std::list<std::weak_ptr<Session>>::iterator add(std::weak_ptr<Session> s) {
    std::lock_guard lock(mutex_);
    return sessions_.insert(sessions_.end(), std::move(s));
  }
  void remove(std::list<std::weak_ptr<Session>>::iterator it) {
    std::lock_guard lock(mutex_);
    sessions_.erase(it);
  }
  std::vector<std::shared_ptr<Session>> snapshot() {
    std::lock_guard lock(mutex_);
    std::vector<std::shared_ptr<Session>> out;
    for (const auto& w : sessions_) {
      if (auto s = w.lock()) out.push_back(std::move(s));
    }
    return out;
  }

 private:
  std::mutex mutex_;
  std::list<std::weak_ptr<Session>> sessions_;
};

// One connection. Everything here runs on its I/O thread (the one thread that runs its io_context).
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, Shared& shared, Registry& registry, int io_thread)
      : io_thread_(io_thread),
        socket_(std::move(socket)),
        timer_(socket_.get_executor()),
        shared_(shared),
        registry_(registry),
        limits_(shared.options.limits),
        buffer_(std::max(limits_.max_header_bytes, kReadChunk) + kReadChunk),
        gone_(std::make_shared<std::atomic<bool>>(false)) {
    beast::error_code ec;
    const auto remote = socket_.remote_endpoint(ec);
    if (!ec) remote_ = remote.address().to_string() + ":" + std::to_string(remote.port());
    socket_.set_option(tcp::no_delay(true), ec);  // small answers on keep-alive connections must not wait for Nagle
    shared_.counters.connections_open.fetch_add(1);
  }

  ~Session() {
    shared_.counters.connections_open.fetch_sub(1);
    gone_->store(true);
    if (registered_) registry_.remove(self_in_registry_);
  }

  void start() {
    self_in_registry_ = registry_.add(weak_from_this());
    registered_ = true;
    net::dispatch(socket_.get_executor(), [self = shared_from_this()] { self->read_next(); });
  }

  // Drain: an idle connection closes now; the others close after their current answer.
  void drain() {
    net::dispatch(socket_.get_executor(), [self = shared_from_this()] {
      if (self->phase_ == Phase::Idle && self->pending_.empty()) self->close();
    });
  }

  void force_close() {
    net::dispatch(socket_.get_executor(), [self = shared_from_this()] { self->close(); });
  }

 private:
  enum class Phase { Idle, Header, Body, Stopped };

  struct Slot {
    std::optional<Response> response;
    unsigned version = 11;
    bool keep_alive = true;
    bool head = false;
    std::string method, path;
    size_t bytes_in = 0;
    Clock::time_point started;
  };

  // --- reading ---------------------------------------------------------------------------------

  void read_next() {
    if (closed_ || stop_reading_) return;
    if (pending_.size() >= limits_.max_pipelined_requests) {
      paused_ = true;  // resumes when an answer has been written
      return;
    }
    if (buffer_.size() == 0) {
      wait_for_request();
    } else {
      read_header();
    }
  }

  // Keep-alive: wait for the first byte of the next request.
  void wait_for_request() {
    phase_ = Phase::Idle;
    if (shared_.draining.load() && pending_.empty()) return close();
    arm_read_timer(Clock::now() + limits_.keep_alive_timeout);
    reading_ = true;
    socket_.async_read_some(buffer_.prepare(kReadChunk), [self = shared_from_this()](beast::error_code ec, size_t n) {
      self->buffer_.commit(n);
      if (self->read_done()) return;
      if (ec) return self->on_read_error(ec);
      self->read_header();
    });
  }

  void read_header() {
    phase_ = Phase::Header;
    started_ = Clock::now();
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(std::min<size_t>(limits_.max_header_bytes, UINT32_MAX)));
    parser_->body_limit(limits_.max_body_bytes);
    arm_read_timer(started_ + limits_.header_timeout);
    reading_ = true;
    bhttp::async_read_header(socket_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (self->read_done()) return;
      if (ec) return self->on_read_error(ec);
      self->on_header();
    });
  }

  void on_header() {
    auto& req = parser_->get();
    const size_t fields = static_cast<size_t>(std::distance(req.begin(), req.end()));
    if (fields > limits_.max_header_count) {
      return refuse(431, "the request has " + std::to_string(fields) + " header fields; at most " +
                             std::to_string(limits_.max_header_count) + " are accepted (--max-header-count)");
    }
    // RFC 9112 6.3: a message with both is an attack vector (request smuggling); one Content-Length only.
    const auto lengths = std::distance(req.equal_range(bhttp::field::content_length).first,
                                       req.equal_range(bhttp::field::content_length).second);
    const bool has_te = req.find(bhttp::field::transfer_encoding) != req.end();
    if (lengths > 1) return refuse(400, "more than one Content-Length header");
    if (lengths == 1 && has_te) return refuse(400, "both Content-Length and Transfer-Encoding");
    if (has_te && !parser_->chunked()) {
      return refuse(501, "Transfer-Encoding other than chunked is not supported");
    }
    const bool has_body = parser_->chunked() || parser_->content_length().value_or(0) > 0;
    const auto target = origin_form(req.target());
    const auto decoded = percent_decode(target.substr(0, target.find('?')));
    if (!decoded) return refuse(400, "malformed percent-escape in the request path");
    const auto route_methods = shared_.handler.allowed_methods(*decoded);
    const auto allowed = route_methods.empty() ? kAllowedMethods : route_methods;
    if (!method_allowed(req.method()) || !method_listed(allowed, req.method_string())) {
      Response r{405, "application/json",
                 error_json("method '" + std::string(req.method_string()) + "' is not allowed on " +
                            std::string(*decoded).substr(0, 256) + " (allowed: " + std::string(allowed) + ")"),
                 {{"Allow", std::string(allowed)}}};
      return has_body ? refuse(std::move(r)) : answer_now(std::move(r));
    }
    path_ = std::move(*decoded);
    if (const auto it = req.find(bhttp::field::content_encoding); it != req.end() && has_body) {
      if (!content_coding_supported(it->value())) {
        return refuse(415, "Content-Encoding '" + std::string(it->value()) + "' is not supported (supported: " +
                               std::string(kSupportedContentCodings) + ")");
      }
    }
    if (const auto length = parser_->content_length(); length && *length > limits_.max_body_bytes) {
      return refuse(413, "the request body (" + std::to_string(*length) + " bytes) exceeds --max-body-bytes (" +
                             std::to_string(limits_.max_body_bytes) + " bytes)");
    }
    if (parser_->is_done()) return dispatch();
    if (const auto it = req.find(bhttp::field::expect); it != req.end() && iequals(it->value(), "100-continue")) {
      send_continue();
    }
    phase_ = Phase::Body;
    body_started_ = Clock::now();
    read_body();
  }

  // A client that sent "Expect: 100-continue" waits for this before its body. Only when no answer
  // is owed, so it never lands between pipelined answers (the client then sends after its own wait).
  void send_continue() {
    if (writing_ || !pending_.empty()) return;
    static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    writing_ = true;
    net::async_write(socket_, net::buffer(kContinue.data(), kContinue.size()),
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       self->writing_ = false;
                       if (ec) return self->close();
                       self->write_next();
                     });
  }

  // The body is read a chunk at a time; the deadline grows with what arrives, so a client
  // sending at --min-body-bytes-per-second or faster never times out and a slower one does.
  void read_body() {
    const auto received = static_cast<double>(body_bytes_);
    const auto next = static_cast<double>(kReadChunk);
    const auto rate = static_cast<double>(std::max<size_t>(limits_.min_body_bytes_per_second, 1));
    const auto allowed = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>((received + next) / rate));
    arm_read_timer(body_started_ + limits_.header_timeout + allowed);
    reading_ = true;
    bhttp::async_read_some(socket_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t n) {
      if (self->read_done()) return;
      self->body_bytes_ += n;
      if (ec) return self->on_read_error(ec);
      if (self->parser_->is_done()) return self->dispatch();
      self->read_body();
    });
  }

  void on_read_error(beast::error_code ec) {
    const bool timed_out = read_timed_out_;
    read_timed_out_ = false;
    if (closed_) return;
    if (timed_out) {
      if (phase_ == Phase::Idle) {  // keep-alive expired: close once what is owed is written
        stop_reading_ = true;
        phase_ = Phase::Stopped;
        if (pending_.empty()) close();
        return;
      }
      return refuse(408, phase_ == Phase::Header
                             ? "the request headers did not arrive within --header-timeout-ms (" +
                                   std::to_string(limits_.header_timeout.count()) + " ms)"
                             : "the request body arrived slower than --min-body-bytes-per-second (" +
                                   std::to_string(limits_.min_body_bytes_per_second) + ")");
    }
    if (ec == bhttp::error::end_of_stream || ec == net::error::eof || ec == net::error::connection_reset ||
        ec == net::error::operation_aborted || ec == bhttp::error::partial_message) {
      // The client is gone (or finished sending): withdraw what it waits for, answer what is ready.
      gone_->store(true);
      stop_reading_ = true;
      phase_ = Phase::Stopped;
      if (pending_.empty()) close();
      return;
    }
    if (ec == bhttp::error::header_limit || ec == bhttp::error::buffer_overflow) {
      return refuse(431, "the request line and headers exceed --max-header-bytes (" +
                             std::to_string(limits_.max_header_bytes) + " bytes)");
    }
    if (ec == bhttp::error::body_limit) {
      return refuse(413, "the request body exceeds --max-body-bytes (" + std::to_string(limits_.max_body_bytes) +
                             " bytes)");
    }
    refuse(400, "malformed HTTP request: " + ec.message());
  }

  // At the start of every read completion; true when the connection has moved on (closing, lingering).
  bool read_done() {
    reading_ = false;
    disarm_read_timer();
    if (closed_) return true;
    if (lingering_) {
      discard();
      return true;
    }
    return false;
  }

  void disarm_read_timer() { read_deadline_.reset(); }

  void arm_read_timer(Clock::time_point deadline) {
    read_deadline_ = deadline;
    watch(deadline);
  }

  // One timer watches the connection's deadlines (reading, writing, lingering). It is moved only when
  // a deadline comes before the time it is set for; a later one is found when it fires. Setting and
  // cancelling a timer per read and per write cost two timerfd_settime calls per request (strace: the
  // MLP at 4 connections), and a connection's deadlines only ever move later while it is busy.
  void watch(Clock::time_point deadline) {
    if (deadline >= timer_at_) return;
    timer_at_ = deadline;
    timer_.expires_at(deadline);  // aborts the wait set for a later time
    timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec != net::error::operation_aborted) self->on_timer();
    });
  }

  void on_timer() {
    if (closed_) return;
    timer_at_ = Clock::time_point::max();
    const auto now = Clock::now();
    if (linger_deadline_ && now >= *linger_deadline_) return close();
    if (write_deadline_ && now >= *write_deadline_) return close();  // the client does not read its answer
    if (read_deadline_ && now >= *read_deadline_) {
      read_deadline_.reset();
      read_timed_out_ = true;
      // cancel() also aborts a write in progress; then the write's completion cancels instead.
      if (writing_) {
        cancel_after_write_ = true;
      } else {
        beast::error_code ignored;
        socket_.cancel(ignored);
      }
    }
    for (const auto& deadline : {read_deadline_, write_deadline_, linger_deadline_}) {
      if (deadline) watch(*deadline);
    }
  }

  // --- answering -------------------------------------------------------------------------------

  std::shared_ptr<Slot> new_slot(bool keep_alive) {
    auto slot = std::make_shared<Slot>();
    slot->started = started_;
    slot->keep_alive = keep_alive;
    if (parser_) {
      const auto& req = parser_->get();
      slot->version = req.version() == 10 ? 10 : 11;
      slot->head = req.method() == bhttp::verb::head;
      slot->method = std::string(req.method_string());
      slot->path = std::string(req.target());
      slot->bytes_in = body_bytes_;
    }
    pending_.push_back(slot);
    return slot;
  }

  // Answer and close: the rest of what the client sends can no longer be trusted as framing.
  void refuse(int status, const std::string& message) { refuse(Response{status, "application/json", error_json(message), {}}); }
  void refuse(Response response) {
    stop_reading_ = true;
    phase_ = Phase::Stopped;
    auto slot = new_slot(false);
    slot->response = std::move(response);
    write_next();
  }

  // Answer without reading a body (there is none) and go on with the connection.
  void answer_now(Response response) {
    auto slot = new_slot(parser_->get().keep_alive());
    slot->response = std::move(response);
    write_next();
    after_request(slot->keep_alive);
  }

  void dispatch() {
    const bool keep_alive = parser_->get().keep_alive();
    auto slot = new_slot(keep_alive);
    auto message = parser_->release();
    slot->bytes_in = message.body().size();
    parser_.reset();
    body_bytes_ = 0;
    Request request;
    request.method = std::string(message.method_string());
    const auto target = origin_form(message.target());
    const auto q = target.find('?');
    request.path = std::move(path_);
    if (q != std::string_view::npos) request.query = std::string(target.substr(q + 1));
    request.headers.reserve(static_cast<size_t>(std::distance(message.begin(), message.end())));
    for (const auto& f : message) request.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
    request.body = std::move(message.body());
    request.gone = gone_;
    request.io_thread = io_thread_;
    try {
      shared_.handler.handle(std::move(request), [self = shared_from_this(), slot](Response response) {
        net::dispatch(self->socket_.get_executor(), [self, slot, response = std::move(response)]() mutable {
          slot->response = std::move(response);
          self->write_next();
        });
      });
    } catch (const std::exception& e) {  // handlers answer their own errors; this is the net below
      slot->response = Response{500, "application/json", error_json(std::string("internal error: ") + e.what()), {}};
      write_next();
    }
    end_round_later();
    after_request(keep_alive);
  }

  // Posted behind the handlers already queued on this thread (the rest of this poll's ready sockets).
  void end_round_later() {
    auto& scheduled = shared_.round_scheduled[static_cast<size_t>(io_thread_)];
    if (scheduled) return;
    scheduled = 1;
    net::post(socket_.get_executor(), [&scheduled, &handler = shared_.handler, thread = io_thread_] {
      scheduled = 0;
      handler.end_round(thread);
    });
  }

  void after_request(bool keep_alive) {
    if (!keep_alive) {
      stop_reading_ = true;
      phase_ = Phase::Stopped;
      return;
    }
    read_next();  // pipelining: the next request is parsed while this one is answered
  }

  void write_next() {
    if (closed_ || writing_ || pending_.empty() || !pending_.front()->response) return;
    const auto& slot = *pending_.front();
    auto& r = *slot.response;
    const bool keep_alive = slot.keep_alive && !shared_.draining.load() && !(stop_reading_ && pending_.size() == 1);
    response_.emplace(static_cast<bhttp::status>(r.status), slot.version);
    response_->set(bhttp::field::server, "torchship");
    response_->set(bhttp::field::content_type, r.content_type);
    for (auto& [k, v] : r.headers) response_->insert(k, v);
    response_->body() = std::move(r.body);
    response_->keep_alive(keep_alive);
    response_->prepare_payload();
    if (slot.head) response_->body().clear();  // Content-Length stays that of the GET answer
    writing_ = true;
    write_deadline_ = Clock::now() + limits_.send_timeout;
    watch(*write_deadline_);
    bhttp::async_write(socket_, *response_, [self = shared_from_this()](beast::error_code ec, size_t n) {
      self->on_written(ec, n);
    });
  }

  void on_written(beast::error_code ec, size_t bytes_out) {
    writing_ = false;
    write_deadline_.reset();
    const auto slot = pending_.front();
    pending_.pop_front();
    const int status = response_->result_int();
    const bool keep_alive = response_->keep_alive();
    response_.reset();
    shared_.counters.count(status);
    access_log(*slot, status, bytes_out);
    if (cancel_after_write_) {
      cancel_after_write_ = false;
      beast::error_code ignored;
      socket_.cancel(ignored);
    }
    if (ec) return close();
    if (!keep_alive) return linger_close();
    if (paused_) {
      paused_ = false;
      read_next();
    }
    if (stop_reading_ && pending_.empty()) return close();
    write_next();
  }

  void access_log(const Slot& slot, int status, size_t bytes_out) noexcept {
    if (!log::enabled(log::Level::info)) return;
    try {
      const double ms = slot.started == Clock::time_point{}
                            ? 0.0
                            : std::chrono::duration<double, std::milli>(Clock::now() - slot.started).count();
      char duration[32];
      std::snprintf(duration, sizeof(duration), "%.3f", ms);
      log::info("access remote=" + remote_ + " method=" + log_safe(slot.method) + " path=" + log_safe(slot.path) +
                " status=" + std::to_string(status) + " bytes_in=" + std::to_string(slot.bytes_in) +
                " bytes_out=" + std::to_string(bytes_out) + " duration_ms=" + duration);
    } catch (...) {
      // A line lost to a failed allocation is not worth the connection.
    }
  }

  // --- closing ---------------------------------------------------------------------------------

  // After an answer that ends the connection: stop sending, read and drop what the client still
  // sends for a short while, then close, so the answer is not lost to a reset.
  void linger_close() {
    if (closed_) return;
    beast::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return close();
    stop_reading_ = true;
    lingering_ = true;
    disarm_read_timer();
    beast::error_code ignored;
    if (reading_) socket_.cancel(ignored);  // its completion starts discarding
    linger_deadline_ = Clock::now() + kLingerTime;
    watch(*linger_deadline_);
    if (!reading_) discard();
  }

  void discard() {
    reading_ = true;
    buffer_.consume(buffer_.size());
    socket_.async_read_some(buffer_.prepare(kReadChunk), [self = shared_from_this()](beast::error_code ec, size_t n) {
      self->reading_ = false;
      self->discarded_ += n;
      if (ec || self->closed_ || self->discarded_ > kLingerMaxBytes) return self->close();
      self->discard();
    });
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    gone_->store(true);
    beast::error_code ec;
    timer_.cancel();
    socket_.shutdown(tcp::socket::shutdown_both, ec);
    socket_.close(ec);
  }

  const int io_thread_;
  tcp::socket socket_;
  net::steady_timer timer_;
  Clock::time_point timer_at_ = Clock::time_point::max();  // when timer_ fires; max: not set
  std::optional<Clock::time_point> read_deadline_, write_deadline_, linger_deadline_;
  Shared& shared_;
  Registry& registry_;
  const Limits& limits_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::optional<bhttp::response<bhttp::string_body>> response_;
  std::deque<std::shared_ptr<Slot>> pending_;
  std::shared_ptr<std::atomic<bool>> gone_;
  std::string remote_ = "-";
  std::string path_;  // the request's decoded path, from its headers to dispatch
  std::list<std::weak_ptr<Session>>::iterator self_in_registry_;
  bool registered_ = false;
  Phase phase_ = Phase::Idle;
  Clock::time_point started_{};
  Clock::time_point body_started_{};
  size_t body_bytes_ = 0;
  bool writing_ = false;
  bool paused_ = false;
  bool stop_reading_ = false;
  bool read_timed_out_ = false;
  bool cancel_after_write_ = false;
  bool lingering_ = false;
  bool reading_ = false;
  size_t discarded_ = 0;
  bool closed_ = false;
};

// Over --max-connections: one 503 and close, never a silent wait in the backlog.
void refuse_connection(tcp::socket socket, Shared& shared) {
  shared.counters.connections_refused.fetch_add(1);
  shared.counters.count(503);
  if (shared.refusing.load() >= kMaxRefusing) return;  // closed unanswered by the socket's destructor
  struct Refusal {
    Refusal(tcp::socket s, Shared& sh) : socket(std::move(s)), timer(socket.get_executor()), shared(sh) {
      shared.refusing.fetch_add(1);
    }
    ~Refusal() { shared.refusing.fetch_sub(1); }
    tcp::socket socket;
    net::steady_timer timer;
    bhttp::response<bhttp::string_body> response;
    char sink[4096];
    Shared& shared;
  };
  auto r = std::make_shared<Refusal>(std::move(socket), shared);
  r->response.result(bhttp::status::service_unavailable);
  r->response.set(bhttp::field::server, "torchship");
  r->response.set(bhttp::field::content_type, "application/json");
  r->response.set(bhttp::field::retry_after, "1");
  r->response.body() = error_json("the server has " + std::to_string(shared.options.limits.max_connections) +
                                  " connections open (--max-connections); retry later");
  r->response.keep_alive(false);
  r->response.prepare_payload();
  r->timer.expires_after(std::chrono::seconds(1));
  r->timer.async_wait([r](beast::error_code) {
    beast::error_code ignored;
    r->socket.close(ignored);
  });
  bhttp::async_write(r->socket, r->response, [r](beast::error_code ec, size_t) {
    if (ec) return;
    beast::error_code ignored;
    r->socket.shutdown(tcp::socket::shutdown_send, ignored);
    // Until the client closes (or the timer): its request must not be answered by a reset.
    r->socket.async_read_some(net::buffer(r->sink), [r](beast::error_code, size_t) { r->timer.cancel(); });
  });
}

class Server::Impl {
 public:
  Impl(ServerOptions options, Handler& handler, Counters& counters)
      : shared_(std::move(options), handler, counters),
        contexts_(make_contexts(Server::io_threads(shared_.options))),
        acceptor_(net::make_strand(*contexts_.front())),
        retry_timer_(acceptor_.get_executor()) {
    for (auto& context : contexts_) work_.push_back(net::make_work_guard(*context));
    shared_.round_scheduled.resize(contexts_.size());
  }

  int start() {
    const auto& o = shared_.options;
    try {
      tcp::resolver resolver(*contexts_.front());
      const auto endpoint = *resolver.resolve(o.host, std::to_string(o.port), tcp::resolver::passive).begin();
      acceptor_.open(endpoint.endpoint().protocol());
      // SO_REUSEADDR (restart while old connections linger in TIME_WAIT), not SO_REUSEPORT: a
      // second server on a busy port must fail, not silently share it.
      acceptor_.set_option(net::socket_base::reuse_address(true));
      acceptor_.bind(endpoint.endpoint());
      acceptor_.listen(net::socket_base::max_listen_connections);
    } catch (const std::exception& e) {
      throw std::runtime_error("cannot listen on " + o.host + ":" + std::to_string(o.port) + ": " + e.what() +
                               " (address in use, or not an address of this machine?)");
    }
    const int port = acceptor_.local_endpoint().port();
    accept();
    for (auto& context : contexts_) threads_.emplace_back([&context] { context->run(); });
    return port;
  }

  void begin_drain() {
    if (shared_.draining.exchange(true)) return;
    net::post(acceptor_.get_executor(), [this] {
      beast::error_code ignored;
      retry_timer_.cancel();
      acceptor_.close(ignored);
    });
    for (const auto& s : registry_.snapshot()) s->drain();
  }

  void stop(Clock::time_point deadline) {
    if (stopped_.exchange(true)) return;
    begin_drain();
    while (shared_.counters.connections_open.load() > 0 && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    for (const auto& s : registry_.snapshot()) s->force_close();
    // Without their work guards the I/O threads run those closes and the reads and timers they abort, and
    // return once nothing is left: every session ends on its own thread. Sessions still referenced by a
    // queued model request end when it answers; their sockets are closed.
    work_.clear();
    const auto grace = Clock::now() + std::chrono::milliseconds(200);
    const auto ran_dry = [&] { return std::ranges::all_of(contexts_, [](const auto& c) { return c->stopped(); }); };
    while ((shared_.refusing.load() > 0 || !ran_dry()) && Clock::now() < grace) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    for (auto& context : contexts_) context->stop();
    for (auto& t : threads_) t.join();
    threads_.clear();
    // A round cut short by the stop: what its requests left with the handler is passed on now, and answered
    // like any request still queued (its sessions end with the contexts), never dropped with the handler.
    for (size_t thread = 0; thread < shared_.round_scheduled.size(); ++thread) {
      if (std::exchange(shared_.round_scheduled[thread], 0)) shared_.handler.end_round(static_cast<int>(thread));
    }
  }

 private:
  // One io_context per I/O thread, connections dealt round-robin: a connection's handlers, and the
  // answers handed back to it, stay on one thread. With one context run by every thread, Asio parks
  // idle threads on a condition variable and wakes one for nearly every handoff (measured with perf:
  // futex waits and context switches were the largest cost for small models at 4 connections).
  static std::vector<std::unique_ptr<net::io_context>> make_contexts(int threads) {
    std::vector<std::unique_ptr<net::io_context>> contexts;
    for (int i = 0; i < threads; ++i) contexts.push_back(std::make_unique<net::io_context>(1));
    return contexts;
  }

  void accept() {
    // A connection's socket and timer run on its thread's io_context itself: one thread runs each, so a
    // strand would only add a queue (and answers written from end_round, outside any strand, would be posted).
    const auto thread = static_cast<int>(next_context_++ % contexts_.size());
    auto& context = *contexts_[static_cast<size_t>(thread)];
    acceptor_.async_accept(context.get_executor(), [this, thread](beast::error_code ec, tcp::socket socket) {
      if (ec) {
        if (!acceptor_.is_open() || ec == net::error::operation_aborted) return;
        // EMFILE and friends: back off instead of spinning on a listener that cannot accept.
        log::warn("accept failed: " + ec.message() + " (raise the open-files limit or lower --max-connections)");
        retry_timer_.expires_after(std::chrono::milliseconds(50));
        retry_timer_.async_wait([this](beast::error_code e) {
          if (!e && acceptor_.is_open()) accept();
        });
        return;
      }
      shared_.counters.connections_accepted.fetch_add(1);
      if (shared_.draining.load()) {
        beast::error_code ignored;
        socket.close(ignored);
      } else if (static_cast<size_t>(shared_.counters.connections_open.load()) >= shared_.options.limits.max_connections) {
        refuse_connection(std::move(socket), shared_);
      } else {
        std::make_shared<Session>(std::move(socket), shared_, registry_, thread)->start();
      }
      accept();
    });
  }

  // Declared before the contexts, so destroyed after them: a handler still queued when the threads stop
  // (a connection open at the drain deadline) may hold a session's last reference, and ~io_context
  // destroys it, running ~Session, which leaves the registry. With the registry gone first, that was a
  // use-after-free and a double free of its list node (and, through its weak_ptr, of the session), which
  // corrupted tcmalloc's free lists: the server segfaulted at exit (issue 12).
  Shared shared_;
  Registry registry_;
  std::vector<std::unique_ptr<net::io_context>> contexts_;
  std::vector<net::executor_work_guard<net::io_context::executor_type>> work_;
  size_t next_context_ = 0;  // only the acceptor's handlers touch it
  tcp::acceptor acceptor_;
  net::steady_timer retry_timer_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stopped_{false};
};

Server::Server(ServerOptions options, Handler& handler, Counters& counters)
    : impl_(std::make_unique<Impl>(std::move(options), handler, counters)) {}
Server::~Server() { stop(Clock::now()); }
int Server::io_threads(const ServerOptions& options) {
  if (options.io_threads > 0) return options.io_threads;
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}
int Server::start() { return impl_->start(); }
void Server::begin_drain() { impl_->begin_drain(); }
void Server::stop(std::chrono::steady_clock::time_point deadline) { impl_->stop(deadline); }

}  // namespace torchship::serve::http

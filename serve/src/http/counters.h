#pragma once
// What the HTTP transport counts, for /metrics: responses by status code (including those that
// never reached a handler) and connections.
#include <array>
#include <atomic>
#include <cstdint>

namespace torchship::serve::http {

class Counters {
 public:
  void count(int status) {
    if (status >= 100 && status < kCodes) by_status_[static_cast<size_t>(status)].fetch_add(1, std::memory_order_relaxed);
  }
  uint64_t get(int status) const { return by_status_.at(static_cast<size_t>(status)).load(std::memory_order_relaxed); }
  static constexpr int kCodes = 600;

  std::atomic<int64_t> connections_open{0};
  std::atomic<uint64_t> connections_accepted{0};
  std::atomic<uint64_t> connections_refused{0};  // over max_connections: answered 503 and closed

 private:
  std::array<std::atomic<uint64_t>, kCodes> by_status_{};
};

}  // namespace torchship::serve::http

#pragma once
// Prometheus text exposition (format 0.0.4) of what the core counts per model
// (ModelStats), what the HTTP layer counts per status code, and the process's
// memory (resident set from /proc/self/statm; device allocator on CUDA).
#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "torchship/model.h"

namespace torchship::serve {

// Responses by HTTP status code, including those that never reached a model.
class HttpCounters {
 public:
  void count(int status) {
    if (status >= 100 && status < kCodes) by_status_[static_cast<size_t>(status)].fetch_add(1, std::memory_order_relaxed);
  }
  uint64_t get(int status) const { return by_status_.at(static_cast<size_t>(status)).load(std::memory_order_relaxed); }
  static constexpr int kCodes = 600;

 private:
  std::array<std::atomic<uint64_t>, kCodes> by_status_{};
};

// Resident set size of this process in bytes (0 where /proc is unavailable).
int64_t resident_memory_bytes();

std::string render_metrics(const std::vector<std::shared_ptr<Model>>& models, const HttpCounters& http, bool ready);

}  // namespace torchship::serve

#include "torchship/stats.h"

#include <algorithm>

namespace torchship {

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1) {}

void Histogram::observe(double value) {
  const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), value);
  counts_[static_cast<size_t>(it - bounds_.begin())].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.upper_bounds = bounds_;
  uint64_t running = 0;
  for (const auto& c : counts_) {
    running += c.load(std::memory_order_relaxed);
    s.cumulative_counts.push_back(running);
  }
  s.sum = sum_.load(std::memory_order_relaxed);
  s.count = count_.load(std::memory_order_relaxed);
  return s;
}

std::vector<double> latency_buckets_seconds() {
  return {50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0, 2.5, 10.0};
}

namespace {
std::vector<double> batch_buckets(int64_t max_batch_size) {
  std::vector<double> b;
  for (int64_t v = 1; v < max_batch_size; v *= 2) b.push_back(static_cast<double>(v));
  b.push_back(static_cast<double>(std::max<int64_t>(max_batch_size, 1)));
  return b;
}
}  // namespace

ModelStats::ModelStats(int64_t max_batch_size)
    : decode_seconds(latency_buckets_seconds()),
      queue_seconds(latency_buckets_seconds()),
      gather_seconds(latency_buckets_seconds()),
      compute_seconds(latency_buckets_seconds()),
      encode_seconds(latency_buckets_seconds()),
      request_seconds(latency_buckets_seconds()),
      batch_size(batch_buckets(max_batch_size)) {}

}  // namespace torchship

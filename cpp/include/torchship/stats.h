#pragma once
// Lock-free counters and fixed-bucket histograms, read by the server's
// /metrics endpoint and by the Python bindings.
#include <array>
#include <atomic>
#include <cstdint>
#include <vector>

namespace torchship {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);

  struct Snapshot {
    std::vector<double> upper_bounds;
    std::vector<uint64_t> cumulative_counts;  // one per bound, then +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;

 private:
  std::vector<double> bounds_;
  std::vector<std::atomic<uint64_t>> counts_;  // bounds_.size() + 1 (the +Inf bucket)
  std::atomic<double> sum_{0};
  std::atomic<uint64_t> count_{0};
};

// Latency buckets in seconds: 50 us .. 10 s.
std::vector<double> latency_buckets_seconds();

struct ModelStats {
  ModelStats(int64_t max_batch_size);

  std::atomic<uint64_t> requests_ok{0};
  std::atomic<uint64_t> failed_invalid{0};
  std::atomic<uint64_t> failed_overloaded{0};
  std::atomic<uint64_t> failed_timeout{0};
  std::atomic<uint64_t> failed_unavailable{0};
  std::atomic<uint64_t> failed_internal{0};
  std::atomic<uint64_t> cancelled{0};  // withdrawn by their caller before they ran
  std::atomic<uint64_t> batches{0};
  std::atomic<uint64_t> failed_nanoseconds{0};    // time from arrival to the error, summed
  std::atomic<int64_t> last_inference_ms{0};      // wall clock (ms since the epoch) of the last batch
  std::atomic<int64_t> queue_depth{0};
  std::atomic<int64_t> in_flight{0};
  // Where a served request's time goes, stage by stage (issue 14): decoding its body into tensors (a
  // front end, per request: JSON or binary parse, image decode and preprocessing), waiting in the queue,
  // gathering the batch (concatenating the requests' inputs, per batch), running the batch (per batch),
  // encoding the answer (a front end, per request). Receiving and sending are the transport's.
  Histogram decode_seconds;
  Histogram queue_seconds;
  Histogram gather_seconds;
  Histogram compute_seconds;
  Histogram encode_seconds;
  Histogram request_seconds;
  Histogram batch_size;
};

}  // namespace torchship

#pragma once
// What the gRPC front end counts, for /metrics: finished calls by status code (gRPC has 17). Kept
// apart from gRPC's headers so the metrics and the HTTP routes need none of them.
#include <array>
#include <atomic>
#include <cstdint>

namespace torchship::serve::grpc_front {

class Counters {
 public:
  static constexpr int kCodes = 17;
  void count(int code) {
    if (code >= 0 && code < kCodes) by_code_[static_cast<size_t>(code)].fetch_add(1, std::memory_order_relaxed);
  }
  uint64_t get(int code) const { return by_code_.at(static_cast<size_t>(code)).load(std::memory_order_relaxed); }

 private:
  std::array<std::atomic<uint64_t>, kCodes> by_code_{};
};

// The canonical names of gRPC's status codes, as Prometheus labels (grpc-go's and Triton's spelling).
inline const char* code_name(int code) {
  static constexpr const char* kNames[Counters::kCodes] = {
      "OK",           "CANCELLED",          "UNKNOWN",           "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
      "NOT_FOUND",    "ALREADY_EXISTS",     "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
      "ABORTED",      "OUT_OF_RANGE",       "UNIMPLEMENTED",     "INTERNAL",         "UNAVAILABLE",
      "DATA_LOSS",    "UNAUTHENTICATED"};
  return code >= 0 && code < Counters::kCodes ? kNames[code] : "UNKNOWN";
}

}  // namespace torchship::serve::grpc_front

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

#include "grpc/counters.h"
#include "http/counters.h"
#include "torchship/model.h"
#include "torchship/repository.h"

namespace torchship::serve {

// Resident set size of this process in bytes (0 where /proc is unavailable).
int64_t resident_memory_bytes();

// `failures`: models that did not load (each a gauge naming its reason).
std::string render_metrics(const std::vector<std::shared_ptr<Model>>& models, const std::vector<ModelFailure>& failures,
                           const http::Counters& http, const grpc_front::Counters* grpc, bool ready);

}  // namespace torchship::serve

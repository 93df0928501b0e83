#include "metrics.h"

#include <c10/core/CachingDeviceAllocator.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

namespace torchship::serve {
namespace {

// Label values come from validated model names and versions; escape anyway.
std::string label(std::string_view v) {
  std::string out;
  for (const char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

void header(std::ostream& out, const char* name, const char* type, const char* help) {
  out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
}

std::string model_labels(const Model& m) {
  return "model=\"" + label(m.name()) + "\",version=\"" + label(m.version()) + "\"";
}

void histogram(std::ostream& out, const char* name, const std::string& labels, const Histogram& h) {
  const auto s = h.snapshot();
  for (size_t i = 0; i < s.upper_bounds.size(); ++i) {
    out << name << "_bucket{" << labels << ",le=\"" << s.upper_bounds[i] << "\"} " << s.cumulative_counts[i] << '\n';
  }
  out << name << "_bucket{" << labels << ",le=\"+Inf\"} " << s.cumulative_counts.back() << '\n';
  out << name << "_sum{" << labels << "} " << s.sum << '\n';
  out << name << "_count{" << labels << "} " << s.count << '\n';
}

}  // namespace

int64_t resident_memory_bytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t size_pages = 0;
  int64_t resident_pages = 0;
  if (!(statm >> size_pages >> resident_pages)) return 0;
  return resident_pages * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

std::string render_metrics(const std::vector<std::shared_ptr<Model>>& models, const std::vector<ModelFailure>& failures,
                           const http::Counters& http, const grpc_front::Counters* grpc, bool ready) {
  std::ostringstream out;
  out.precision(10);

  header(out, "torchship_ready", "gauge", "1 when every model is loaded and warmed up and the server is not draining.");
  out << "torchship_ready " << (ready ? 1 : 0) << '\n';

  header(out, "torchship_http_responses_total", "counter", "HTTP responses by status code.");
  for (int code = 100; code < http::Counters::kCodes; ++code) {
    if (const auto n = http.get(code)) out << "torchship_http_responses_total{code=\"" << code << "\"} " << n << '\n';
  }
  header(out, "torchship_http_connections_open", "gauge", "HTTP connections open now.");
  out << "torchship_http_connections_open " << http.connections_open.load() << '\n';
  header(out, "torchship_http_connections_accepted_total", "counter", "HTTP connections accepted.");
  out << "torchship_http_connections_accepted_total " << http.connections_accepted.load() << '\n';
  header(out, "torchship_http_connections_refused_total", "counter",
         "HTTP connections answered 503 and closed because --max-connections were open.");
  out << "torchship_http_connections_refused_total " << http.connections_refused.load() << '\n';

  if (grpc) {
    header(out, "torchship_grpc_responses_total", "counter", "gRPC calls finished, by status code.");
    for (int code = 0; code < grpc_front::Counters::kCodes; ++code) {
      if (const auto n = grpc->get(code)) {
        out << "torchship_grpc_responses_total{code=\"" << grpc_front::code_name(code) << "\"} " << n << '\n';
      }
    }
  }

  header(out, "torchship_model_load_failed", "gauge", "1 for each model that failed to load or warm up, with the reason.");
  for (const auto& f : failures) {
    out << "torchship_model_load_failed{model=\"" << label(f.name) << "\",reason=\"" << label(f.reason.substr(0, 300))
        << "\"} 1\n";
  }

  header(out, "torchship_inference_success_total", "counter", "Inference requests answered, per model.");
  for (const auto& m : models) {
    out << "torchship_inference_success_total{" << model_labels(*m) << "} " << m->stats().requests_ok.load() << '\n';
  }
  header(out, "torchship_inference_failure_total", "counter",
         "Inference requests failed, per model and reason (invalid, overloaded, timeout, unavailable, internal, cancelled: the client left first).");
  for (const auto& m : models) {
    auto& s = m->stats();
    const auto l = model_labels(*m);
    const std::pair<const char*, uint64_t> reasons[] = {{"invalid", s.failed_invalid.load()},
                                                        {"overloaded", s.failed_overloaded.load()},
                                                        {"timeout", s.failed_timeout.load()},
                                                        {"unavailable", s.failed_unavailable.load()},
                                                        {"internal", s.failed_internal.load()},
                                                        {"cancelled", s.cancelled.load()}};
    for (const auto& [reason, n] : reasons) {
      out << "torchship_inference_failure_total{" << l << ",reason=\"" << reason << "\"} " << n << '\n';
    }
  }
  header(out, "torchship_batches_total", "counter", "Batches run by the dynamic batcher, per model.");
  for (const auto& m : models) out << "torchship_batches_total{" << model_labels(*m) << "} " << m->stats().batches.load() << '\n';
  header(out, "torchship_queue_depth", "gauge", "Requests waiting in the model's queue.");
  for (const auto& m : models) out << "torchship_queue_depth{" << model_labels(*m) << "} " << m->stats().queue_depth.load() << '\n';
  header(out, "torchship_inflight_requests", "gauge", "Requests inside Model::infer (queued or running).");
  for (const auto& m : models) out << "torchship_inflight_requests{" << model_labels(*m) << "} " << m->stats().in_flight.load() << '\n';

  const std::tuple<const char*, const char*, Histogram ModelStats::*> histograms[] = {
      {"torchship_request_duration_seconds", "Time inside Model::infer: validation, queue, compute.",
       &ModelStats::request_seconds},
      {"torchship_queue_duration_seconds", "Time a request waited in the queue before its batch ran.",
       &ModelStats::queue_seconds},
      {"torchship_decode_duration_seconds",
       "Time to decode one request's body into tensors (JSON or binary parse; image decode and preprocessing).",
       &ModelStats::decode_seconds},
      {"torchship_gather_duration_seconds", "Time to gather one batch's inputs from its requests.",
       &ModelStats::gather_seconds},
      {"torchship_compute_duration_seconds", "Time to run one batch on a model instance.", &ModelStats::compute_seconds},
      {"torchship_encode_duration_seconds", "Time to encode one request's answer.", &ModelStats::encode_seconds},
      {"torchship_batch_size", "Rows per batch run by the dynamic batcher.", &ModelStats::batch_size},
  };
  for (const auto& [name, help, member] : histograms) {
    header(out, name, "histogram", help);
    for (const auto& m : models) histogram(out, name, model_labels(*m), m->stats().*member);
  }

  header(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
  out << "process_resident_memory_bytes " << resident_memory_bytes() << '\n';

  std::set<std::pair<int, int>> devices;  // (type, index) of every accelerator a model runs on
  for (const auto& m : models) {
    if (!m->device().is_cpu()) devices.insert({static_cast<int>(m->device().type()), m->device().index()});
  }
  if (!devices.empty()) {
    std::ostringstream allocated;
    std::ostringstream reserved;
    for (const auto& [type, index] : devices) {
      const c10::Device device(static_cast<c10::DeviceType>(type), static_cast<c10::DeviceIndex>(index));
      try {
        const auto stats = c10::getDeviceAllocator(device.type())->getDeviceStats(device.index());
        constexpr auto kAll = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
        allocated << "torchship_device_memory_allocated_bytes{device=\"" << device.str() << "\"} "
                  << stats.allocated_bytes[kAll].current << '\n';
        reserved << "torchship_device_memory_reserved_bytes{device=\"" << device.str() << "\"} "
                 << stats.reserved_bytes[kAll].current << '\n';
      } catch (const std::exception&) {
        // An allocator without statistics: leave the series out rather than fail the scrape.
      }
    }
    header(out, "torchship_device_memory_allocated_bytes", "gauge", "Bytes held by tensors in the device allocator.");
    out << allocated.str();
    header(out, "torchship_device_memory_reserved_bytes", "gauge", "Bytes reserved by the device caching allocator.");
    out << reserved.str();
  }
  return out.str();
}

}  // namespace torchship::serve

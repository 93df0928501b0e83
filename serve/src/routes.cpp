#include "routes.h"

#include <array>

namespace torchship::serve {

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
  if (n == 1 && seg[0] == "image") return {Endpoint::SoleModelImage};
  if (seg[0] != "v2") return {};
  if (n == 1) return {Endpoint::ServerMetadata};
  if (n == 3 && seg[1] == "health") {
    if (seg[2] == "live") return {Endpoint::Live};
    if (seg[2] == "ready") return {Endpoint::Ready};
    return {};
  }
  if (seg[1] == "repository") {
    if (n == 3 && seg[2] == "index") return {Endpoint::RepositoryIndex};
    if (n == 5 && seg[2] == "models" && (seg[4] == "load" || seg[4] == "unload")) {
      return {Endpoint::RepositoryControl, seg[3]};
    }
    return {};
  }
  if (n < 3 || seg[1] != "models" || seg[2].empty()) return {};
  if (n == 3 && seg[2] == "stats") return {Endpoint::AllStats};
  Route r;
  r.model = seg[2];
  size_t next = 3;
  if (n >= 5 && seg[3] == "versions") {
    r.version = seg[4];
    next = 5;
  }
  if (n == next) {
    r.endpoint = Endpoint::ModelMetadata;
  } else if (n == next + 1) {
    const auto last = seg[next];
    if (last == "ready") r.endpoint = Endpoint::ModelReady;
    if (last == "infer") r.endpoint = Endpoint::Infer;
    if (last == "image") r.endpoint = Endpoint::Image;
    if (last == "config") r.endpoint = Endpoint::ModelConfig;
    if (last == "stats") r.endpoint = Endpoint::ModelStats;
  }
  return r.endpoint == Endpoint::NotFound ? Route{} : r;
}

std::string_view allowed_methods(Endpoint e) {
  switch (e) {
    case Endpoint::Infer:
    case Endpoint::RepositoryIndex:
    case Endpoint::RepositoryControl:
      return "POST";
    case Endpoint::Image:
    case Endpoint::SoleModelImage:
      return "POST, PUT";  // PUT: curl -T, as the book sends its image
    default:
      return "GET, HEAD";
  }
}

bool method_matches(Endpoint e, std::string_view method) {
  const auto allowed = allowed_methods(e);
  if (allowed == "GET, HEAD") return method == "GET" || method == "HEAD";
  return method == "POST" || (method == "PUT" && allowed == "POST, PUT");
}

}  // namespace torchship::serve

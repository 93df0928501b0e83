#pragma once
// HTTP paths of the Open Inference Protocol (KServe v2) and its extensions, as a pure function
// of the path: no sockets, no models, unit-tested on its own.
#include <optional>
#include <string_view>

namespace torchship::serve {

enum class Endpoint {
  NotFound,
  ServerMetadata,   // GET /v2
  Live,             // GET /v2/health/live
  Ready,            // GET /v2/health/ready
  ModelMetadata,    // GET /v2/models/{m}[/versions/{v}]
  ModelReady,       // GET .../ready
  ModelConfig,      // GET .../config            (model_configuration extension)
  ModelStats,       // GET .../stats             (statistics extension)
  AllStats,         // GET /v2/models/stats
  Infer,            // POST .../infer
  Image,            // POST|PUT .../image        (an encoded image in, answers out: docs/images.md)
  SoleModelImage,   // POST|PUT /image           (the book's chapter 15 form, when one model is served)
  RepositoryIndex,  // POST /v2/repository/index (model_repository extension)
  RepositoryControl,  // POST /v2/repository/models/{m}/load|unload: refused, loading over the network is off
  Metrics,          // GET /metrics (Prometheus)
};

struct Route {
  Endpoint endpoint = Endpoint::NotFound;
  std::string_view model = {};
  std::optional<std::string_view> version = {};
};

Route route(std::string_view path);

// The methods an endpoint takes ("GET, HEAD", "POST" or "POST, PUT"), for 405 and its Allow header.
std::string_view allowed_methods(Endpoint endpoint);
bool method_matches(Endpoint endpoint, std::string_view method);

// The route list, for the 404 message.
inline constexpr std::string_view kRouteSummary =
    "/v2, /v2/health/live, /v2/health/ready, /v2/models/{model}[/versions/{version}][/ready | /infer | /image | "
    "/config | /stats], /v2/models/stats, /v2/repository/index, /image, /metrics";

}  // namespace torchship::serve

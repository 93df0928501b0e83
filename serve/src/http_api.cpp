#include "http_api.h"

#include <limits>

#include "http/content_coding.h"
#include "image_answer.h"
#include "http/text.h"
#include "log.h"
#include "routes.h"
#include "status.h"
#include "torchship/errors.h"

namespace torchship::serve {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kJson = "application/json";
constexpr const char* kOctetStream = "application/octet-stream";
constexpr std::string_view kHeaderLength = "Inference-Header-Content-Length";
// Answers smaller than this go out uncompressed whatever the client accepts: not worth the CPU.
constexpr size_t kCompressMinBytes = 1024;
// Encoded answers over this many bytes of tensor data are encoded on the worker pool, not on the
// batcher's worker (which should be starting the next batch).
constexpr size_t kInlineEncodeBytes = 64 << 10;

http::Response json_response(std::string body, int status = 200) {
  return http::Response{status, kJson, std::move(body), {}};
}

// Compresses a text answer when the client accepts gzip or deflate.
http::Response compressed(http::Response r, const http::Headers& request_headers) {
  if (r.body.size() < kCompressMinBytes || r.content_type == kOctetStream) return r;
  const auto coding = http::choose_response_coding(http::header(request_headers, "Accept-Encoding"));
  if (!coding) return r;
  r.body = http::encode_content(*coding, r.body);
  r.headers.emplace_back("Content-Encoding", *coding);
  r.headers.emplace_back("Vary", "Accept-Encoding");
  return r;
}

bool ready_only_index(std::string_view body) {
  if (body.empty()) return false;
  const auto doc = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) throw InvalidInputError("the repository index request must be a JSON object");
  bool ready = false;
  for (const auto& [key, value] : doc.items()) {
    if (key != "ready" || !value.is_boolean()) {
      throw InvalidInputError("the repository index request takes only {\"ready\": true|false}; got " +
                              echo(key));
    }
    ready = value.get<bool>();
  }
  return ready;
}

}  // namespace

size_t parse_header_length(std::string_view value) {
  const auto n = http::parse_decimal(value);
  if (!n || *n > std::numeric_limits<size_t>::max()) {
    throw InvalidInputError("Inference-Header-Content-Length must be a non-negative integer, got " + echo(value));
  }
  return static_cast<size_t>(*n);
}

http::Response error_response(std::exception_ptr error, std::string_view method, std::string_view path) {
  const auto s = classify(error);
  if (s.internal) log::error(std::string(method) + " " + std::string(path.substr(0, 256)) + ": " + s.message);
  http::Response r{s.http, kJson, http::error_json(s.message), {}};
  if (s.retry_after) r.headers.emplace_back("Retry-After", std::to_string(kRetryAfterSeconds));
  if (!s.allow.empty()) r.headers.emplace_back("Allow", s.allow);
  return r;
}

std::string_view HttpApi::allowed_methods(std::string_view path) const {
  const auto r = route(path);
  return r.endpoint == Endpoint::NotFound ? std::string_view{} : serve::allowed_methods(r.endpoint);
}

void HttpApi::handle(http::Request request, http::Reply reply) {
  try {
    const Route r = route(request.path);
    if (r.endpoint == Endpoint::NotFound) {
      throw NotFoundError("no route for " + echo(request.path) + " (routes: " + std::string(kRouteSummary) + ")");
    }
    if (!method_matches(r.endpoint, request.method)) {
      throw MethodNotAllowedError("method " + echo(request.method) + " is not allowed on " + echo(request.path),
                                  std::string(serve::allowed_methods(r.endpoint)));
    }
    switch (r.endpoint) {
      case Endpoint::Live:
        return reply(json_response(R"({"live":true})"));
      case Endpoint::Ready: {
        const auto state = service_.readiness();
        if (!state.ready) throw UnavailableError(state.reason);
        return reply(json_response(R"({"ready":true})"));
      }
      case Endpoint::ServerMetadata:
        return reply(json_response(service_.server_metadata_json()));
      case Endpoint::ModelMetadata:
        return reply(compressed(json_response(service_.model_metadata(*service_.find_model(r.model, r.version)).dump()),
                                request.headers));
      case Endpoint::ModelReady: {
        const auto model = service_.ready_model(r.model, r.version);
        return reply(json_response(json{{"name", model->name()}, {"ready", true}}.dump()));
      }
      case Endpoint::ModelConfig:
        return reply(compressed(json_response(service_.model_config(*service_.find_model(r.model, r.version)).dump()),
                                request.headers));
      case Endpoint::ModelStats:
        return reply(compressed(json_response(service_.statistics(r.model, r.version).dump()), request.headers));
      case Endpoint::AllStats:
        return reply(compressed(json_response(service_.statistics(std::nullopt, std::nullopt).dump()), request.headers));
      case Endpoint::RepositoryIndex:
        return reply(compressed(json_response(service_.repository_index(ready_only_index(request.body)).dump()),
                                request.headers));
      case Endpoint::RepositoryControl:
        throw ForbiddenError("loading and unloading models over the network is disabled; restart the server with "
                             "the models you want");
      case Endpoint::Metrics: {
        http::Response m{200, "text/plain; version=0.0.4; charset=utf-8", service_.metrics(counters_, grpc_counters_), {}};
        return reply(compressed(std::move(m), request.headers));
      }
      case Endpoint::Infer: {
        auto model = service_.find_model(r.model, r.version);
        // A full queue refuses before the body is decoded (a JSON image is ~10 ms of parsing), leaving
        // the cores to the requests already accepted.
        model->refuse_if_overloaded();
        const auto type = http::header(request.headers, "Content-Type");
        if (type.substr(0, std::min<size_t>(type.size(), 10)) == "multipart/") {
          throw UnsupportedMediaTypeError("multipart/form-data is not supported (nor any multipart body); send a JSON "
                                          "inference request "
                                          "(application/json) or binary tensor data (application/octet-stream)");
        }
        return infer(std::move(request), std::move(reply), std::move(model));  // answers its own errors
      }
      case Endpoint::Image:
      case Endpoint::SoleModelImage: {
        auto model = r.endpoint == Endpoint::Image ? service_.find_model(r.model, r.version) : service_.sole_model();
        model->refuse_if_overloaded();
        return image(std::move(request), std::move(reply), std::move(model));  // answers its own errors
      }
      case Endpoint::NotFound:
        break;
    }
    throw NotFoundError("no route for " + echo(request.path));
  } catch (...) {
    reply(error_response(std::current_exception(), request.method, request.path));
  }
}

void HttpApi::infer(http::Request request, http::Reply reply, std::shared_ptr<Model> model) {
  const bool encoded = !http::header(request.headers, "Content-Encoding").empty();
  if (request.body.size() <= service_.options().inline_decode_bytes && !encoded) {
    return decode_and_submit(request, reply, model, true);
  }
  service_.post([this, request = std::move(request), reply = std::move(reply), model]() mutable {
    decode_and_submit(request, reply, model, false);
  });
}

void HttpApi::end_round(int io_thread) {
  std::vector<Pending> pending;
  pending.swap(rounds_.at(static_cast<size_t>(io_thread)));
  // One group per model, each in arrival order: an idle small model runs its group as one batch.
  for (size_t i = 0; i < pending.size(); ++i) {
    if (!pending[i].model) continue;
    const auto model = std::move(pending[i].model);
    std::vector<DynamicBatcher::Submission> group;
    group.push_back(std::move(pending[i].submission));
    for (size_t j = i + 1; j < pending.size(); ++j) {
      if (pending[j].model != model) continue;
      group.push_back(std::move(pending[j].submission));
      pending[j].model.reset();
    }
    model->submit(std::move(group));
  }
}

void HttpApi::decode_and_submit(http::Request& request, const http::Reply& reply, const std::shared_ptr<Model>& model,
                                bool in_round) {
  try {
    if (request.gone && request.gone->load()) throw CancelledError("the client left before its request was decoded");
    InferRequest parsed;
    std::vector<torch::Tensor> inputs;
    std::vector<OutputSelection> selection;
    const auto decode_started = Clock::now();
    try {
      const auto body = std::make_shared<std::string>(http::decode_content(
          http::header(request.headers, "Content-Encoding"), std::move(request.body), max_body_bytes_));
      std::optional<size_t> json_bytes;
      if (const auto h = http::header(request.headers, kHeaderLength); !h.empty()) json_bytes = parse_header_length(h);
      parsed = parse_infer_request(body, json_bytes, limits_);
      selection = select_outputs(model->config(), parsed);
      inputs = model->order_inputs(parsed.inputs);
    } catch (const InvalidInputError&) {
      model->stats().failed_invalid.fetch_add(1, std::memory_order_relaxed);  // never reached the model
      throw;
    }
    model->stats().decode_seconds.observe(seconds_since(decode_started));
    auto done = [this, reply, model, selection = std::move(selection), id = std::move(parsed.id),
                 accept = std::string(http::header(request.headers, "Accept-Encoding")), method = request.method,
                 path = request.path](std::exception_ptr error, std::vector<torch::Tensor> outputs) mutable {
      if (error) return reply(error_response(error, method, path));
      size_t bytes = 0;
      for (const auto& t : outputs) bytes += t.nbytes();
      auto encode = [reply, model, selection = std::move(selection), id = std::move(id), accept = std::move(accept),
                     method = std::move(method), path = std::move(path), outputs = std::move(outputs)]() {
        try {
          const auto encode_started = Clock::now();
          auto e = encode_infer_response(model->config(), model->version(), id, selection, outputs);
          model->stats().encode_seconds.observe(seconds_since(encode_started));
          http::Response r{200, e.json_bytes ? kOctetStream : kJson, std::move(e.body), {}};
          if (e.json_bytes) r.headers.emplace_back(std::string(kHeaderLength), std::to_string(*e.json_bytes));
          reply(compressed(std::move(r), {{"Accept-Encoding", accept}}));
        } catch (...) {
          reply(error_response(std::current_exception(), method, path));
        }
      };
      if (bytes <= kInlineEncodeBytes) return encode();
      service_.post(std::move(encode));
    };
    if (in_round) {
      rounds_.at(static_cast<size_t>(request.io_thread))
          .push_back({model, {std::move(inputs), std::nullopt, std::move(done), request.gone}});
      return;
    }
    model->submit(std::move(inputs), std::nullopt, std::move(done), request.gone);
  } catch (...) {
    reply(error_response(std::current_exception(), request.method, request.path));
  }
}

void HttpApi::image(http::Request request, http::Reply reply, std::shared_ptr<Model> model) {
  const auto* pipeline = model->image();
  ImageAnswer answer;
  try {
    if (!pipeline) {
      throw InvalidInputError("model '" + model->name() +
                              "' takes no images: its config.json has no image record (export it with its image "
                              "preprocessing declared, docs/images.md); send tensors to /v2/models/" + model->name() +
                              "/infer");
    }
    // What to answer is settled before the body is decoded: a request that cannot be answered costs nothing.
    answer = choose_image_answer(*pipeline, request.query, http::header(request.headers, "Accept"));
  } catch (...) {
    return reply(error_response(std::current_exception(), request.method, request.path));
  }
  // Decoding and preprocessing an image takes milliseconds: never on the I/O thread.
  service_.post([this, request = std::move(request), reply = std::move(reply), model = std::move(model), pipeline,
                 answer]() mutable {
    try {
      if (request.gone && request.gone->load()) throw CancelledError("the client left before its image was decoded");
      torch::Tensor input;
      const auto decode_started = Clock::now();
      try {
        const auto body = http::decode_content(http::header(request.headers, "Content-Encoding"),
                                               std::move(request.body), max_body_bytes_);
        input = pipeline->preprocess(body, service_.options().image_limits);
      } catch (const InvalidInputError&) {
        model->stats().failed_invalid.fetch_add(1, std::memory_order_relaxed);  // never reached the model
        throw;
      }
      model->stats().decode_seconds.observe(seconds_since(decode_started));
      auto done = [this, reply, model, pipeline, answer, method = request.method, path = request.path](
                      std::exception_ptr error, std::vector<torch::Tensor> outputs) mutable {
        if (error) return reply(error_response(error, method, path));
        // Encoding a JPEG takes milliseconds too: on the worker pool, not the batcher's worker.
        service_.post([this, reply, model, pipeline, answer, method = std::move(method), path = std::move(path),
                       outputs = std::move(outputs)] {
          try {
            const auto encode_started = Clock::now();
            auto r = render_image_answer(*model, *pipeline, answer, outputs, service_.options().jpeg_quality);
            model->stats().encode_seconds.observe(seconds_since(encode_started));
            reply(http::Response{200, std::move(r.content_type), std::move(r.body), {}});
          } catch (...) {
            reply(error_response(std::current_exception(), method, path));
          }
        });
      };
      model->submit({input}, std::nullopt, std::move(done), request.gone);
    } catch (...) {
      reply(error_response(std::current_exception(), request.method, request.path));
    }
  });
}

}  // namespace torchship::serve

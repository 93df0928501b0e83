#include "image_answer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>

#include "http/text.h"
#include "protocol/response.h"
#include "status.h"
#include "torchship/errors.h"

namespace torchship::serve {
namespace {

// The value of `key` in an application/x-www-form-urlencoded query; nullopt when absent.
std::optional<std::string_view> query_value(std::string_view query, std::string_view key) {
  while (!query.empty()) {
    const auto amp = query.find('&');
    const auto pair = query.substr(0, amp);
    const auto eq = pair.find('=');
    if (pair.substr(0, eq) == key) return eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
  }
  return std::nullopt;
}

// The media types of an Accept header in the order listed, lower-cased, parameters dropped; those
// with q=0 (refused) left out. Empty: the client takes anything.
std::vector<std::string> accepted_types(std::string_view accept) {
  std::vector<std::string> types;
  while (!accept.empty()) {
    const auto comma = accept.find(',');
    const auto item = accept.substr(0, comma);
    accept = comma == std::string_view::npos ? std::string_view{} : accept.substr(comma + 1);
    const auto semicolon = item.find(';');
    std::string type(http::trim(item.substr(0, semicolon)));
    std::transform(type.begin(), type.end(), type.begin(), [](unsigned char c) { return std::tolower(c); });
    bool refused = false;
    for (auto params = semicolon == std::string_view::npos ? std::string_view{} : item.substr(semicolon + 1);
         !params.empty();) {
      const auto next = params.find(';');
      const auto param = http::trim(params.substr(0, next));
      params = next == std::string_view::npos ? std::string_view{} : params.substr(next + 1);
      if (param.size() > 2 && (param[0] == 'q' || param[0] == 'Q') && param[1] == '=') {
        refused = std::strtod(std::string(param.substr(2)).c_str(), nullptr) <= 0.0;
      }
    }
    if (!refused && !type.empty()) types.push_back(std::move(type));
  }
  return types;
}

bool takes(const std::vector<std::string>& types, std::string_view type) {
  if (types.empty()) return true;
  const auto major = type.substr(0, type.find('/'));
  return std::any_of(types.begin(), types.end(), [&](const std::string& t) {
    return t == type || t == "*/*" || t == std::string(major) + "/*";
  });
}

}  // namespace

ImageAnswer choose_image_answer(const ImagePipeline& pipeline, std::string_view query, std::string_view accept) {
  ImageAnswer answer;
  const auto types = accepted_types(accept);
  const auto top_k = query_value(query, "top_k");
  if (top_k && !pipeline.classifies()) {
    throw InvalidInputError("top_k is for classifiers; this model's config.json names no classes (image.scores is null)");
  }
  if (pipeline.classifies()) {
    answer.kind = ImageAnswer::Kind::TopK;
    answer.top_k = kDefaultTopK;
    if (top_k) {
      const auto k = http::parse_decimal(*top_k);
      if (!k || *k < 1 || *k > (uint64_t{1} << 20)) {
        throw InvalidInputError("top_k must be a whole number from 1, not " + echo(*top_k));
      }
      answer.top_k = static_cast<int64_t>(*k);
    }
    if (!takes(types, "application/json")) throw NotAcceptableError("the answer is JSON (application/json): Accept excludes it");
    return answer;
  }
  if (pipeline.makes_images()) {
    // The first listed form this route can give; the default (no Accept, or */*) is JPEG, as the book's.
    for (const auto& t : types.empty() ? std::vector<std::string>{"image/jpeg"} : types) {
      if (t == "image/png") return {ImageAnswer::Kind::Image, 0, ImageFormat::Png};
      if (t == "image/jpeg" || t == "image/*" || t == "*/*") return {ImageAnswer::Kind::Image, 0, ImageFormat::Jpeg};
      if (t == "application/json") return {ImageAnswer::Kind::Tensors, 0, ImageFormat::Jpeg};
    }
    throw NotAcceptableError("this model answers with an image (image/jpeg or image/png) or JSON (application/json); "
                             "Accept lists none of them");
  }
  if (!takes(types, "application/json")) throw NotAcceptableError("the answer is JSON (application/json): Accept excludes it");
  return answer;
}

RenderedAnswer render_image_answer(const Model& model, const ImagePipeline& pipeline, const ImageAnswer& answer,
                                   const std::vector<torch::Tensor>& outputs, int jpeg_quality) {
  const auto& output = outputs.at(static_cast<size_t>(pipeline.output_index()));
  switch (answer.kind) {
    case ImageAnswer::Kind::TopK: {
      nlohmann::json classes = nlohmann::json::array();
      const auto ranked = pipeline.top_k(output, answer.top_k);  // one row: the one image
      for (const auto& c : ranked.front()) {
        nlohmann::json entry{{"index", c.index}, {"probability", c.score}};
        if (static_cast<size_t>(c.index) < pipeline.labels().size()) entry["label"] = pipeline.labels()[c.index];
        classes.push_back(std::move(entry));
      }
      nlohmann::json doc{{"model_name", model.name()}, {"model_version", model.version()}, {"top_k", classes}};
      return {"application/json", doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)};
    }
    case ImageAnswer::Kind::Image: {
      const auto pixels = pipeline.postprocess(output[0]);
      return {answer.format == ImageFormat::Png ? "image/png" : "image/jpeg",
              encode_image(pixels, answer.format, jpeg_quality)};
    }
    case ImageAnswer::Kind::Tensors:
      break;
  }
  std::vector<OutputSelection> all;
  for (size_t i = 0; i < outputs.size(); ++i) all.push_back({i, false});
  return {"application/json", encode_infer_response(model.config(), model.version(), std::nullopt, all, outputs).body};
}

}  // namespace torchship::serve

#include "torchship/model_config.h"

#include <algorithm>
#include <fstream>
#include <string_view>
#include <sstream>

#include "torchship/dtypes.h"
#include "torchship/errors.h"

namespace torchship {
namespace {

std::vector<TensorSpec> parse_specs(const nlohmann::json& list, const char* what) {
  if (!list.is_array() || list.empty()) {
    throw std::invalid_argument(std::string("'") + what + "' must be a non-empty array");
  }
  std::vector<TensorSpec> specs;
  for (const auto& item : list) {
    TensorSpec s;
    s.name = item.at("name").get<std::string>();
    s.dtype = dtype_from_name(item.at("datatype").get<std::string>());
    s.shape = item.at("shape").get<std::vector<int64_t>>();
    if (s.shape.empty() || s.shape[0] != -1) {
      throw std::invalid_argument(std::string(what) + " '" + s.name + "': shape must start with -1 (the batch dimension)");
    }
    for (const auto d : s.shape) {
      if (d < -1 || d == 0) throw std::invalid_argument(std::string(what) + " '" + s.name + "': bad dimension " + std::to_string(d));
    }
    s.example_shape = item.contains("example_shape") ? item.at("example_shape").get<std::vector<int64_t>>() : s.shape;
    if (s.example_shape.size() != s.shape.size()) {
      throw std::invalid_argument(std::string(what) + " '" + s.name + "': example_shape and shape differ in rank");
    }
    for (const auto* key : {"multiple_of", "min_shape"}) {
      if (!item.contains(key)) continue;
      auto values = item.at(key).get<std::vector<int64_t>>();
      if (values.size() != s.shape.size() || std::any_of(values.begin(), values.end(), [](int64_t v) { return v < 1; })) {
        throw std::invalid_argument(std::string(what) + " '" + s.name + "': " + key +
                                    " must have one value >= 1 per dimension of shape " + shape_string(s.shape));
      }
      (std::string_view(key) == "multiple_of" ? s.multiple_of : s.min_shape) = std::move(values);
    }
    specs.push_back(std::move(s));
  }
  return specs;
}

ImageSpec parse_image(const nlohmann::json& j, const ModelConfig& c) {
  const auto optional_string = [&](const char* key) -> std::optional<std::string> {
    if (!j.contains(key) || j.at(key).is_null()) return std::nullopt;
    return j.at(key).get<std::string>();
  };
  ImageSpec image{j.at("preprocess").get<std::string>(), optional_string("postprocess"),
                  j.at("input").get<std::string>(), j.at("output").get<std::string>(), optional_string("scores")};
  for (const auto* file : {&image.preprocess, image.postprocess ? &*image.postprocess : nullptr}) {
    if (file && !is_version_file_name(*file)) {
      throw std::invalid_argument("image file '" + *file + "' must be a file name inside the version directory");
    }
  }
  if (c.inputs.size() != 1 || c.inputs.front().name != image.input) {
    throw std::invalid_argument("image.input '" + image.input + "' must be the model's only input");
  }
  if (c.output_index(image.output) < 0) {
    throw std::invalid_argument("image.output '" + image.output + "' is not one of the model's outputs");
  }
  if (image.scores && *image.scores != "logits" && *image.scores != "probabilities") {
    throw std::invalid_argument("image.scores must be \"logits\", \"probabilities\" or null, not '" + *image.scores +
                                "'");
  }
  return image;
}

}  // namespace

bool is_version_file_name(const std::string& name) {
  const std::filesystem::path path(name);
  return !path.empty() && !path.has_parent_path() && path.filename() == path && name != "." && name != "..";
}

ModelConfig ModelConfig::from_json(const nlohmann::json& doc) {
  ModelConfig c;
  c.raw = doc;
  c.name = doc.at("name").get<std::string>();
  c.max_batch_size = doc.at("max_batch_size").get<int64_t>();
  if (c.max_batch_size < 1) throw std::invalid_argument("max_batch_size must be >= 1");
  c.inputs = parse_specs(doc.at("inputs"), "input");
  c.outputs = parse_specs(doc.at("outputs"), "output");
  if (doc.contains("dynamic_batching")) {
    const auto& b = doc.at("dynamic_batching");
    c.max_queue_delay = std::chrono::microseconds(b.value("max_queue_delay_microseconds", int64_t{0}));
    c.max_queue_size = b.value("max_queue_size", c.max_queue_size);
  }
  if (doc.contains("instance_group")) c.instance_count = doc.at("instance_group").value("count", 1);
  if (doc.contains("warmup")) c.warmup_batch_sizes = doc.at("warmup").value("batch_sizes", std::vector<int64_t>{});
  if (c.instance_count < 1) throw std::invalid_argument("instance_group.count must be >= 1");
  if (c.max_queue_size < 1) throw std::invalid_argument("dynamic_batching.max_queue_size must be >= 1");
  if (doc.contains("labels") && !doc.at("labels").is_null()) c.labels = doc.at("labels").get<std::vector<std::string>>();
  if (doc.contains("image") && !doc.at("image").is_null()) c.image = parse_image(doc.at("image"), c);
  return c;
}

ModelConfig ModelConfig::load(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw LoadError("cannot open model config " + file.string());
  try {
    return from_json(nlohmann::json::parse(in));
  } catch (const std::exception& e) {
    throw LoadError("invalid model config " + file.string() + ": " + e.what());
  }
}

int ModelConfig::input_index(const std::string& name) const {
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

int ModelConfig::output_index(const std::string& name) const {
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (outputs[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

std::string shape_string(c10::IntArrayRef shape) {
  std::ostringstream out;
  out << '[';
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << ']';
  return out.str();
}

void validate_inputs(const ModelConfig& config, const std::vector<torch::Tensor>& inputs) {
  if (inputs.size() != config.inputs.size()) {
    throw InvalidInputError("model '" + config.name + "' takes " + std::to_string(config.inputs.size()) +
                            " input(s), received " + std::to_string(inputs.size()));
  }
  int64_t batch = -1;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const auto& spec = config.inputs[i];
    const auto& t = inputs[i];
    // Messages are built only on the way out: this runs for every request.
    const auto where = [&] { return "input '" + spec.name + "' of model '" + config.name + "'"; };
    if (!t.defined()) throw InvalidInputError(where() + " is missing");
    if (t.scalar_type() != spec.dtype) {
      throw InvalidInputError(where() + ": expected datatype " + dtype_name(spec.dtype) + ", received " +
                              c10::toString(t.scalar_type()));
    }
    if (t.dim() != static_cast<int64_t>(spec.shape.size())) {
      throw InvalidInputError(where() + ": expected shape " + shape_string(spec.shape) + " (rank " +
                              std::to_string(spec.shape.size()) + "), received " + shape_string(t.sizes()));
    }
    for (size_t d = 1; d < spec.shape.size(); ++d) {
      const int64_t size = t.size(static_cast<int64_t>(d));
      if (spec.shape[d] != -1 && spec.shape[d] != size) {
        throw InvalidInputError(where() + ": expected shape " + shape_string(spec.shape) + ", received " +
                                shape_string(t.sizes()));
      }
      const auto dim = [&] {
        return " dimension " + std::to_string(d) + " is " + std::to_string(size) + " in shape " +
               shape_string(t.sizes()) + "; this model takes ";
      };
      if (!spec.multiple_of.empty() && size % spec.multiple_of[d] != 0) {
        throw InvalidInputError(where() + ":" + dim() + "multiples of " + std::to_string(spec.multiple_of[d]) +
                                " there (multiple_of " + shape_string(spec.multiple_of) + ")");
      }
      if (!spec.min_shape.empty() && size < spec.min_shape[d]) {
        throw InvalidInputError(where() + ":" + dim() + "at least " + std::to_string(spec.min_shape[d]) +
                                " there (min_shape " + shape_string(spec.min_shape) + ")");
      }
    }
    const int64_t rows = t.size(0);
    if (rows < 1 || rows > config.max_batch_size) {
      throw InvalidInputError(where() + ": batch size " + std::to_string(rows) + " is outside 1.." +
                              std::to_string(config.max_batch_size) + " (max_batch_size)");
    }
    if (batch != -1 && rows != batch) {
      throw InvalidInputError(where() + ": batch size " + std::to_string(rows) + " differs from the other inputs' " +
                              std::to_string(batch));
    }
    batch = rows;
  }
}

}  // namespace torchship

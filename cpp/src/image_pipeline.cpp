#include "torchship/image_pipeline.h"

#include <torch/csrc/jit/runtime/jit_exception.h>
#include <torch/torch.h>

#include "torchship/errors.h"

namespace torchship {
namespace {

torch::jit::Module load_graph(const std::filesystem::path& file, const std::string& model) {
  if (!std::filesystem::is_regular_file(file)) {
    throw LoadError("model '" + model + "': config.json's image record names " + file.string() +
                    ", which does not exist (export the model again)");
  }
  try {
    auto graph = torch::jit::load(file.string(), torch::kCPU);
    graph.eval();
    return graph;
  } catch (const std::exception& e) {
    throw LoadError("model '" + model + "': cannot load the image graph " + file.string() + ": " + e.what());
  }
}

// The graphs raise ValueError("preprocess: ...") for an image that cannot become the model's input;
// TorchScript reports it as a JITException whose last line is "builtins.ValueError: <message>".
std::string value_error(std::string_view what) {
  constexpr std::string_view kMarker = "builtins.ValueError: ";
  const auto at = what.rfind(kMarker);
  if (at == std::string_view::npos) return {};
  auto message = what.substr(at + kMarker.size());
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.remove_suffix(1);
  return std::string(message);
}

}  // namespace

ImagePipeline::ImagePipeline(const ModelConfig& config, const std::filesystem::path& version_dir)
    : model_(config.name), labels_(config.labels) {
  if (!config.image) throw LoadError("model '" + config.name + "' takes no images (config.json has no image record)");
  const auto& spec = *config.image;
  preprocess_ = load_graph(version_dir / spec.preprocess, model_);
  if (spec.postprocess) {
    postprocess_path_ = version_dir / *spec.postprocess;
    postprocess_ = load_graph(*postprocess_path_, model_);
  }
  scores_ = spec.scores;
  output_index_ = config.output_index(spec.output);
}

torch::Tensor ImagePipeline::run(torch::jit::Module& graph, const torch::Tensor& input, const char* what) const {
  try {
    c10::InferenceMode guard;
    return graph.forward({input}).toTensor();
  } catch (const torch::jit::JITException& e) {
    if (auto message = value_error(e.what()); !message.empty()) throw InvalidInputError(message);
    throw Error("model '" + model_ + "': the " + what + " graph failed: " + e.what());
  } catch (const c10::Error& e) {
    throw Error("model '" + model_ + "': the " + what + " graph failed: " + e.what_without_backtrace());
  }
}

torch::Tensor ImagePipeline::preprocess(std::string_view encoded, const ImageLimits& limits) const {
  return preprocess_pixels(decode_image(encoded, limits));
}

torch::Tensor ImagePipeline::preprocess_pixels(const torch::Tensor& rgb) const {
  if (rgb.scalar_type() != torch::kUInt8 || rgb.dim() != 3 || rgb.size(2) != 3) {
    throw InvalidInputError("an image's pixels must be uint8 [height, width, 3] RGB, not " +
                            std::string(c10::toString(rgb.scalar_type())) + " " + c10::str(rgb.sizes()));
  }
  return run(preprocess_, rgb.cpu().contiguous(), "preprocess").unsqueeze(0);
}

torch::Tensor ImagePipeline::postprocess(const torch::Tensor& item) const {
  if (!makes_images()) throw Error("model '" + model_ + "' has no postprocess graph: its answers are not images");
  return run(postprocess_, item.to(torch::kCPU, torch::kFloat32).contiguous(), "postprocess");
}

std::vector<std::vector<RankedClass>> ImagePipeline::top_k(const torch::Tensor& output, int64_t k) const {
  if (!classifies()) throw Error("model '" + model_ + "' is not a classifier (config.json's image.scores is null)");
  auto scores = output.to(torch::kCPU, torch::kFloat64).reshape({output.size(0), -1});
  if (*scores_ == "logits") scores = torch::softmax(scores, 1);
  return top_classes(scores, k);
}

}  // namespace torchship

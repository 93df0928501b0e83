#pragma once
// A model's image requests (docs/images.md): encoded bytes -> RGB pixels -> the preprocess graph
// export wrote beside the model -> a batch of one for its input; an output item -> the postprocess
// graph -> RGB pixels; scores -> the most probable classes. What the steps are comes from the
// graphs and config.json's image record, never from here.
#include <torch/script.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "torchship/classification.h"
#include "torchship/image.h"
#include "torchship/model_config.h"

namespace torchship {

class ImagePipeline {
 public:
  // Loads the graphs config.image names from `version_dir` (on the CPU, where they were verified).
  // Throws LoadError.
  ImagePipeline(const ModelConfig& config, const std::filesystem::path& version_dir);

  // One JPEG or PNG as the model's input batch of one, [1, C, H, W]. Throws InvalidInputError (a bad
  // or unusable image, with the reason) or TooLargeError (beyond `limits`, from the header).
  torch::Tensor preprocess(std::string_view encoded, const ImageLimits& limits) const;
  // The same from decoded pixels, uint8 [H, W, 3] RGB.
  torch::Tensor preprocess_pixels(const torch::Tensor& rgb) const;

  int output_index() const { return output_index_; }
  // Image-to-image (a postprocess graph): one item of the output [C, H, W] -> uint8 [H, W, 3] RGB.
  bool makes_images() const { return postprocess_path_.has_value(); }
  torch::Tensor postprocess(const torch::Tensor& item) const;
  // A classifier (config.json has labels and says what the scores are).
  bool classifies() const { return scores_.has_value(); }
  // The `k` most probable classes of each row of the output, as probabilities (softmax first when
  // the model outputs logits).
  std::vector<std::vector<RankedClass>> top_k(const torch::Tensor& output, int64_t k) const;
  const std::vector<std::string>& labels() const { return labels_; }

 private:
  torch::Tensor run(torch::jit::Module& graph, const torch::Tensor& input, const char* what) const;

  std::string model_;
  mutable torch::jit::Module preprocess_;
  mutable torch::jit::Module postprocess_;
  std::optional<std::filesystem::path> postprocess_path_;
  std::optional<std::string> scores_;
  std::vector<std::string> labels_;
  int output_index_ = 0;
};

}  // namespace torchship

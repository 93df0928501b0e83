#pragma once
// What the image route answers (docs/images.md), as pure functions of the request and the model:
// a classifier's most probable classes as JSON (?top_k=N), an image-to-image model's output as
// JPEG or PNG (by Accept), any other model's outputs as a v2 inference response.
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "torchship/image_pipeline.h"
#include "torchship/model.h"

namespace torchship::serve {

struct ImageAnswer {
  enum class Kind { TopK, Image, Tensors };
  Kind kind = Kind::Tensors;
  int64_t top_k = 5;
  ImageFormat format = ImageFormat::Jpeg;
};

inline constexpr int64_t kDefaultTopK = 5;

// From the query string ("top_k=N") and the Accept header. Throws InvalidInputError for a bad
// top_k (or one asked of a model that is not a classifier) and NotAcceptableError when Accept
// lists no form this model's answer can take.
ImageAnswer choose_image_answer(const ImagePipeline& pipeline, std::string_view query, std::string_view accept);

struct RenderedAnswer {
  std::string content_type;
  std::string body;
};

// `outputs`: the model's outputs for the one image, config order, on the CPU.
RenderedAnswer render_image_answer(const Model& model, const ImagePipeline& pipeline, const ImageAnswer& answer,
                                   const std::vector<torch::Tensor>& outputs, int jpeg_quality);

}  // namespace torchship::serve

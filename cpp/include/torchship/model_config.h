#pragma once
// config.json of a model in the repository: the contract written by export,
// read here. Shapes carry -1 for dynamic dimensions; dimension 0 is the batch.
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace torchship {

struct TensorSpec {
  std::string name;
  torch::ScalarType dtype = torch::kFloat32;
  std::vector<int64_t> shape;          // -1 = any size; shape[0] is the batch dimension
  std::vector<int64_t> example_shape;  // a concrete shape (used for warm-up)
  // Optional, same rank as shape: what a dynamic dimension must be divisible by
  // and at least (a U-Net that halves a size three times takes multiples of 8).
  std::vector<int64_t> multiple_of;
  std::vector<int64_t> min_shape;
};

// Whether config.json names a file of the version directory itself: one plain name, no directory part,
// neither "." nor ".." (artifacts and image graphs alike; a name that could leave the directory is refused).
bool is_version_file_name(const std::string& name);

// config.json's "image" record (docs/images.md): graphs that export wrote beside the model, so that
// the runtime can take encoded images without re-declaring the model's preprocessing.
struct ImageSpec {
  std::string preprocess;                  // file in the version directory: uint8 [H, W, 3] -> one input item
  std::optional<std::string> postprocess;  // file: one item of `output` -> uint8 [H, W, 3] (image-to-image)
  std::string input;                       // the model input the items are fed to
  std::string output;                      // the output that labels, top-k and postprocess refer to
  std::optional<std::string> scores;       // "logits" or "probabilities"; unset: not a classifier
};

struct ModelConfig {
  std::string name;
  int64_t max_batch_size = 1;
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;
  // Dynamic batching: a worker waits at most this long for more requests when
  // its batch is not full. 0 = run whatever is queued as soon as a worker is free.
  std::chrono::microseconds max_queue_delay{0};
  int64_t max_queue_size = 128;  // requests waiting, per model; beyond it: OverloadedError
  int instance_count = 1;
  std::vector<int64_t> warmup_batch_sizes;  // empty: {1, max_batch_size}
  std::vector<std::string> labels;  // names of the classes (`image.output`'s last dimension); may be empty
  std::optional<ImageSpec> image;
  nlohmann::json raw;  // the whole document (preprocessing, ...)

  static ModelConfig from_json(const nlohmann::json& doc);
  static ModelConfig load(const std::filesystem::path& file);  // throws LoadError
  int input_index(const std::string& name) const;              // -1 when absent
  int output_index(const std::string& name) const;             // -1 when absent
};

// Checks every input against the config before it reaches a model: count,
// dtype, rank, each fixed dimension, batch size <= max_batch_size, and that
// all inputs agree on the batch size. Throws InvalidInputError naming the
// input, what was expected and what was received.
void validate_inputs(const ModelConfig& config, const std::vector<torch::Tensor>& inputs);

std::string shape_string(c10::IntArrayRef shape);

}  // namespace torchship

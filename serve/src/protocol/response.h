#pragma once
// Open Inference Protocol (KServe v2) inference responses: which outputs a request asked for, and
// the model's outputs encoded as JSON or with the binary tensor data extension. No HTTP.
#include <torch/types.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/request.h"
#include "torchship/model_config.h"

namespace torchship::serve {

// One output of the response: its index in config.outputs and whether it goes binary.
struct OutputSelection {
  size_t index = 0;
  bool binary = false;
  int64_t classification = 0;  // > 0: the top N classes as BYTES (the classification extension)
};

// The classification extension's answer for one output: shape [rows, N], row-major entries
// "score:index[:label]" (Triton's form; labels from config.json).
struct ClassifiedOutput {
  std::vector<int64_t> shape;
  std::vector<std::string> entries;
};
ClassifiedOutput classify_output(const ModelConfig& config, size_t output, const torch::Tensor& values, int64_t count);

// BYTES elements as the binary tensor data extension and gRPC's raw contents carry them: each a
// 4-byte little-endian length, then its bytes.
std::string serialize_bytes(const std::vector<std::string>& elements);

// Resolves the request's `outputs` against the model, before the model runs.
std::vector<OutputSelection> select_outputs(const ModelConfig& config, const InferRequest& request);

struct EncodedResponse {
  std::string body;
  std::optional<size_t> json_bytes;  // set when binary tensor data follows the JSON
};

// `outputs` are the model's outputs in config order, on the CPU.
EncodedResponse encode_infer_response(const ModelConfig& config, const std::string& model_version,
                                      const std::optional<std::string>& id,
                                      const std::vector<OutputSelection>& selection,
                                      const std::vector<torch::Tensor>& outputs);

// Appends `s` as a JSON string literal (quotes included). `s` must be valid UTF-8.
void append_json_string(std::string& out, std::string_view s);

}  // namespace torchship::serve

#pragma once
// Open Inference Protocol (KServe v2) inference messages <-> tensors.
//
// No HTTP and no model logic: a request body is decoded into named tensors for
// Model::infer (the core validates them against config.json), and the model's
// outputs are encoded back as JSON or with the binary tensor data extension.
// Every malformed request throws InvalidInputError naming the problem.
#include <torch/types.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "torchship/model.h"
#include "torchship/model_config.h"

namespace torchship::serve {

struct ParseLimits {
  int max_json_depth = 32;  // objects and arrays nested deeper are refused
  int max_rank = 16;        // dimensions in one input's shape
};

struct RequestedOutput {
  std::string name;
  std::optional<bool> binary_data;  // parameters.binary_data; unset: the request's default
};

struct InferRequest {
  std::optional<std::string> id;
  NamedTensors inputs;                   // in request order; the core orders them by config
  std::vector<RequestedOutput> outputs;  // empty: every output of the model
  bool binary_data_output = false;       // parameters.binary_data_output: default for outputs
};

// `body` is the whole HTTP body. `json_bytes` is the Inference-Header-Content-Length
// header: the JSON header's size when binary tensor data follows it (unset: all JSON).
InferRequest parse_infer_request(std::string_view body, std::optional<size_t> json_bytes,
                                 const ParseLimits& limits = {});

// A header's decimal value (digits only: no sign, no spaces); nullopt when malformed or too large.
std::optional<uint64_t> parse_decimal(std::string_view value);
// Parses the Inference-Header-Content-Length header value; throws InvalidInputError.
size_t parse_header_length(std::string_view value);
// User-supplied text echoed in an error message, quoted and cut to a sane length.
std::string echo(std::string_view s);

// One output of the response: its index in config.outputs and whether it goes binary.
struct OutputSelection {
  size_t index = 0;
  bool binary = false;
};

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

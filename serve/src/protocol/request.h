#pragma once
// Open Inference Protocol (KServe v2) inference requests -> named tensors. No HTTP and no model
// logic: a body is decoded into named tensors for Model::submit (the core validates them against
// config.json). Every malformed request throws InvalidInputError naming the problem.
#include <torch/types.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "torchship/model.h"

namespace torchship::serve {

struct ParseLimits {
  int max_json_depth = 32;  // objects and arrays nested deeper are refused
  int max_rank = 16;        // dimensions in one input's shape
};

struct RequestedOutput {
  std::string name;
  std::optional<bool> binary_data;  // parameters.binary_data; unset: the request's default
  // parameters.classification (the classification extension; tritonclient's class_count): answer the
  // top N classes of each row as BYTES "score:index[:label]" instead of the tensor.
  std::optional<int64_t> classification;
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
// The same, with binary tensor data read in place where it is aligned to its element size (the
// tensors keep `body` alive): no copy between the body and the batch.
InferRequest parse_infer_request(const std::shared_ptr<std::string>& body, std::optional<size_t> json_bytes,
                                 const ParseLimits& limits = {});

// User-supplied text echoed in an error message, quoted and cut to a sane length.
std::string echo(std::string_view s);

}  // namespace torchship::serve

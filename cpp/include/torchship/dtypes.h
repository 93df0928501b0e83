#pragma once
// Open Inference Protocol datatype names ("FP32", "INT64", ...) <-> torch dtypes.
#include <torch/types.h>

#include <string>
#include <string_view>

namespace torchship {

// Throws InvalidInputError naming the unknown datatype.
torch::ScalarType dtype_from_name(std::string_view name);
std::string dtype_name(torch::ScalarType dtype);

}  // namespace torchship

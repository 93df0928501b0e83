#include "torchship/dtypes.h"

#include <array>
#include <utility>

#include "torchship/errors.h"

namespace torchship {
namespace {
constexpr std::array<std::pair<std::string_view, torch::ScalarType>, 11> kTypes{{
    {"FP32", torch::kFloat32},
    {"FP64", torch::kFloat64},
    {"FP16", torch::kFloat16},
    {"BF16", torch::kBFloat16},
    {"INT8", torch::kInt8},
    {"INT16", torch::kInt16},
    {"INT32", torch::kInt32},
    {"INT64", torch::kInt64},
    {"UINT8", torch::kUInt8},
    {"BOOL", torch::kBool},
    {"UINT16", torch::kUInt16},
}};
}  // namespace

torch::ScalarType dtype_from_name(std::string_view name) {
  for (const auto& [n, t] : kTypes) {
    if (n == name) return t;
  }
  throw InvalidInputError("unknown datatype '" + std::string(name) +
                          "' (expected one of FP32, FP64, FP16, BF16, INT8, INT16, INT32, INT64, UINT8, UINT16, BOOL)");
}

std::string dtype_name(torch::ScalarType dtype) {
  for (const auto& [n, t] : kTypes) {
    if (t == dtype) return std::string(n);
  }
  throw InvalidInputError(std::string("dtype ") + c10::toString(dtype) + " has no Open Inference Protocol datatype");
}

}  // namespace torchship

#pragma once
// Typed number codecs of the Open Inference Protocol's JSON tensors: a JSON number or boolean into an
// element of a tensor of any supported dtype (range- and kind-checked), and a tensor's elements back
// into JSON text. Shared by request decoding and response encoding; no HTTP, no model logic.
#include <torch/types.h>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace torchship::serve {

// A JSON number or boolean as the parser hands it over, before it has a dtype.
struct Scalar {
  enum class Kind : uint8_t { Bool, Int, UInt, Float };
  Kind kind = Kind::Int;
  bool b = false;
  int64_t i = 0;
  uint64_t u = 0;
  double d = 0;

  // The value as an int64 in [0, 2^63), for sizes and dimensions; nullopt for anything else.
  std::optional<int64_t> non_negative_int64() const {
    if (kind == Kind::Int && i >= 0) return i;
    if (kind == Kind::UInt && std::in_range<int64_t>(u)) return static_cast<int64_t>(u);
    return std::nullopt;
  }
};

enum class StoreError : uint8_t { None, NotNumber, NotInteger, NotBool, OutOfRange };

using StoreFn = StoreError (*)(void* base, int64_t index, const Scalar& value);

// The element writer for `dtype`; throws InvalidInputError for a dtype JSON cannot carry.
StoreFn store_fn(torch::ScalarType dtype);
std::string describe_store_error(StoreError e, torch::ScalarType dtype);
// Element count of `shape`, or nullopt on overflow.
std::optional<int64_t> checked_numel(const std::vector<int64_t>& shape);
// Appends one number as JSON text (shortest round-trip form); NaN and infinities as null.
template <typename T>
void append_number(std::string& out, T value) {
  char buffer[32];
  if constexpr (std::is_floating_point_v<T>) {
    // JSON has no NaN or infinity; the binary extension carries them exactly.
    if (!std::isfinite(value)) {
      out += "null";
      return;
    }
  }
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  out.append(buffer, result.ptr);
}

// Appends the tensor's elements (contiguous, CPU), comma-separated; NaN and infinities as null.
void append_data(std::string& out, const torch::Tensor& t);

}  // namespace torchship::serve

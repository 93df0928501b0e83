#include "protocol/number_codec.h"

#include <bit>
#include <charconv>
#include <cmath>
#include <limits>

#include "torchship/dtypes.h"
#include "torchship/errors.h"

namespace torchship::serve {

static_assert(std::endian::native == std::endian::little,
              "the binary tensor data extension is little-endian; this host is not");

namespace {

template <typename T>
StoreError store_floating(void* base, int64_t index, const Scalar& v) {
  double d = 0;
  switch (v.kind) {
    case Scalar::Kind::Bool:
      return StoreError::NotNumber;
    case Scalar::Kind::Int:
      d = static_cast<double>(v.i);
      break;
    case Scalar::Kind::UInt:
      d = static_cast<double>(v.u);
      break;
    case Scalar::Kind::Float:
      d = v.d;
      break;
  }
  if (!std::isfinite(d)) return StoreError::OutOfRange;
  if constexpr (std::is_same_v<T, double>) {
    static_cast<double*>(base)[index] = d;
  } else {
    // Out-of-range values would silently become inf: refuse them instead.
    if (std::abs(d) > static_cast<double>(std::numeric_limits<T>::max())) return StoreError::OutOfRange;
    static_cast<T*>(base)[index] = static_cast<T>(static_cast<float>(d));
  }
  return StoreError::None;
}

template <typename T>
StoreError store_integer(void* base, int64_t index, const Scalar& v) {
  switch (v.kind) {
    case Scalar::Kind::Int:
      if (!std::in_range<T>(v.i)) return StoreError::OutOfRange;
      static_cast<T*>(base)[index] = static_cast<T>(v.i);
      return StoreError::None;
    case Scalar::Kind::UInt:
      if (!std::in_range<T>(v.u)) return StoreError::OutOfRange;
      static_cast<T*>(base)[index] = static_cast<T>(v.u);
      return StoreError::None;
    case Scalar::Kind::Float:
      return StoreError::NotInteger;
    case Scalar::Kind::Bool:
      return StoreError::NotInteger;
  }
  return StoreError::NotInteger;
}

StoreError store_bool(void* base, int64_t index, const Scalar& v) {
  if (v.kind != Scalar::Kind::Bool) return StoreError::NotBool;
  static_cast<bool*>(base)[index] = v.b;
  return StoreError::None;
}

template <typename T, typename As = T>
void append_elements(std::string& out, const torch::Tensor& t) {
  const T* data = t.const_data_ptr<T>();
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) {
    if (i) out += ',';
    append_number(out, static_cast<As>(data[i]));
  }
}

}  // namespace

StoreFn store_fn(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat32:
      return store_floating<float>;
    case torch::kFloat64:
      return store_floating<double>;
    case torch::kFloat16:
      return store_floating<c10::Half>;
    case torch::kBFloat16:
      return store_floating<c10::BFloat16>;
    case torch::kInt8:
      return store_integer<int8_t>;
    case torch::kInt16:
      return store_integer<int16_t>;
    case torch::kInt32:
      return store_integer<int32_t>;
    case torch::kInt64:
      return store_integer<int64_t>;
    case torch::kUInt8:
      return store_integer<uint8_t>;
    case torch::kUInt16:
      return store_integer<uint16_t>;
    case torch::kBool:
      return store_bool;
    default:
      throw InvalidInputError("datatype " + dtype_name(dtype) + " cannot be sent as JSON data");
  }
}

std::string describe_store_error(StoreError e, torch::ScalarType dtype) {
  const std::string name = dtype_name(dtype);
  switch (e) {
    case StoreError::NotNumber:
      return "expected a number for " + name;
    case StoreError::NotInteger:
      return "expected an integer for " + name;
    case StoreError::NotBool:
      return "expected true or false for " + name;
    case StoreError::OutOfRange:
      return "value out of range for " + name;
    case StoreError::None:
      break;
  }
  return "bad value";
}

std::optional<int64_t> checked_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (const auto d : shape) {
    if (__builtin_mul_overflow(n, d, &n)) return std::nullopt;
  }
  return n;
}

void append_data(std::string& out, const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat32:
      return append_elements<float>(out, t);
    case torch::kFloat64:
      return append_elements<double>(out, t);
    case torch::kFloat16:
      return append_elements<c10::Half, float>(out, t);
    case torch::kBFloat16:
      return append_elements<c10::BFloat16, float>(out, t);
    case torch::kInt8:
      return append_elements<int8_t, int>(out, t);
    case torch::kInt16:
      return append_elements<int16_t>(out, t);
    case torch::kInt32:
      return append_elements<int32_t>(out, t);
    case torch::kInt64:
      return append_elements<int64_t>(out, t);
    case torch::kUInt8:
      return append_elements<uint8_t, unsigned>(out, t);
    case torch::kUInt16:
      return append_elements<uint16_t>(out, t);
    case torch::kBool: {
      const bool* data = t.const_data_ptr<bool>();
      for (int64_t i = 0; i < t.numel(); ++i) out += i ? (data[i] ? ",true" : ",false") : (data[i] ? "true" : "false");
      return;
    }
    default:
      throw Error(std::string("model output of dtype ") + c10::toString(t.scalar_type()) +
                  " cannot be encoded as JSON");
  }
}

}  // namespace torchship::serve

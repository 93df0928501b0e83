#include "protocol/request.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "json_reader.h"
#include "protocol/number_codec.h"
#include "torchship/dtypes.h"
#include "torchship/errors.h"

namespace torchship::serve {
namespace {

struct PendingInput {
  std::string name;
  bool has_name = false;
  bool has_datatype = false;
  torch::ScalarType dtype = torch::kFloat32;
  bool has_shape = false;
  std::vector<int64_t> shape;
  std::optional<int64_t> binary_data_size;
  bool has_data = false;

  // JSON data goes straight into `tensor` when datatype and shape came before it
  // (the usual order); otherwise it waits in `deferred` until the object closes.
  torch::Tensor tensor;
  void* base = nullptr;
  StoreFn store = nullptr;
  int64_t numel = 0;
  int64_t count = 0;  // elements received
  std::vector<Scalar> deferred;  // at most kMaxDeferred; past it only counted (see Hint)
  bool deferred_overflow = false;
  int leaf_depth = 0;         // depth of the numbers inside `data` (1 = flat); 0 = none seen
  std::vector<int64_t> dims;  // length of the arrays at each depth of `data`, -1 = none closed yet
};

// How an error names an input: by its name once known, else by its position.
std::string input_where(const PendingInput& in, size_t index) {
  return in.has_name ? "input " + echo(in.name) : "inputs[" + std::to_string(index) + "]";
}

// Data that comes before its input's datatype or shape waits as Scalars (32
// bytes each). Beyond this many, the request is parsed a second time with the
// datatype and shape known from the first pass, so memory stays proportional
// to the tensor, not to the JSON.
constexpr size_t kMaxDeferred = size_t{1} << 16;

// What the first pass learned about input i, for the second.
struct Hint {
  bool known = false;
  torch::ScalarType dtype = torch::kFloat32;
  std::vector<int64_t> shape;
};

struct PendingOutput {
  std::string name;
  bool has_name = false;
  std::optional<bool> binary_data;
  std::optional<int64_t> classification;
};

struct Draft {
  std::optional<std::string> id;
  std::vector<PendingInput> inputs;
  std::vector<PendingOutput> outputs;
  bool binary_data_output = false;
};

// A SAX handler for json::Reader (json_reader.h) that builds the request in one pass, without
// a DOM. Returning false stops the parse; error() says why.
class RequestSax {
 public:
  RequestSax(Draft& draft, const ParseLimits& limits, size_t json_bytes, const std::vector<Hint>* hints)
      : draft_(draft), limits_(limits), json_bytes_(static_cast<int64_t>(json_bytes)), hints_(hints) {}

  const std::string& error() const { return error_; }

  bool null() { return scalar_value(Value::Null, nullptr, nullptr); }
  bool boolean(bool v) { return scalar(Value::Bool, {.kind = Scalar::Kind::Bool, .b = v}); }
  bool number_integer(int64_t v) { return scalar(Value::Number, {.kind = Scalar::Kind::Int, .i = v}); }
  bool number_unsigned(uint64_t v) { return scalar(Value::Number, {.kind = Scalar::Kind::UInt, .u = v}); }
  bool number_float(double v) { return scalar(Value::Number, {.kind = Scalar::Kind::Float, .d = v}); }
  bool string(std::string& v) { return scalar_value(Value::String, nullptr, &v); }

  bool start_object() {
    if (stack_.empty()) return push(Ctx::Root);
    Frame& top = stack_.back();
    switch (top.ctx) {
      case Ctx::Skip:
        return push(Ctx::Skip);
      case Ctx::Inputs:
        draft_.inputs.emplace_back();
        return push(Ctx::Input);
      case Ctx::Outputs:
        draft_.outputs.emplace_back();
        return push(Ctx::Output);
      case Ctx::Shape:
        return fail(where_input() + ": 'shape' must be an array of integers");
      case Ctx::Data:
        return fail(where_input() + ": 'data' must hold numbers or booleans, not objects");
      default:
        break;
    }
    switch (top.key) {
      case Key::Parameters:
        if (top.ctx == Ctx::Root) return push(Ctx::RequestParams);
        if (top.ctx == Ctx::Input) return push(Ctx::InputParams);
        if (top.ctx == Ctx::Output) return push(Ctx::OutputParams);
        break;
      case Key::Other:
        return push(Ctx::Skip);
      default:
        break;
    }
    return type_error(top, "an object");
  }

  bool start_array() {
    if (stack_.empty()) return fail("the request body must be a JSON object");
    Frame& top = stack_.back();
    switch (top.ctx) {
      case Ctx::Skip:
        return push(Ctx::Skip);
      case Ctx::Inputs:
      case Ctx::Outputs:
        return fail(std::string("each element of '") + (top.ctx == Ctx::Inputs ? "inputs" : "outputs") +
                    "' must be an object");
      case Ctx::Shape:
        return fail(where_input() + ": 'shape' must be a flat array of integers");
      case Ctx::Data:
        return open_data_array();
      default:
        break;
    }
    switch (top.key) {
      case Key::Inputs:
        if (top.ctx == Ctx::Root) return push(Ctx::Inputs);
        break;
      case Key::Outputs:
        if (top.ctx == Ctx::Root) return push(Ctx::Outputs);
        break;
      case Key::Shape:
        if (top.ctx == Ctx::Input) {
          input().has_shape = true;
          return push(Ctx::Shape);
        }
        break;
      case Key::Data:
        if (top.ctx == Ctx::Input) return begin_data();
        break;
      case Key::Other:
        return push(Ctx::Skip);
      default:
        break;
    }
    return type_error(top, "an array");
  }

  bool key(std::string& k) {
    Frame& top = stack_.back();
    top.key = classify_key(top.ctx, k);
    if (top.key == Key::Other || top.key == Key::None) return true;
    const uint32_t bit = 1u << static_cast<unsigned>(top.key);
    if (top.seen & bit) return fail("duplicate key " + echo(k) + " in " + where(top.ctx));
    top.seen |= bit;
    return true;
  }

  bool end_object() { return leave(); }

  bool end_array() {
    if (stack_.back().ctx == Ctx::Data) return close_data_array();
    return leave();
  }

 private:
  enum class Ctx : uint8_t {
    Root, Inputs, Input, Shape, Data, InputParams, Outputs, Output, OutputParams, RequestParams, Skip
  };
  enum class Key : uint8_t {
    None, Id, Inputs, Outputs, Parameters, Name, Shape, Datatype, Data, BinaryDataSize, BinaryData, BinaryDataOutput,
    Classification, Other
  };
  enum class Value : uint8_t { Null, Bool, Number, String };

  struct Frame {
    Ctx ctx;
    Key key = Key::None;
    uint32_t seen = 0;  // keys already given, to refuse duplicates
  };

  static Key classify_key(Ctx ctx, std::string_view k) {
    switch (ctx) {
      case Ctx::Root:
        if (k == "inputs") return Key::Inputs;
        if (k == "outputs") return Key::Outputs;
        if (k == "id") return Key::Id;
        if (k == "parameters") return Key::Parameters;
        return Key::Other;
      case Ctx::Input:
        if (k == "name") return Key::Name;
        if (k == "shape") return Key::Shape;
        if (k == "datatype") return Key::Datatype;
        if (k == "data") return Key::Data;
        if (k == "parameters") return Key::Parameters;
        return Key::Other;
      case Ctx::Output:
        if (k == "name") return Key::Name;
        if (k == "parameters") return Key::Parameters;
        return Key::Other;
      case Ctx::InputParams:
        return k == "binary_data_size" ? Key::BinaryDataSize : Key::Other;
      case Ctx::OutputParams:
        if (k == "classification") return Key::Classification;
        return k == "binary_data" ? Key::BinaryData : Key::Other;
      case Ctx::RequestParams:
        return k == "binary_data_output" ? Key::BinaryDataOutput : Key::Other;
      default:
        return Key::None;
    }
  }

  bool fail(std::string message) {
    if (error_.empty()) error_ = std::move(message);
    return false;
  }

  bool push(Ctx ctx) {
    stack_.push_back(Frame{ctx});
    return true;
  }

  // Closes an object or a (non-data) array; the value of the parent's key is complete.
  bool leave() {
    stack_.pop_back();
    if (!stack_.empty()) stack_.back().key = Key::None;
    return true;
  }

  PendingInput& input() { return draft_.inputs.back(); }
  PendingOutput& output() { return draft_.outputs.back(); }

  std::string where_input() { return input_where(draft_.inputs.back(), draft_.inputs.size() - 1); }

  std::string where(Ctx ctx) {
    switch (ctx) {
      case Ctx::Root:
        return "the request";
      case Ctx::Input:
        return where_input();
      case Ctx::InputParams:
        return where_input() + " parameters";
      case Ctx::Output:
      case Ctx::OutputParams:
        return "outputs[" + std::to_string(draft_.outputs.size() - 1) + "]";
      case Ctx::RequestParams:
        return "the request's parameters";
      default:
        return "the request";
    }
  }

  static const char* key_name(Key k) {
    switch (k) {
      case Key::Id: return "id";
      case Key::Inputs: return "inputs";
      case Key::Outputs: return "outputs";
      case Key::Parameters: return "parameters";
      case Key::Name: return "name";
      case Key::Shape: return "shape";
      case Key::Datatype: return "datatype";
      case Key::Data: return "data";
      case Key::BinaryDataSize: return "binary_data_size";
      case Key::BinaryData: return "binary_data";
      case Key::Classification: return "classification";
      case Key::BinaryDataOutput: return "binary_data_output";
      default: return "value";
    }
  }

  static const char* expected_type(Key k) {
    switch (k) {
      case Key::Id:
      case Key::Name:
      case Key::Datatype:
        return "a string";
      case Key::Inputs:
      case Key::Outputs:
      case Key::Shape:
      case Key::Data:
        return "an array";
      case Key::Parameters:
        return "an object";
      case Key::BinaryDataSize:
        return "a non-negative integer";
      case Key::Classification:
        return "a positive integer (the number of classes to return)";
      case Key::BinaryData:
      case Key::BinaryDataOutput:
        return "a boolean";
      default:
        return "something else";
    }
  }

  bool type_error(const Frame& top, const char* got) {
    std::string message = "'";
    message += key_name(top.key);
    message += "' in " + where(top.ctx) + " must be ";
    message += expected_type(top.key);
    message += ", not ";
    message += got;
    return fail(std::move(message));
  }

  static const char* value_text(Value v) {
    switch (v) {
      case Value::Null: return "null";
      case Value::Bool: return "a boolean";
      case Value::Number: return "a number";
      case Value::String: return "a string";
    }
    return "a value";
  }

  bool scalar(Value kind, const Scalar& s) { return scalar_value(kind, &s, nullptr); }

  bool scalar_value(Value kind, const Scalar* number, std::string* text) {
    if (stack_.empty()) return fail("the request body must be a JSON object");
    Frame& top = stack_.back();
    switch (top.ctx) {
      case Ctx::Skip:
        return true;
      case Ctx::Inputs:
      case Ctx::Outputs:
        return fail(std::string("each element of '") + (top.ctx == Ctx::Inputs ? "inputs" : "outputs") +
                    "' must be an object, not " + value_text(kind));
      case Ctx::Shape:
        return shape_value(kind, number);
      case Ctx::Data:
        return data_value(kind, number);
      default:
        break;
    }
    // A value inside an object: it belongs to the key just read.
    const Key k = top.key;
    top.key = Key::None;
    switch (k) {
      case Key::Other:
      case Key::None:
        return true;
      case Key::Id:
        if (kind != Value::String) break;
        draft_.id = std::move(*text);
        return true;
      case Key::Name:
        if (kind != Value::String) break;
        if (top.ctx == Ctx::Input) {
          input().name = std::move(*text);
          input().has_name = true;
        } else {
          output().name = std::move(*text);
          output().has_name = true;
        }
        return true;
      case Key::Datatype:
        if (kind != Value::String) break;
        return set_datatype(*text);
      case Key::BinaryDataSize: {
        const auto size = kind == Value::Number ? number->non_negative_int64() : std::nullopt;
        if (!size) break;
        input().binary_data_size = *size;
        return true;
      }
      case Key::BinaryData:
        if (kind != Value::Bool) break;
        output().binary_data = number->b;
        return true;
      case Key::Classification: {
        const auto count = kind == Value::Number ? number->non_negative_int64() : std::nullopt;
        if (!count || *count < 1) break;
        output().classification = *count;
        return true;
      }
      case Key::BinaryDataOutput:
        if (kind != Value::Bool) break;
        draft_.binary_data_output = number->b;
        return true;
      default:
        break;
    }
    top.key = k;
    return type_error(top, value_text(kind));
  }

  bool set_datatype(const std::string& name) {
    auto& in = input();
    if (name == "BYTES") return fail(where_input() + ": datatype BYTES is not supported (models take numeric tensors)");
    try {
      in.dtype = dtype_from_name(name);
    } catch (const InvalidInputError& e) {
      return fail(where_input() + ": " + e.what());  // names the datatype and lists the known ones
    }
    in.has_datatype = true;
    return true;
  }

  bool shape_value(Value kind, const Scalar* number) {
    auto& in = input();
    if (kind != Value::Number || number->kind == Scalar::Kind::Float) {
      return fail(where_input() + ": 'shape' must be an array of integers, found " + value_text(kind));
    }
    const auto dim = number->non_negative_int64();
    if (!dim) return fail(where_input() + ": 'shape' dimensions must be between 0 and 2^63-1");
    if (static_cast<int>(in.shape.size()) >= limits_.max_rank) {
      return fail(where_input() + ": 'shape' has more than " + std::to_string(limits_.max_rank) + " dimensions");
    }
    in.shape.push_back(*dim);
    return true;
  }

  // '[' opening the value of "data".
  bool begin_data() {
    auto& in = input();
    in.has_data = true;
    data_counts_.assign(1, 0);
    const size_t index = draft_.inputs.size() - 1;
    const Hint* hint = nullptr;
    if (hints_ != nullptr && index < hints_->size() && (*hints_)[index].known) hint = &(*hints_)[index];
    if ((in.has_datatype && in.has_shape) || hint != nullptr) {
      const auto dtype = in.has_datatype && in.has_shape ? in.dtype : hint->dtype;
      const auto& shape = in.has_datatype && in.has_shape ? in.shape : hint->shape;
      const auto numel = checked_numel(shape);
      // Each JSON element takes at least two bytes ("1,"): a larger shape cannot be honest.
      if (!numel || *numel > (json_bytes_ + 1) / 2) {
        return fail(where_input() + ": shape " + shape_string(shape) + " has more elements than a " +
                    std::to_string(json_bytes_) + "-byte JSON request can hold");
      }
      try {
        in.store = store_fn(dtype);
      } catch (const InvalidInputError& e) {
        return fail(where_input() + ": " + e.what());
      }
      in.numel = *numel;
      in.tensor = torch::empty(shape, torch::TensorOptions().dtype(dtype));
      in.base = in.tensor.data_ptr();
    }
    return push(Ctx::Data);
  }

  bool open_data_array() {
    auto& in = input();
    if (in.leaf_depth != 0 && data_depth() + 1 > in.leaf_depth) {
      return fail(where_input() + ": 'data' mixes numbers and nested arrays");
    }
    ++data_counts_.back();
    data_counts_.push_back(0);
    return push(Ctx::Data);
  }

  bool close_data_array() {
    auto& in = input();
    const int64_t length = data_counts_.back();
    data_counts_.pop_back();
    const auto level = data_counts_.size();  // the closed array's depth, counted from 0
    if (in.dims.size() <= level) in.dims.resize(level + 1, -1);
    if (in.dims[level] == -1) {
      in.dims[level] = length;
    } else if (in.dims[level] != length) {
      return fail(where_input() + ": nested 'data' is ragged (lists at depth " + std::to_string(level + 1) +
                  " have lengths " + std::to_string(in.dims[level]) + " and " + std::to_string(length) + ")");
    }
    stack_.pop_back();
    if (data_counts_.empty()) stack_.back().key = Key::None;  // back in the input object
    return true;
  }

  bool data_value(Value kind, const Scalar* number) {
    auto& in = input();
    if (kind == Value::String) {
      return fail(where_input() + ": 'data' holds a string; string (BYTES) tensors are not supported");
    }
    if (kind == Value::Null) return fail(where_input() + ": 'data' holds null; expected numbers or booleans");
    if (in.leaf_depth == 0) {
      in.leaf_depth = data_depth();
    } else if (in.leaf_depth != data_depth()) {
      return fail(where_input() + ": 'data' mixes numbers and nested arrays");
    }
    ++data_counts_.back();
    const int64_t index = in.count++;
    if (in.store == nullptr) {
      if (in.deferred.size() < kMaxDeferred) {
        in.deferred.push_back(*number);
      } else {
        in.deferred_overflow = true;  // counted only; a second pass will store it
      }
      return true;
    }
    if (index >= in.numel) {
      return fail(where_input() + ": 'data' has more than the " + std::to_string(in.numel) +
                  " elements of shape " + shape_string(in.shape));
    }
    const StoreError e = in.store(in.base, index, *number);
    if (e != StoreError::None) {
      return fail(where_input() + ": data element " + std::to_string(index) + ": " + describe_store_error(e, in.dtype));
    }
    return true;
  }

  Draft& draft_;
  const ParseLimits& limits_;
  const int64_t json_bytes_;
  const std::vector<Hint>* hints_;
  std::vector<Frame> stack_;
  // Elements seen in each open array of "data"; its size is the nesting depth.
  std::vector<int64_t> data_counts_;
  int data_depth() const { return static_cast<int>(data_counts_.size()); }
  std::string error_;
};

// JSON data that arrived before datatype or shape, or whose count must still be checked.
torch::Tensor finish_json_data(PendingInput& in, size_t index) {
  const auto numel = checked_numel(in.shape);
  if (!numel || in.count != *numel) {
    throw InvalidInputError(input_where(in, index) + ": shape " + shape_string(in.shape) + " needs " +
                            (numel ? std::to_string(*numel) : std::string("too many")) + " elements, 'data' holds " +
                            std::to_string(in.count));
  }
  if (in.leaf_depth > 1) {
    const std::vector<int64_t> nested(in.dims.begin(), in.dims.begin() + in.leaf_depth);
    if (nested != in.shape) {
      throw InvalidInputError(input_where(in, index) + ": nested 'data' has shape " + shape_string(nested) +
                              ", which is not the declared shape " + shape_string(in.shape));
    }
  }
  if (in.store != nullptr) return std::move(in.tensor);
  if (in.deferred.size() != static_cast<size_t>(in.count)) throw Error("internal: deferred JSON data was not kept");
  auto tensor = torch::empty(in.shape, torch::TensorOptions().dtype(in.dtype));
  const StoreFn store = store_fn(in.dtype);
  for (int64_t i = 0; i < in.count; ++i) {
    const StoreError e = store(tensor.data_ptr(), i, in.deferred[static_cast<size_t>(i)]);
    if (e != StoreError::None) {
      throw InvalidInputError(input_where(in, index) + ": data element " + std::to_string(i) + ": " +
                              describe_store_error(e, in.dtype));
    }
  }
  return tensor;
}

}  // namespace

std::string echo(std::string_view s) {
  constexpr size_t kMaxEcho = 80;
  std::string out = "'";
  out.append(s.substr(0, kMaxEcho));
  if (s.size() > kMaxEcho) out += "...";
  out += "'";
  return out;
}

namespace {

// Binary tensor data as a tensor: a view of the body when `owner` keeps the body alive and the data
// starts at an address its kernels may read (a multiple of the element size), else a copy.
torch::Tensor binary_tensor(const char* data, const std::vector<int64_t>& shape, torch::ScalarType dtype,
                            size_t size, const std::shared_ptr<std::string>* owner) {
  const auto options = torch::TensorOptions().dtype(dtype);
  if (owner && reinterpret_cast<uintptr_t>(data) % c10::elementSize(dtype) == 0) {
    // The one copy left is the batcher's gather into the batch (a batch of one reads the body itself).
    return torch::from_blob(const_cast<char*>(data), shape, [keep = *owner](void*) {}, options);
  }
  auto tensor = torch::empty(shape, options);
  if (size) std::memcpy(tensor.data_ptr(), data, size);
  return tensor;
}

InferRequest parse_request(std::string_view body, std::optional<size_t> json_bytes, const ParseLimits& limits,
                           const std::shared_ptr<std::string>* owner) {
  std::string_view json = body;
  std::string_view binary;
  if (json_bytes) {
    if (*json_bytes > body.size()) {
      throw InvalidInputError("Inference-Header-Content-Length is " + std::to_string(*json_bytes) +
                              " but the body has only " + std::to_string(body.size()) + " bytes");
    }
    json = body.substr(0, *json_bytes);
    binary = body.substr(*json_bytes);
  }
  if (json.empty()) throw InvalidInputError("empty request: expected a JSON inference request");

  const auto parse = [&](Draft& draft, const std::vector<Hint>* hints) {
    RequestSax sax(draft, limits, json.size(), hints);
    serve::json::Reader reader(json, sax, limits.max_json_depth);  // the reader bounds nesting
    if (!reader.parse()) {
      if (!reader.error().empty()) throw InvalidInputError("malformed JSON: " + reader.error());
      throw InvalidInputError(sax.error().empty() ? std::string("malformed JSON") : sax.error());
    }
  };
  Draft draft;
  parse(draft, nullptr);
  if (std::any_of(draft.inputs.begin(), draft.inputs.end(), [](const auto& in) {
        return in.deferred_overflow && in.has_datatype && in.has_shape;
      })) {
    std::vector<Hint> hints;
    for (const auto& in : draft.inputs) hints.push_back({in.has_datatype && in.has_shape, in.dtype, in.shape});
    draft = Draft{};
    parse(draft, &hints);
  }
  if (draft.inputs.empty()) throw InvalidInputError("the request has no 'inputs'");

  InferRequest request;
  request.id = std::move(draft.id);
  request.binary_data_output = draft.binary_data_output;
  request.inputs.reserve(draft.inputs.size());
  size_t offset = 0;
  for (size_t i = 0; i < draft.inputs.size(); ++i) {
    auto& in = draft.inputs[i];
    const auto where = [&] { return input_where(in, i); };  // built only for an error
    if (!in.has_name) throw InvalidInputError(where() + " has no 'name'");
    if (!in.has_datatype) throw InvalidInputError(where() + " has no 'datatype'");
    if (!in.has_shape) throw InvalidInputError(where() + " has no 'shape'");
    if (in.has_data && in.binary_data_size) {
      throw InvalidInputError(where() + " has both 'data' and parameters.binary_data_size; give one");
    }
    torch::Tensor tensor;
    if (in.binary_data_size) {
      if (!json_bytes) {
        throw InvalidInputError(where() +
                                " has parameters.binary_data_size but the request has no "
                                "Inference-Header-Content-Length header");
      }
      const auto numel = checked_numel(in.shape);
      const int64_t element_size = static_cast<int64_t>(c10::elementSize(in.dtype));
      int64_t expected = 0;
      if (!numel || __builtin_mul_overflow(*numel, element_size, &expected) || expected != *in.binary_data_size) {
        throw InvalidInputError(where() + ": binary_data_size is " + std::to_string(*in.binary_data_size) +
                                " bytes, but shape " + shape_string(in.shape) + " of " + dtype_name(in.dtype) +
                                " needs " + (numel ? std::to_string(expected) : std::string("more")) + " bytes");
      }
      const auto size = static_cast<size_t>(expected);
      if (size > binary.size() - offset) {
        throw InvalidInputError(where() + ": its " + std::to_string(size) + " bytes of binary data run past the end " +
                                "of the body (" + std::to_string(binary.size() - offset) + " bytes left)");
      }
      tensor = binary_tensor(binary.data() + offset, in.shape, in.dtype, size, owner);
      offset += size;
    } else if (in.has_data) {
      tensor = finish_json_data(in, i);
    } else {
      throw InvalidInputError(where() + " has no 'data' (or parameters.binary_data_size)");
    }
    request.inputs.emplace_back(std::move(in.name), std::move(tensor));
  }
  if (offset != binary.size()) {
    throw InvalidInputError("the body holds " + std::to_string(binary.size()) +
                            " bytes after the JSON header, but the inputs' binary_data_size add up to " +
                            std::to_string(offset));
  }
  for (size_t i = 0; i < draft.outputs.size(); ++i) {
    auto& out = draft.outputs[i];
    if (!out.has_name) throw InvalidInputError("outputs[" + std::to_string(i) + "] has no 'name'");
    request.outputs.push_back({std::move(out.name), out.binary_data, out.classification});
  }
  return request;
}

}  // namespace

InferRequest parse_infer_request(std::string_view body, std::optional<size_t> json_bytes, const ParseLimits& limits) {
  return parse_request(body, json_bytes, limits, nullptr);
}

InferRequest parse_infer_request(const std::shared_ptr<std::string>& body, std::optional<size_t> json_bytes,
                                 const ParseLimits& limits) {
  return parse_request(*body, json_bytes, limits, &body);
}

}  // namespace torchship::serve

// Run: ctest --test-dir build/native -R Protocol
//
// The Open Inference Protocol codec without HTTP: requests decoded into
// tensors (JSON flat and nested, binary extension), every malformed shape of
// request refused with a message that names the problem, responses encoded.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <string>

#include "http_api.h"
#include "protocol.h"
#include "torchship/errors.h"

namespace torchship::serve {
namespace {

ModelConfig two_output_config() {
  return ModelConfig::from_json(nlohmann::json::parse(R"({
    "name": "m", "max_batch_size": 8,
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
    "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 2]},
                {"name": "label", "datatype": "INT64", "shape": [-1]}]})"));
}

// Expects InvalidInputError whose message contains `fragment`.
void expect_invalid(const std::string& body, const std::string& fragment, std::optional<size_t> json_bytes = {}) {
  try {
    parse_infer_request(body, json_bytes);
    FAIL() << "accepted: " << body.substr(0, 200);
  } catch (const InvalidInputError& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << "message: " << e.what();
  }
}

TEST(Protocol, FlatAndNestedJsonGiveTheSameTensor) {
  const auto flat = parse_infer_request(
      R"({"id":"a","inputs":[{"name":"x","shape":[2,3],"datatype":"FP32","data":[1,2,3,4,5,6.5]}]})", {});
  const auto nested = parse_infer_request(
      R"({"inputs":[{"name":"x","shape":[2,3],"datatype":"FP32","data":[[1,2,3],[4,5,6.5]]}]})", {});
  ASSERT_EQ(flat.inputs.size(), 1u);
  EXPECT_EQ(flat.id, "a");
  EXPECT_FALSE(nested.id);
  const auto expected = torch::tensor({1.f, 2.f, 3.f, 4.f, 5.f, 6.5f}).view({2, 3});
  EXPECT_TRUE(torch::equal(flat.inputs[0].second, expected));
  EXPECT_TRUE(torch::equal(nested.inputs[0].second, expected));
  EXPECT_EQ(flat.inputs[0].second.scalar_type(), torch::kFloat32);
}

TEST(Protocol, DataBeforeShapeAndDatatypeIsAccepted) {
  const auto r = parse_infer_request(R"({"inputs":[{"data":[[7],[8]],"name":"t","datatype":"INT64","shape":[2,1]}]})", {});
  EXPECT_TRUE(torch::equal(r.inputs[0].second, torch::tensor({int64_t{7}, int64_t{8}}).view({2, 1})));
}

TEST(Protocol, LargeDataBeforeShapeTakesASecondPass) {
  // More elements than the first pass keeps aside: parsed again with datatype and shape known.
  const int n = 70000;
  std::string data;
  for (int i = 0; i < n; ++i) data += (i ? "," : "") + std::to_string(i % 1000);
  const auto r = parse_infer_request(
      R"({"inputs":[{"data":[)" + data + R"(],"name":"x","shape":[)" + std::to_string(n) + R"(],"datatype":"INT32"}]})", {});
  const auto& t = r.inputs[0].second;
  ASSERT_EQ(t.numel(), n);
  EXPECT_EQ(t.scalar_type(), torch::kInt32);
  EXPECT_EQ(t[69999].item<int32_t>(), 999);
  EXPECT_EQ(t.sum().item<int64_t>(), int64_t{70} * (999 * 1000 / 2));
  expect_invalid(R"({"inputs":[{"data":[)" + data + R"(],"name":"x","shape":[3],"datatype":"INT32"}]})",
                 "more than the 3 elements");
}

TEST(Protocol, EveryDatatypeDecodes) {
  const std::pair<const char*, torch::ScalarType> types[] = {
      {"FP32", torch::kFloat32}, {"FP64", torch::kFloat64}, {"FP16", torch::kFloat16}, {"BF16", torch::kBFloat16},
      {"INT8", torch::kInt8},    {"INT16", torch::kInt16},  {"INT32", torch::kInt32},  {"INT64", torch::kInt64},
      {"UINT8", torch::kUInt8},  {"UINT16", torch::kUInt16}};
  for (const auto& [name, dtype] : types) {
    const auto r = parse_infer_request(
        std::string(R"({"inputs":[{"name":"x","shape":[3],"datatype":")") + name + R"(","data":[1,2,3]}]})", {});
    EXPECT_EQ(r.inputs[0].second.scalar_type(), dtype) << name;
    EXPECT_TRUE(torch::equal(r.inputs[0].second.to(torch::kInt64), torch::tensor({1, 2, 3}, torch::kInt64))) << name;
  }
  const auto b = parse_infer_request(R"({"inputs":[{"name":"x","shape":[2],"datatype":"BOOL","data":[true,false]}]})", {});
  EXPECT_TRUE(b.inputs[0].second[0].item<bool>());
  EXPECT_FALSE(b.inputs[0].second[1].item<bool>());
}

TEST(Protocol, MalformedRequestsNameTheProblem) {
  expect_invalid("", "empty request");
  expect_invalid("{", "malformed JSON");
  expect_invalid(R"({"inputs":[]} trailing)", "malformed JSON");
  expect_invalid("[1,2]", "must be a JSON object");
  expect_invalid("42", "must be a JSON object");
  expect_invalid("{}", "no 'inputs'");
  expect_invalid(R"({"inputs":{}})", "'inputs' in the request must be an array");
  expect_invalid(R"({"inputs":[1]})", "each element of 'inputs' must be an object");
  expect_invalid(R"({"inputs":[{"shape":[1],"datatype":"FP32","data":[1]}]})", "inputs[0] has no 'name'");
  expect_invalid(R"({"inputs":[{"name":"x","datatype":"FP32","data":[1]}]})", "input 'x' has no 'shape'");
  expect_invalid(R"({"inputs":[{"name":"x","shape":[1],"data":[1]}]})", "input 'x' has no 'datatype'");
  expect_invalid(R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP32"}]})", "input 'x' has no 'data'");
  expect_invalid(R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP99","data":[1]}]})", "unknown datatype 'FP99'");
  expect_invalid(R"({"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","data":["a"]}]})", "BYTES is not supported");
  expect_invalid(R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":["a"]}]})", "holds a string");
  expect_invalid(R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[null]}]})", "holds null");
  expect_invalid(R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[true]}]})", "expected a number for FP32");
  expect_invalid(R"({"inputs":[{"name":"x","shape":[1],"datatype":"INT32","data":[1.5]}]})",
                 "expected an integer for INT32");
  expect_invalid(R"({"inputs":[{"name":"x","shape":[1],"datatype":"BOOL","data":[1]}]})", "expected true or false");
  expect_invalid(R"({"inputs":[{"name":"x","shape":[1],"datatype":"INT8","data":[300]}]})", "out of range for INT8");
  expect_invalid(R"({"inputs":[{"name":"x","shape":[1],"datatype":"UINT8","data":[-1]}]})", "out of range for UINT8");
  expect_invalid(R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1e39]}]})", "out of range for FP32");
  expect_invalid(R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP16","data":[70000]}]})", "out of range for FP16");
  expect_invalid(R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP64","data":[1e999]}]})", "malformed JSON");
  expect_invalid(R"({"inputs":[{"name":"x","shape":[-1],"datatype":"FP32","data":[1]}]})", "dimensions must be");
  expect_invalid(R"({"inputs":[{"name":"x","shape":[1.5],"datatype":"FP32","data":[1]}]})", "array of integers");
  expect_invalid(R"({"inputs":[{"name":"x","shape":"1","datatype":"FP32","data":[1]}]})", "must be an array");
  expect_invalid(R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":5}]})",
                 "'data' in input 'x' must be an array, not a number");
  expect_invalid(R"({"inputs":[{"name":7,"shape":[1],"datatype":"FP32","data":[1]}]})", "must be a string");
  expect_invalid(R"({"id":5,"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]})",
                 "'id' in the request must be a string");
  expect_invalid(R"({"inputs":[{"name":"x","name":"y","shape":[1],"datatype":"FP32","data":[1]}]})", "duplicate key");
}

TEST(Protocol, ShapeAndDataMustAgree) {
  expect_invalid(R"({"inputs":[{"name":"x","shape":[2,3],"datatype":"FP32","data":[1,2,3,4,5]}]})",
                 "shape [2, 3] needs 6 elements, 'data' holds 5");
  expect_invalid(R"({"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2,3]}]})",
                 "more than the 2 elements");
  expect_invalid(R"({"inputs":[{"name":"x","shape":[2,3],"datatype":"FP32","data":[[1,2],[3,4],[5,6]]}]})",
                 "nested 'data' has shape [3, 2], which is not the declared shape [2, 3]");
  expect_invalid(R"({"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3]]}]})", "ragged");
  expect_invalid(R"({"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],3,4]}]})",
                 "mixes numbers and nested arrays");
  expect_invalid(R"({"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,[2,3],4]}]})",
                 "mixes numbers and nested arrays");
  // A shape no honest body could fill is refused before anything is allocated.
  expect_invalid(R"({"inputs":[{"name":"x","shape":[1000000000,1000000000],"datatype":"FP32","data":[1]}]})",
                 "more elements than");
  expect_invalid(R"({"inputs":[{"name":"x","shape":[9223372036854775807,4],"datatype":"FP32","data":[1]}]})",
                 "more elements than");
}

TEST(Protocol, DepthIsBounded) {
  std::string deep = R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],"junk":)";
  for (int i = 0; i < 100; ++i) deep += "[";
  for (int i = 0; i < 100; ++i) deep += "]";
  deep += "}";
  expect_invalid(deep, "nested deeper than 32");
  std::string ok = R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],"junk":[[[{"a":[1]}]]]})";
  EXPECT_EQ(parse_infer_request(ok, {}).inputs.size(), 1u);  // unknown keys are skipped
}

TEST(Protocol, BinaryInputs) {
  const std::string header =
      R"({"inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}},)"
      R"({"name":"b","shape":[1],"datatype":"INT64","data":[9]},)"
      R"({"name":"c","shape":[3],"datatype":"UINT8","parameters":{"binary_data_size":3}}]})";
  const float a[2] = {1.5f, -2.0f};
  std::string body = header;
  body.append(reinterpret_cast<const char*>(a), sizeof(a));
  body += std::string("\x01\x02\xff", 3);
  const auto r = parse_infer_request(body, header.size());
  ASSERT_EQ(r.inputs.size(), 3u);
  EXPECT_TRUE(torch::equal(r.inputs[0].second, torch::tensor({1.5f, -2.0f})));
  EXPECT_EQ(r.inputs[1].second.item<int64_t>(), 9);
  EXPECT_EQ(r.inputs[2].second[2].item<uint8_t>(), 255);

  expect_invalid(header, "no Inference-Header-Content-Length header");         // binary sizes without the header
  expect_invalid(body, "but the body has only", body.size() + 1);                // header past the body
  expect_invalid(body, "malformed JSON", header.size() + 2);                     // header cuts into the binary part
  expect_invalid(body + "x", "add up to 11", header.size());                     // bytes left over
  expect_invalid(body.substr(0, body.size() - 1), "run past the end", header.size());
  std::string wrong = R"({"inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":7}}]})";
  expect_invalid(wrong + std::string(7, '\0'), "binary_data_size is 7 bytes, but shape [2] of FP32 needs 8", wrong.size());
  std::string both = R"({"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":[1],"parameters":{"binary_data_size":4}}]})";
  expect_invalid(both + std::string(4, '\0'), "both 'data' and", both.size());
  EXPECT_THROW(parse_header_length("12x"), InvalidInputError);
  EXPECT_THROW(parse_header_length("-1"), InvalidInputError);
  EXPECT_EQ(parse_header_length("42"), 42u);
}

// With the body shared, binary data aligned to its element size is read in place (the tensor keeps the
// body alive); misaligned data, which kernels must not read, is copied. Values are the same either way.
TEST(Protocol, BinaryDataReadInPlaceWhenAligned) {
  const float values[3] = {1.5f, -2.0f, 3.25f};
  for (size_t pad = 0; pad < 4; ++pad) {
    const std::string header =
        R"({"inputs":[{"name":"a","shape":[3],"datatype":"FP32","parameters":{"binary_data_size":12}}]})" +
        std::string(pad, ' ');
    auto body = std::make_shared<std::string>(header);
    body->append(reinterpret_cast<const char*>(values), sizeof(values));
    const char* data = body->data() + header.size();
    auto r = parse_infer_request(body, header.size());
    const bool aligned = reinterpret_cast<uintptr_t>(data) % sizeof(float) == 0;
    const auto tensor = r.inputs.at(0).second;
    EXPECT_EQ(tensor.data_ptr() == static_cast<const void*>(data), aligned) << "pad " << pad;
    body.reset();  // the request's own reference is gone: a view must keep the bytes alive
    EXPECT_TRUE(torch::equal(tensor, torch::tensor({1.5f, -2.0f, 3.25f}))) << "pad " << pad;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(tensor.data_ptr()) % sizeof(float), 0u);
  }
}

TEST(Protocol, OutputSelection) {
  const auto config = two_output_config();
  auto r = parse_infer_request(
      R"({"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2,3]}],)"
      R"("outputs":[{"name":"label"},{"name":"logits","parameters":{"binary_data":true}}]})",
      {});
  const auto s = select_outputs(config, r);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].index, 1u);
  EXPECT_FALSE(s[0].binary);
  EXPECT_EQ(s[1].index, 0u);
  EXPECT_TRUE(s[1].binary);

  r.outputs = {{"nope", {}}};
  EXPECT_THROW(select_outputs(config, r), InvalidInputError);
  r.outputs = {{"label", {}}, {"label", {}}};
  EXPECT_THROW(select_outputs(config, r), InvalidInputError);
  r.outputs.clear();
  r.binary_data_output = true;
  const auto all = select_outputs(config, r);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_TRUE(all[0].binary && all[1].binary);
}

TEST(Protocol, EncodesJsonAndBinaryOutputs) {
  const auto config = two_output_config();
  const std::vector<torch::Tensor> outputs{torch::tensor({0.1f, -2.5f}).view({1, 2}), torch::tensor({int64_t{1}})};
  const auto json_only = encode_infer_response(config, "3", std::string("req\"1"), {{0, false}, {1, false}}, outputs);
  EXPECT_FALSE(json_only.json_bytes);
  const auto doc = nlohmann::json::parse(json_only.body);
  EXPECT_EQ(doc["model_name"], "m");
  EXPECT_EQ(doc["model_version"], "3");
  EXPECT_EQ(doc["id"], "req\"1");
  EXPECT_EQ(doc["outputs"][0]["datatype"], "FP32");
  EXPECT_EQ(doc["outputs"][0]["shape"], nlohmann::json::parse("[1,2]"));
  // Shortest round-trip text: the float parsed back is the same float.
  EXPECT_EQ(doc["outputs"][0]["data"][0].get<double>(), 0.1);
  EXPECT_EQ(static_cast<float>(doc["outputs"][0]["data"][0].get<double>()), 0.1f);
  EXPECT_EQ(doc["outputs"][1]["data"], nlohmann::json::parse("[1]"));

  const auto mixed = encode_infer_response(config, "3", std::nullopt, {{0, true}, {1, false}}, outputs);
  ASSERT_TRUE(mixed.json_bytes);
  const auto header = nlohmann::json::parse(mixed.body.substr(0, *mixed.json_bytes));
  EXPECT_FALSE(header.contains("id"));
  EXPECT_EQ(header["outputs"][0]["parameters"]["binary_data_size"], 8);
  EXPECT_FALSE(header["outputs"][0].contains("data"));
  ASSERT_EQ(mixed.body.size(), *mixed.json_bytes + 8);
  float back[2];
  std::memcpy(back, mixed.body.data() + *mixed.json_bytes, sizeof(back));
  EXPECT_EQ(back[0], 0.1f);
  EXPECT_EQ(back[1], -2.5f);
}

TEST(Protocol, NonFiniteOutputsAreNullInJson) {
  const auto config = two_output_config();
  const std::vector<torch::Tensor> outputs{torch::tensor({NAN, INFINITY}).view({1, 2}), torch::tensor({int64_t{1}})};
  const auto r = encode_infer_response(config, "1", std::nullopt, {{0, false}}, outputs);
  EXPECT_EQ(nlohmann::json::parse(r.body)["outputs"][0]["data"], nlohmann::json::parse("[null,null]"));
}

}  // namespace
}  // namespace torchship::serve

// Run: ctest --test-dir build/<tag> -R ModelConfig   (or: make test)
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "torchship/device.h"
#include "torchship/dtypes.h"
#include "torchship/errors.h"
#include "torchship/model_config.h"
#include "torchship/repository.h"

using namespace torchship;

namespace {

ModelConfig image_config() {
  return ModelConfig::from_json(nlohmann::json::parse(R"({
    "name": "net", "max_batch_size": 4,
    "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 3, 32, 32]}],
    "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 2]}],
    "dynamic_batching": {"max_queue_delay_microseconds": 500, "max_queue_size": 7},
    "instance_group": {"count": 2}
  })"));
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const InvalidInputError& e) {
    return e.what();
  }
  return "(no InvalidInputError)";
}

}  // namespace

TEST(ModelConfig, ParsesTheRepositoryContract) {
  const auto c = image_config();
  EXPECT_EQ(c.name, "net");
  EXPECT_EQ(c.max_batch_size, 4);
  EXPECT_EQ(c.inputs.at(0).shape, (std::vector<int64_t>{-1, 3, 32, 32}));
  EXPECT_EQ(c.max_queue_delay.count(), 500);
  EXPECT_EQ(c.max_queue_size, 7);
  EXPECT_EQ(c.instance_count, 2);
  EXPECT_EQ(c.input_index("image"), 0);
  EXPECT_EQ(c.input_index("nope"), -1);
}

TEST(ModelConfig, RejectsShapesWithoutABatchDimension) {
  EXPECT_THROW(ModelConfig::from_json(nlohmann::json::parse(R"({
    "name": "x", "max_batch_size": 1,
    "inputs": [{"name": "a", "datatype": "FP32", "shape": [3]}],
    "outputs": [{"name": "b", "datatype": "FP32", "shape": [-1]}]})")),
               std::invalid_argument);
}

TEST(ModelConfig, FilesItNamesStayInTheVersionDirectory) {
  for (const char* ok : {"model.pt", "preprocess.pt", "model.int8.pt", "..model.pt"}) {
    EXPECT_TRUE(is_version_file_name(ok)) << ok;
  }
  for (const char* bad : {"", ".", "..", "../model.pt", "sub/model.pt", "/etc/passwd", "model.pt/"}) {
    EXPECT_FALSE(is_version_file_name(bad)) << bad;
  }
}

TEST(Validation, AcceptsAMatchingBatch) {
  EXPECT_NO_THROW(validate_inputs(image_config(), {torch::zeros({3, 3, 32, 32})}));
}

TEST(Validation, NamesInputExpectedAndReceived) {
  const auto c = image_config();
  EXPECT_EQ(error_of([&] { validate_inputs(c, {torch::zeros({1, 3, 32, 31})}); }),
            "input 'image' of model 'net': expected shape [-1, 3, 32, 32], received [1, 3, 32, 31]");
  EXPECT_EQ(error_of([&] { validate_inputs(c, {torch::zeros({1, 3, 32})}); }),
            "input 'image' of model 'net': expected shape [-1, 3, 32, 32] (rank 4), received [1, 3, 32]");
  EXPECT_EQ(error_of([&] { validate_inputs(c, {torch::zeros({1, 3, 32, 32}, torch::kInt64)}); }),
            "input 'image' of model 'net': expected datatype FP32, received Long");
  EXPECT_EQ(error_of([&] { validate_inputs(c, {torch::zeros({5, 3, 32, 32})}); }),
            "input 'image' of model 'net': batch size 5 is outside 1..4 (max_batch_size)");
  EXPECT_EQ(error_of([&] { validate_inputs(c, {}); }), "model 'net' takes 1 input(s), received 0");
}

TEST(Validation, KeepsMultiplesAndMinimumsOfDynamicDimensions) {
  const auto c = ModelConfig::from_json(nlohmann::json::parse(R"({
    "name": "unet", "max_batch_size": 2,
    "inputs": [{"name": "ct", "datatype": "FP32", "shape": [-1, 8, -1, -1],
                "multiple_of": [1, 1, 8, 8], "min_shape": [1, 8, 16, 8]}],
    "outputs": [{"name": "mask", "datatype": "FP32", "shape": [-1, 1, -1, -1]}]})"));
  EXPECT_NO_THROW(validate_inputs(c, {torch::zeros({2, 8, 16, 40})}));
  EXPECT_EQ(error_of([&] { validate_inputs(c, {torch::zeros({1, 8, 36, 40})}); }),
            "input 'ct' of model 'unet': dimension 2 is 36 in shape [1, 8, 36, 40]; this model takes multiples of 8 "
            "there (multiple_of [1, 1, 8, 8])");
  EXPECT_EQ(error_of([&] { validate_inputs(c, {torch::zeros({1, 8, 8, 8})}); }),
            "input 'ct' of model 'unet': dimension 2 is 8 in shape [1, 8, 8, 8]; this model takes at least 16 there "
            "(min_shape [1, 8, 16, 8])");
  EXPECT_THROW(ModelConfig::from_json(nlohmann::json::parse(R"({
    "name": "x", "max_batch_size": 1,
    "inputs": [{"name": "a", "datatype": "FP32", "shape": [-1, -1], "multiple_of": [1, 0]}],
    "outputs": [{"name": "b", "datatype": "FP32", "shape": [-1]}]})")),
               std::invalid_argument);
}

TEST(Dtypes, RoundTripAndUnknownNames) {
  EXPECT_EQ(dtype_from_name("INT64"), torch::kInt64);
  EXPECT_EQ(dtype_name(torch::kFloat32), "FP32");
  EXPECT_THROW(dtype_from_name("FP8"), InvalidInputError);
}

TEST(Repository, NamesCannotEscapeTheRoot) {
  EXPECT_TRUE(valid_model_name("resnet18"));
  EXPECT_TRUE(valid_model_name("net_v2.1"));
  EXPECT_FALSE(valid_model_name(".."));
  EXPECT_FALSE(valid_model_name("../etc"));
  EXPECT_FALSE(valid_model_name("a/b"));
  EXPECT_FALSE(valid_model_name(""));
  EXPECT_TRUE(valid_version("12"));
  EXPECT_FALSE(valid_version("1a"));
  EXPECT_FALSE(valid_version(""));
}

TEST(ProcessSettings, ServerThreadsDefaultToOneOnCudaOnly) {
  EXPECT_EQ(server_intra_op_threads(0, torch::Device(torch::kCUDA, 0)), 1);
  EXPECT_EQ(server_intra_op_threads(0, torch::kCPU), 0);  // torch's default
  EXPECT_EQ(server_intra_op_threads(3, torch::Device(torch::kCUDA, 0)), 3);
  EXPECT_EQ(server_intra_op_threads(3, torch::kCPU), 3);
}

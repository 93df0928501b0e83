// Variant selection (docs/variants.md): exact matches, conversion at load, refusals that name what exists.
#include <gtest/gtest.h>

#include <unistd.h>

#include <fstream>

#include "torchship/errors.h"
#include "torchship/op_libraries.h"
#include "torchship/variants.h"

namespace torchship {
namespace {
namespace fs = std::filesystem;

class VariantsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("torchship_variants_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    for (const char* f : {"model.pt", "model.pt2", "model.bf16-cl.pt2", "model.int8.pt", "model.onnx"}) {
      std::ofstream(dir_ / f) << "x";
    }
  }
  void TearDown() override { fs::remove_all(dir_); }

  nlohmann::json config() const {
    return nlohmann::json::parse(R"({"variants": [
      {"file": "model.pt", "format": "torchscript", "device": "any", "precision": "fp32", "layout": "contiguous"},
      {"file": "model.pt2", "format": "pt2", "device": "cpu", "precision": "fp32", "layout": "contiguous"},
      {"file": "model.bf16-cl.pt2", "format": "pt2", "device": "cpu", "precision": "bf16", "layout": "channels_last"},
      {"file": "model.int8.pt", "format": "torchscript", "device": "cpu", "precision": "int8"},
      {"file": "model.onnx", "format": "onnx", "device": "cpu"}]})");
  }

  VariantChoice choose(const std::string& format, const std::string& precision, bool channels_last,
                       torch::Device device = torch::kCPU) const {
    return choose_variant(list_variants(config(), dir_), {format, device, precision, channels_last}, dir_);
  }

  fs::path dir_;
};

TEST_F(VariantsTest, AutoPrefersTorchScriptAndTakesExactMatches) {
  EXPECT_EQ(choose("auto", "fp32", false).variant.file, "model.pt");
  EXPECT_EQ(choose("pt2", "fp32", false).variant.file, "model.pt2");
  const auto bf16 = choose("auto", "bf16", true);
  EXPECT_EQ(bf16.variant.file, "model.bf16-cl.pt2");  // exported: preferred to a conversion
  EXPECT_FALSE(bf16.converted());
  EXPECT_EQ(choose("auto", "int8", false).variant.file, "model.int8.pt");
  EXPECT_EQ(choose("auto", "exported", false).variant.file, "model.pt");  // the older name of fp32
}

TEST_F(VariantsTest, TorchScriptFp32IsConvertedAtLoadWhenNothingMatches) {
  const auto fp16 = choose("auto", "fp16", false);
  EXPECT_EQ(fp16.variant.file, "model.pt");
  ASSERT_TRUE(fp16.convert_to.has_value());
  EXPECT_EQ(*fp16.convert_to, torch::kFloat16);
  EXPECT_EQ(fp16.run_precision(), "fp16");
  EXPECT_NE(fp16.describe().find("converted at load to fp16"), std::string::npos);
  const auto cl = choose("torchscript", "bf16", true);  // TorchScript asked for: not the .pt2 variant
  EXPECT_EQ(cl.variant.file, "model.pt");
  EXPECT_TRUE(cl.convert_channels_last);
}

TEST_F(VariantsTest, AbsentVariantsAreRefusedNamingWhatExists) {
  try {
    choose("pt2", "int8", false);  // int8 exists only as TorchScript, and is never made at load
    FAIL() << "expected LoadError";
  } catch (const LoadError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("precision int8"), std::string::npos) << what;
    EXPECT_NE(what.find("torchscript cpu int8 contiguous (model.int8.pt)"), std::string::npos) << what;
    EXPECT_NE(what.find("--precision"), std::string::npos) << what;
  }
  EXPECT_THROW(choose("pt2", "fp16", false), LoadError);  // a .pt2 is never converted
  EXPECT_THROW(choose("auto", "int8", false, torch::Device("cuda:0")), LoadError);  // the int8 variant is CPU's
  EXPECT_THROW(choose("onnx", "fp32", false), LoadError);  // ONNX runs in Python only
  EXPECT_THROW(choose("auto", "fp8", false), InvalidInputError);
}

TEST_F(VariantsTest, OldRepositoriesGetVariantsFromTheirFiles) {
  const auto variants = list_variants(nlohmann::json::object(), dir_);
  ASSERT_EQ(variants.size(), 3u);  // model.pt, model.pt2, model.onnx; no model.cuda.pt2 here
  EXPECT_EQ(choose_variant(variants, {"auto", torch::kCPU, "fp32", false}, dir_).variant.file, "model.pt");
  EXPECT_EQ(choose_variant(variants, {"auto", torch::Device("cuda:0"), "fp32", false}, dir_).variant.file, "model.pt");
}

TEST_F(VariantsTest, MalformedEntriesAndMissingFilesAreLoadErrors) {
  const auto bad = [&](const char* entry) {
    const auto doc = nlohmann::json::parse(std::string(R"({"variants": [)") + entry + "]}");
    return list_variants(doc, dir_);
  };
  EXPECT_THROW(bad(R"({"format": "pt2"})"), LoadError);                            // no file
  EXPECT_THROW(bad(R"({"file": "../model.pt", "format": "torchscript"})"), LoadError);  // out of the version
  EXPECT_THROW(bad(R"({"file": "model.pt", "format": "tflite"})"), LoadError);
  EXPECT_THROW(bad(R"({"file": "model.pt", "format": "torchscript", "precision": "fp8"})"), LoadError);
  EXPECT_THROW(bad(R"({"file": "model.pt", "format": "torchscript", "layout": "nhwc"})"), LoadError);
  const auto listed = bad(R"({"file": "model.fp16.pt2", "format": "pt2", "device": "cpu", "precision": "fp16"})");
  EXPECT_THROW(choose_variant(listed, {"auto", torch::kCPU, "fp16", false}, dir_), LoadError);  // file missing
}

TEST(OpLibraries, UnknownOperatorsAreNamedWithTheFlagThatLoadsThem) {
  const auto hint = unknown_operator_hint("Unknown builtin op: torchvision::nms.\nCould not find any similar ops");
  EXPECT_NE(hint.find("'torchvision::nms'"), std::string::npos) << hint;
  EXPECT_NE(hint.find("--extra-library"), std::string::npos) << hint;
  EXPECT_NE(unknown_operator_hint("Could not find schema for myops::fancy_relu").find("'myops::fancy_relu'"),
            std::string::npos);
  EXPECT_EQ(unknown_operator_hint("shape mismatch"), "");
  EXPECT_THROW(load_op_library("/nonexistent/libops.so"), LoadError);
}

}  // namespace
}  // namespace torchship

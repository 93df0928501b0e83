#pragma once
// The artifacts of one model version and how one is chosen (docs/variants.md): by format, device,
// compute precision and layout. config.json lists them under "variants"; a repository exported
// before that key existed gets the list derived from the files present.
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace torchship {

// Artifact formats, named as config.json and the flags name them. ONNX is listed (export writes
// it, parity runs it in ONNX Runtime) but the C++ runtime never loads it.
enum class Format { TorchScript, Pt2, Onnx };

Format parse_format(const std::string& name);  // throws InvalidInputError naming the choices
std::string format_name(Format format);

// Compute precisions a variant can have; the first is what an unset --precision means.
inline constexpr const char* kPrecisions[] = {"fp32", "fp16", "bf16", "int8"};
// "fp32", "fp16", "bf16", "int8"; "exported" is accepted as the older name of fp32.
// Throws InvalidInputError naming the choices.
std::string parse_precision(const std::string& name);

struct Variant {
  std::string file;  // relative to the version directory
  Format format = Format::TorchScript;
  std::string device = "any";  // "cpu", "cuda" or "any"
  std::string precision = "fp32";
  bool channels_last = false;
  std::string describe() const;  // "pt2 cpu bf16 channels_last (model.bf16-cl.pt2)"
};

// What the caller asks for: --format, --device, --precision, --channels-last.
struct VariantRequest {
  std::string format = "auto";  // "auto", "torchscript" or "pt2"
  torch::Device device = torch::kCPU;
  std::string precision = "fp32";
  bool channels_last = false;
};

struct VariantChoice {
  Variant variant;
  std::filesystem::path file;  // the artifact's path
  // Set when the variant is TorchScript fp32 and the request is converted at load (weights cast
  // once, inputs per batch, outputs back): the precision to run in, and the layout.
  std::optional<torch::ScalarType> convert_to;
  bool convert_channels_last = false;
  bool converted() const { return convert_to.has_value() || convert_channels_last; }
  std::string run_precision() const;  // the variant's, or the one it is converted to
  bool run_channels_last() const { return variant.channels_last || convert_channels_last; }
  std::string describe() const;
};

// config["variants"], or the list derived from the files in `version_dir`. Throws LoadError for a
// malformed entry, naming it.
std::vector<Variant> list_variants(const nlohmann::json& config, const std::filesystem::path& version_dir);

// The variant that serves `request`, by the rules of docs/variants.md; throws LoadError naming
// what was asked for, what the version holds and the flags that choose.
VariantChoice choose_variant(const std::vector<Variant>& variants, const VariantRequest& request,
                             const std::filesystem::path& version_dir);

}  // namespace torchship

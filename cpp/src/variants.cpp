#include "torchship/variants.h"

#include <algorithm>

#include "torchship/errors.h"
#include "torchship/model_config.h"

namespace torchship {
namespace fs = std::filesystem;

namespace {

constexpr std::pair<Format, const char*> kFormats[] = {
    {Format::TorchScript, "torchscript"}, {Format::Pt2, "pt2"}, {Format::Onnx, "onnx"}};

bool known_precision(const std::string& name) {
  return std::any_of(std::begin(kPrecisions), std::end(kPrecisions), [&](const char* p) { return name == p; });
}

std::string precision_choices() {
  std::string out;
  for (const char* p : kPrecisions) out += (out.empty() ? "" : ", ") + std::string(p);
  return out;
}

torch::ScalarType floating_dtype(const std::string& precision) {
  return precision == "fp16" ? torch::kFloat16 : precision == "bf16" ? torch::kBFloat16 : torch::kFloat32;
}

std::string layout_name(bool channels_last) { return channels_last ? "channels_last" : "contiguous"; }

std::string in_quotes(const std::string& s) { return "'" + s + "'"; }

Variant parse_variant(const nlohmann::json& entry, size_t index) {
  const auto where = "config.json variants[" + std::to_string(index) + "]";
  if (!entry.is_object()) throw LoadError(where + " is not an object");
  const auto text = [&](const char* key, const char* fallback) -> std::string {
    if (!entry.contains(key)) {
      if (fallback) return fallback;
      throw LoadError(where + " has no \"" + key + "\"");
    }
    if (!entry[key].is_string()) throw LoadError(where + "." + key + " is not a string");
    return entry[key].get<std::string>();
  };
  Variant v;
  v.file = text("file", nullptr);
  if (!is_version_file_name(v.file)) {
    throw LoadError(where + ".file " + in_quotes(v.file) + " must be a file name inside the version directory");
  }
  try {
    v.format = parse_format(text("format", nullptr));
  } catch (const InvalidInputError& e) {
    throw LoadError(where + ": " + e.what());
  }
  v.device = text("device", "any");
  if (v.device != "cpu" && v.device != "cuda" && v.device != "any") {
    throw LoadError(where + ".device " + in_quotes(v.device) + " is not cpu, cuda or any");
  }
  v.precision = text("precision", "fp32");
  if (!known_precision(v.precision)) {
    throw LoadError(where + ".precision " + in_quotes(v.precision) + " is not one of " + precision_choices());
  }
  const auto layout = text("layout", "contiguous");
  if (layout != "contiguous" && layout != "channels_last") {
    throw LoadError(where + ".layout " + in_quotes(layout) + " is not contiguous or channels_last");
  }
  v.channels_last = layout == "channels_last";
  return v;
}

// Before config.json listed variants, the file names were the contract.
std::vector<Variant> derived_variants(const fs::path& version_dir) {
  std::vector<Variant> out;
  const auto add = [&](const char* file, Format format, const char* device) {
    if (fs::exists(version_dir / file)) out.push_back({file, format, device, "fp32", false});
  };
  add("model.pt", Format::TorchScript, "any");
  add("model.pt2", Format::Pt2, "cpu");
  add("model.cuda.pt2", Format::Pt2, "cuda");
  add("model.onnx", Format::Onnx, "cpu");
  return out;
}

bool runs_on(const Variant& v, const torch::Device& device) {
  if (v.format == Format::Onnx) return false;  // ONNX Runtime is Python's, not the C++ runtime's
  return v.device == "any" || v.device == (device.is_cuda() ? "cuda" : "cpu");
}

}  // namespace

Format parse_format(const std::string& name) {
  for (const auto& [format, n] : kFormats) {
    if (name == n) return format;
  }
  throw InvalidInputError("unknown artifact format " + in_quotes(name) + " (expected torchscript, pt2 or onnx)");
}

std::string format_name(Format format) {
  for (const auto& [f, n] : kFormats) {
    if (f == format) return n;
  }
  return "unknown";
}

std::string parse_precision(const std::string& name) {
  if (name == "exported") return "fp32";
  if (!known_precision(name)) {
    throw InvalidInputError("unknown precision " + in_quotes(name) + " (expected " + precision_choices() + ")");
  }
  return name;
}

std::string Variant::describe() const {
  return format_name(format) + " " + device + " " + precision + " " + layout_name(channels_last) + " (" + file + ")";
}

std::string VariantChoice::run_precision() const {
  if (!convert_to) return variant.precision;
  return *convert_to == torch::kFloat16 ? "fp16" : *convert_to == torch::kBFloat16 ? "bf16" : "fp32";
}

std::string VariantChoice::describe() const {
  auto out = variant.describe();
  if (converted()) {
    out += ", converted at load to " + run_precision() +
           (convert_channels_last ? " channels_last" : "");
  }
  return out;
}

std::vector<Variant> list_variants(const nlohmann::json& config, const fs::path& version_dir) {
  if (!config.contains("variants")) return derived_variants(version_dir);
  const auto& list = config["variants"];
  if (!list.is_array()) throw LoadError("config.json \"variants\" is not a list");
  std::vector<Variant> out;
  for (size_t i = 0; i < list.size(); ++i) out.push_back(parse_variant(list[i], i));
  return out;
}

VariantChoice choose_variant(const std::vector<Variant>& variants, const VariantRequest& request,
                             const fs::path& version_dir) {
  if (request.format != "auto") parse_format(request.format);  // throws for an unknown name
  const auto precision = parse_precision(request.precision);
  const auto allowed = [&](const Variant& v) {
    return runs_on(v, request.device) && (request.format == "auto" || format_name(v.format) == request.format);
  };
  // TorchScript before .pt2 under auto: the order of this list (docs/variants.md says why).
  const Format order[] = {Format::TorchScript, Format::Pt2};
  std::optional<VariantChoice> choice;
  for (const auto format : order) {
    for (const auto& v : variants) {
      if (!choice && v.format == format && allowed(v) && v.precision == precision &&
          v.channels_last == request.channels_last) {
        choice = VariantChoice{v, version_dir / v.file, std::nullopt, false};
      }
    }
  }
  // No exact match: a TorchScript fp32 artifact can be converted at load to fp16/bf16 and channels_last.
  if (!choice && precision != "int8") {
    for (const auto& v : variants) {
      if (!choice && v.format == Format::TorchScript && allowed(v) && v.precision == "fp32" && !v.channels_last) {
        choice = VariantChoice{v, version_dir / v.file, std::nullopt, request.channels_last};
        if (precision != "fp32") choice->convert_to = floating_dtype(precision);
      }
    }
  }
  if (!choice) {
    std::string held;
    for (const auto& v : variants) held += (held.empty() ? "" : "; ") + v.describe();
    throw LoadError("no artifact for format " + request.format + ", device " + request.device.str() + ", precision " +
                    precision + ", " + layout_name(request.channels_last) + ": the version holds " +
                    (held.empty() ? std::string("no artifact") : held) +
                    ". Choose one with --format, --precision and --channels-last, or export the variant "
                    "(docs/variants.md); only a TorchScript fp32 artifact is converted at load, a .pt2 is compiled for "
                    "one precision and layout and int8 is made at export");
  }
  if (!fs::is_regular_file(choice->file)) {
    throw LoadError("artifact " + choice->file.string() + " (" + choice->variant.describe() +
                    ") is listed in config.json but missing");
  }
  return *choice;
}

}  // namespace torchship

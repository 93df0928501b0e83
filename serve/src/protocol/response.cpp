#include "protocol/response.h"

#include <cstring>

#include "protocol/number_codec.h"
#include "torchship/classification.h"
#include "torchship/dtypes.h"
#include "torchship/errors.h"

namespace torchship::serve {

std::vector<OutputSelection> select_outputs(const ModelConfig& config, const InferRequest& request) {
  std::vector<OutputSelection> selection;
  if (request.outputs.empty()) {
    for (size_t i = 0; i < config.outputs.size(); ++i) selection.push_back({i, request.binary_data_output});
    return selection;
  }
  for (const auto& wanted : request.outputs) {
    size_t index = config.outputs.size();
    for (size_t i = 0; i < config.outputs.size(); ++i) {
      if (config.outputs[i].name == wanted.name) index = i;
    }
    if (index == config.outputs.size()) {
      std::string names;
      for (const auto& spec : config.outputs) names += (names.empty() ? "'" : ", '") + spec.name + "'";
      throw InvalidInputError("model '" + config.name + "' has no output " + echo(wanted.name) + " (outputs: " +
                              names + ")");
    }
    for (const auto& s : selection) {
      if (s.index == index) throw InvalidInputError("output " + echo(wanted.name) + " requested more than once");
    }
    if (wanted.classification && config.outputs[index].shape.size() < 2) {
      throw InvalidInputError("output " + echo(wanted.name) + " has no class dimension (shape " +
                              shape_string(config.outputs[index].shape) + "): classification needs [batch, classes]");
    }
    selection.push_back({index, wanted.binary_data.value_or(request.binary_data_output),
                         wanted.classification.value_or(0)});
  }
  return selection;
}

ClassifiedOutput classify_output(const ModelConfig& config, size_t output, const torch::Tensor& values, int64_t count) {
  ClassifiedOutput out;
  const auto ranked = top_classes(values, count);
  out.shape = {static_cast<int64_t>(ranked.size()), ranked.empty() ? 0 : static_cast<int64_t>(ranked.front().size())};
  // Labels name the output the image record points at (or the only output of a classifier).
  const bool labelled = !config.labels.empty() &&
                        (config.image ? config.image->output == config.outputs.at(output).name : config.outputs.size() == 1);
  static const std::vector<std::string> kNone;
  for (const auto& row : ranked) {
    for (const auto& c : row) out.entries.push_back(classification_entry(c, labelled ? config.labels : kNone));
  }
  return out;
}

std::string serialize_bytes(const std::vector<std::string>& elements) {
  std::string out;
  for (const auto& e : elements) {
    const auto n = static_cast<uint32_t>(e.size());
    const char length[4] = {static_cast<char>(n & 0xff), static_cast<char>((n >> 8) & 0xff),
                            static_cast<char>((n >> 16) & 0xff), static_cast<char>((n >> 24) & 0xff)};
    out.append(length, 4);
    out += e;
  }
  return out;
}

EncodedResponse encode_infer_response(const ModelConfig& config, const std::string& model_version,
                                      const std::optional<std::string>& id,
                                      const std::vector<OutputSelection>& selection,
                                      const std::vector<torch::Tensor>& outputs) {
  if (outputs.size() != config.outputs.size()) {
    throw Error("model '" + config.name + "' returned " + std::to_string(outputs.size()) + " outputs, config.json declares " +
                std::to_string(config.outputs.size()));
  }
  std::vector<torch::Tensor> tensors;
  std::vector<std::optional<ClassifiedOutput>> classified(selection.size());
  size_t estimate = 128;
  for (size_t k = 0; k < selection.size(); ++k) {
    const auto& s = selection[k];
    auto t = outputs[s.index];
    if (!t.device().is_cpu()) t = t.cpu();
    tensors.push_back(t.contiguous());
    if (s.classification > 0) classified[k] = classify_output(config, s.index, tensors.back(), s.classification);
    estimate += 96 + static_cast<size_t>(tensors.back().numel()) * (s.binary ? 0 : 14);
  }

  EncodedResponse response;
  std::string& out = response.body;
  out.reserve(estimate);
  out += "{\"model_name\":";
  append_json_string(out, config.name);
  out += ",\"model_version\":";
  append_json_string(out, model_version);
  if (id) {
    out += ",\"id\":";
    append_json_string(out, *id);
  }
  out += ",\"outputs\":[";
  bool any_binary = false;
  for (size_t k = 0; k < selection.size(); ++k) {
    const auto& t = tensors[k];
    std::string datatype = "BYTES";
    std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
    if (classified[k]) {
      shape = classified[k]->shape;
    } else {
      try {
        datatype = dtype_name(t.scalar_type());
      } catch (const InvalidInputError& e) {
        throw Error(std::string("model output '") + config.outputs[selection[k].index].name + "': " + e.what());
      }
    }
    if (k) out += ',';
    out += "{\"name\":";
    append_json_string(out, config.outputs[selection[k].index].name);
    out += ",\"datatype\":\"";
    out += datatype;
    out += "\",\"shape\":[";
    for (size_t d = 0; d < shape.size(); ++d) {
      if (d) out += ',';
      append_number(out, shape[d]);
    }
    if (selection[k].binary) {
      any_binary = true;
      out += "],\"parameters\":{\"binary_data_size\":";
      append_number(out, classified[k] ? serialize_bytes(classified[k]->entries).size() : t.nbytes());
      out += "}}";
    } else if (classified[k]) {
      out += "],\"data\":[";
      for (size_t e = 0; e < classified[k]->entries.size(); ++e) {
        if (e) out += ',';
        append_json_string(out, classified[k]->entries[e]);
      }
      out += "]}";
    } else {
      out += "],\"data\":[";
      append_data(out, t);
      out += "]}";
    }
  }
  out += "]}";
  if (any_binary) {
    response.json_bytes = out.size();
    size_t total = out.size();
    for (size_t k = 0; k < selection.size(); ++k) total += selection[k].binary ? tensors[k].nbytes() : 0;
    out.reserve(total);
    for (size_t k = 0; k < selection.size(); ++k) {
      if (!selection[k].binary) continue;
      if (classified[k]) {
        out += serialize_bytes(classified[k]->entries);
      } else {
        out.append(static_cast<const char*>(tensors[k].const_data_ptr()), tensors[k].nbytes());
      }
    }
  }
  return response;
}

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (u < 0x20) {
          out += "\\u00";
          out += kHex[u >> 4];
          out += kHex[u & 0xf];
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

}  // namespace torchship::serve

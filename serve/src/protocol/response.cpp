#include "protocol/response.h"

#include <cstring>

#include "protocol/number_codec.h"
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
    selection.push_back({index, wanted.binary_data.value_or(request.binary_data_output)});
  }
  return selection;
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
  size_t estimate = 128;
  for (const auto& s : selection) {
    auto t = outputs[s.index];
    if (!t.device().is_cpu()) t = t.cpu();
    tensors.push_back(t.contiguous());
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
    std::string datatype;
    try {
      datatype = dtype_name(t.scalar_type());
    } catch (const InvalidInputError& e) {
      throw Error(std::string("model output '") + config.outputs[selection[k].index].name + "': " + e.what());
    }
    if (k) out += ',';
    out += "{\"name\":";
    append_json_string(out, config.outputs[selection[k].index].name);
    out += ",\"datatype\":\"";
    out += datatype;
    out += "\",\"shape\":[";
    for (int64_t d = 0; d < t.dim(); ++d) {
      if (d) out += ',';
      append_number(out, t.size(d));
    }
    if (selection[k].binary) {
      any_binary = true;
      out += "],\"parameters\":{\"binary_data_size\":";
      append_number(out, t.nbytes());
      out += "}}";
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
      out.append(static_cast<const char*>(tensors[k].const_data_ptr()), tensors[k].nbytes());
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

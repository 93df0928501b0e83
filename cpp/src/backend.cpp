#include "torchship/backend.h"

#include <c10/core/InferenceMode.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/script.h>
#include <torch/utils.h>

#include "torchship/errors.h"

namespace torchship {
namespace {

// TorchScript models return a Tensor, or a tuple/list of them (e.g. LunaModel's
// (logits, probabilities)); flatten to a list in declaration order.
void flatten_outputs(const c10::IValue& value, std::vector<torch::Tensor>& out) {
  if (value.isTensor()) {
    out.push_back(value.toTensor());
  } else if (value.isTuple()) {
    for (const auto& element : value.toTupleRef().elements()) flatten_outputs(element, out);
  } else if (value.isTensorList()) {
    for (const auto& t : value.toTensorVector()) out.push_back(t);
  } else if (value.isList()) {
    for (const auto& element : value.toListRef()) flatten_outputs(element, out);
  } else {
    throw Error(std::string("model returned a ") + value.tagKind() + "; only tensors and tuples/lists of tensors are supported");
  }
}

class TorchScriptBackend final : public Backend {
 public:
  TorchScriptBackend(const std::filesystem::path& file, const torch::Device& device)
      : module_(torch::jit::load(file.string(), device)) {
    module_.eval();
  }

  std::vector<torch::Tensor> forward(const std::vector<torch::Tensor>& inputs) override {
    c10::InferenceMode guard;
    std::vector<c10::IValue> args(inputs.begin(), inputs.end());
    std::vector<torch::Tensor> out;
    flatten_outputs(module_.forward(args), out);
    return out;
  }

  std::string format() const override { return "torchscript"; }

  std::optional<std::vector<ArgumentInfo>> forward_arguments() const override {
    const auto& schema = module_.get_method("forward").function().getSchema();
    std::vector<ArgumentInfo> out;
    for (size_t i = 1; i < schema.arguments().size(); ++i) {  // 0 is self
      const auto& argument = schema.arguments()[i];
      out.push_back({argument.name(), argument.default_value().has_value()});
    }
    return out;
  }

  void convert(std::optional<torch::ScalarType> dtype, bool channels_last) override {
    torch::NoGradGuard no_grad;
    if (dtype) {
      // Floating tensors only (Module::to would also cast integer and bool buffers, such as position ids or
      // masks). set_data swaps the data of the tensor the module holds, as Module::to does.
      bool cast_any = false;
      const auto cast = [&](torch::Tensor t) {
        if (!t.is_floating_point()) return;
        t.set_data(t.to(*dtype));
        cast_any = true;
      };
      for (const auto& p : module_.parameters()) cast(p);
      for (const auto& b : module_.buffers()) cast(b);
      if (!cast_any) {
        throw LoadError("the module has no floating parameters or buffers to cast (a frozen or optimized "
                        "TorchScript module keeps its weights as graph constants); export it unfrozen");
      }
    }
    if (!channels_last) return;
    for (auto p : module_.parameters()) {
      if (p.dim() == 4) p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
    }
  }

 private:
  torch::jit::Module module_;
};

class AotiBackend final : public Backend {
 public:
  AotiBackend(const std::filesystem::path& file, const torch::Device& device)
      : loader_(file.string(), "model", /*run_single_threaded=*/false, /*num_runners=*/1,
                device.is_cuda() ? device.index() : static_cast<c10::DeviceIndex>(-1)) {}

  std::vector<torch::Tensor> forward(const std::vector<torch::Tensor>& inputs) override {
    c10::InferenceMode guard;
    return loader_.run(inputs);
  }

  std::string format() const override { return "pt2"; }

  void convert(std::optional<torch::ScalarType> dtype, bool channels_last) override {
    if (!dtype && !channels_last) return;
    throw LoadError(
        "a .pt2 package is compiled for one dtype and memory layout: running it in another precision or "
        "channels_last needs the model's TorchScript artifact (format 'torchscript')");
  }

 private:
  torch::inductor::AOTIModelPackageLoader loader_;
};

}  // namespace

std::unique_ptr<Backend> load_torchscript(const std::filesystem::path& file, const torch::Device& device) {
  return std::make_unique<TorchScriptBackend>(file, device);
}

std::unique_ptr<Backend> load_aoti(const std::filesystem::path& file, const torch::Device& device) {
  return std::make_unique<AotiBackend>(file, device);
}

std::unique_ptr<Backend> load_backend(const std::filesystem::path& file, const torch::Device& device) {
  if (!std::filesystem::is_regular_file(file)) throw LoadError("artifact " + file.string() + " does not exist");
  const auto ext = file.extension().string();
  if (ext == ".pt") return load_torchscript(file, device);
  if (ext == ".pt2") return load_aoti(file, device);
  throw LoadError("artifact " + file.string() + ": unknown format (expected .pt or .pt2)");
}

}  // namespace torchship

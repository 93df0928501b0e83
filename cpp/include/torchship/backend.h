#pragma once
// One interface, one implementation per artifact format. A Backend is one
// loaded copy of a model on one device; it is not shared between threads.
#include <torch/types.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace torchship {

// One argument of a model's forward (self excluded), as the artifact records it.
struct ArgumentInfo {
  std::string name;
  bool has_default = false;
};

class Backend {
 public:
  virtual ~Backend() = default;
  // Inputs are already on the backend's device; outputs are returned on it.
  virtual std::vector<torch::Tensor> forward(const std::vector<torch::Tensor>& inputs) = 0;
  virtual std::string format() const = 0;
  // Casts floating parameters and buffers to `dtype` (when given; integer and
  // bool ones are kept) and 4-D parameters to channels_last. Only TorchScript
  // can; a .pt2 is compiled for one dtype and layout, so AOTInductor throws
  // LoadError, as does a module with nothing to cast (frozen weights).
  virtual void convert(std::optional<torch::ScalarType> dtype, bool channels_last) = 0;
  // forward's arguments where the format records them (TorchScript's schema); nullopt otherwise.
  virtual std::optional<std::vector<ArgumentInfo>> forward_arguments() const { return std::nullopt; }
};

// TorchScript (.pt): torch::jit::load onto the device, eval().
std::unique_ptr<Backend> load_torchscript(const std::filesystem::path& file, const torch::Device& device);
// AOTInductor package (.pt2) compiled for the device's type.
std::unique_ptr<Backend> load_aoti(const std::filesystem::path& file, const torch::Device& device);

// Picks by file name: *.pt -> TorchScript, *.pt2 -> AOTInductor.
std::unique_ptr<Backend> load_backend(const std::filesystem::path& file, const torch::Device& device);

}  // namespace torchship

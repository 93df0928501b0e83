#pragma once
// One interface, one implementation per artifact format. A Backend is one
// loaded copy of a model on one device; it is not shared between threads.
#include <torch/types.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace torchship {

class Backend {
 public:
  virtual ~Backend() = default;
  // Inputs are already on the backend's device; outputs are returned on it.
  virtual std::vector<torch::Tensor> forward(const std::vector<torch::Tensor>& inputs) = 0;
  virtual std::string format() const = 0;
};

// TorchScript (.pt): torch::jit::load onto the device, eval().
std::unique_ptr<Backend> load_torchscript(const std::filesystem::path& file, const torch::Device& device);
// AOTInductor package (.pt2) compiled for the device's type.
std::unique_ptr<Backend> load_aoti(const std::filesystem::path& file, const torch::Device& device);

// Picks by file name: *.pt -> TorchScript, *.pt2 -> AOTInductor.
std::unique_ptr<Backend> load_backend(const std::filesystem::path& file, const torch::Device& device);

}  // namespace torchship

#pragma once
// Operator libraries: shared objects that register custom ops (torchvision::nms, a user's own)
// with torch's dispatcher when loaded. TorchScript and .pt2 artifacts call those ops by name, so
// the library must be loaded before the artifact. Loading is process-wide and never undone.
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace torchship {

// dlopen()s `file` (RTLD_NOW | RTLD_GLOBAL) once; loading it again is a no-op. Throws LoadError
// naming the file and the loader's reason.
void load_op_library(const std::filesystem::path& file);

// torchvision's op library of the installation beside the torch this process runs (found from
// libtorch's own location), or nullopt when torchvision is not installed there.
std::optional<std::filesystem::path> find_torchvision_ops();

// Loads find_torchvision_ops() when present; returns its path, or nullopt when there is none. The
// runtime calls it only when a model's artifact calls a torchvision op.
// torchvision's library links libtorch_python, so a process without Python (the server) loads
// libpython first (no interpreter is started: it only resolves those symbols).
std::optional<std::filesystem::path> load_torchvision_ops();

// Every library loaded so far, in order (for logs and metadata).
std::vector<std::string> loaded_op_libraries();

// When `message` (a load or run error) names an operator that no loaded library registers, a
// sentence saying which and how to load its library; "" otherwise.
std::string unknown_operator_hint(const std::string& message);

}  // namespace torchship

#include "torchship/op_libraries.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <algorithm>
#include <cctype>
#include <mutex>

#include "torchship/errors.h"

#ifndef TORCHSHIP_PYTHON_LIBDIR
#define TORCHSHIP_PYTHON_LIBDIR ""
#endif
#ifndef TORCHSHIP_PYTHON_SONAME
#define TORCHSHIP_PYTHON_SONAME ""
#endif

namespace torchship {
namespace fs = std::filesystem;

namespace {

std::mutex mutex;
std::vector<std::string> loaded;  // guarded by mutex

bool needs_python(const std::string& error) {
  return error.find("undefined symbol: Py") != std::string::npos ||
         error.find("undefined symbol: _Py") != std::string::npos;
}

// The libpython the build's interpreter uses (its directory, then the loader's search path), so
// that a library linked against libtorch_python resolves its symbols in a process without Python.
bool load_libpython() {
  const std::string libdir = TORCHSHIP_PYTHON_LIBDIR, soname = TORCHSHIP_PYTHON_SONAME;
  if (soname.empty()) return false;
  for (const auto& candidate : {libdir.empty() ? std::string() : (fs::path(libdir) / soname).string(), soname}) {
    if (!candidate.empty() && dlopen(candidate.c_str(), RTLD_NOW | RTLD_GLOBAL)) return true;
  }
  return false;
}

// Where this process's torch libraries are: <site-packages>/torch/lib.
std::optional<fs::path> torch_lib_dir() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&at::get_num_threads), &info) == 0 || !info.dli_fname) return std::nullopt;
  return fs::path(info.dli_fname).parent_path();
}

// "libfoo.so: cannot open shared object file" -> "libfoo.so"; "" for other errors.
std::string missing_dependency(const std::string& error) {
  const auto at = error.find(": cannot open shared object file");
  if (at == std::string::npos) return "";
  const auto start = error.rfind(": ", at - 1);
  return error.substr(start == std::string::npos ? 0 : start + 2, at - (start == std::string::npos ? 0 : start + 2));
}

// Libraries built for Python extensions (torchvision's) link torch's libraries by name and expect the
// interpreter to have loaded them and libpython. Each retry supplies one missing piece: a torch
// library from torch's own directory, or libpython.
void load_locked(const fs::path& file) {
  const auto path = fs::absolute(file).lexically_normal().string();
  if (std::find(loaded.begin(), loaded.end(), path) != loaded.end()) return;
  if (!fs::is_regular_file(path)) throw LoadError("operator library '" + path + "' does not exist");
  std::string reason;
  for (int attempt = 0; attempt < 4; ++attempt) {
    dlerror();
    if (dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL)) {
      loaded.push_back(path);
      return;
    }
    reason = dlerror();
    bool supplied = false;
    if (needs_python(reason)) {
      supplied = load_libpython();
      if (!supplied && !TORCHSHIP_PYTHON_SONAME[0]) reason += " (and no libpython is known to this build)";
    } else if (const auto dependency = missing_dependency(reason); !dependency.empty()) {
      const auto dir = torch_lib_dir();
      if (dir && fs::is_regular_file(*dir / dependency)) {
        dlerror();
        supplied = dlopen((*dir / dependency).c_str(), RTLD_NOW | RTLD_GLOBAL) != nullptr ||
                   (needs_python(dlerror()) && load_libpython());
      }
    }
    if (!supplied) break;
  }
  throw LoadError("cannot load operator library '" + path + "': " + reason);
}

}  // namespace

void load_op_library(const fs::path& file) {
  std::lock_guard lock(mutex);
  load_locked(file);
}

std::optional<fs::path> find_torchvision_ops() {
  const auto torch_lib = torch_lib_dir();  // <site-packages>/torch/lib
  if (!torch_lib) return std::nullopt;
  const auto site_packages = torch_lib->parent_path().parent_path();
  // torchvision 0.29 ships its ops as _C_stable.so (torch's stable ABI); older releases as _C.so.
  for (const auto* name : {"_C_stable.so", "_C.so"}) {
    const auto candidate = site_packages / "torchvision" / name;
    if (fs::is_regular_file(candidate)) return candidate;
  }
  return std::nullopt;
}

std::optional<fs::path> load_torchvision_ops() {
  auto found = find_torchvision_ops();
  if (found) load_op_library(*found);
  return found;
}

std::vector<std::string> loaded_op_libraries() {
  std::lock_guard lock(mutex);
  return loaded;
}

std::string unknown_operator_hint(const std::string& message) {
  // TorchScript: "Unknown builtin op: ns::name"; the dispatcher: "Could not find schema for ns::name".
  for (const std::string marker : {"Unknown builtin op: ", "Could not find schema for ", "No such operator "}) {
    const auto at = message.find(marker);
    if (at == std::string::npos) continue;
    const auto start = at + marker.size();
    auto end = start;
    while (end < message.size() && (std::isalnum(static_cast<unsigned char>(message[end])) || message[end] == '_' ||
                                    message[end] == ':' || message[end] == '.')) {
      ++end;
    }
    while (end > start && message[end - 1] == '.') --end;  // the sentence's full stop, not an overload name
    const auto op = message.substr(start, end - start);
    const auto ns = op.substr(0, op.find("::"));
    return "the model calls operator '" + op + "', which no loaded library registers; load the library that defines " +
           "the '" + ns + "' ops with --extra-library PATH (Runtime(extra_libraries=[...])) or list it under " +
           "\"libraries\" in config.json" +
           (ns == "torchvision" ? " (torchvision's own is loaded automatically when torchvision is installed "
                                  "beside torch)"
                                : "");
  }
  return "";
}

}  // namespace torchship

#include "torchship/repository.h"

#include <algorithm>

#include "torchship/errors.h"
#include "torchship/op_libraries.h"

namespace torchship {
namespace fs = std::filesystem;

// Plain character checks, not std::regex: they run on every request, and std::regex's locale
// machinery crashed when another extension in the process brought its own libstdc++ facets.
bool valid_model_name(const std::string& name) {
  if (name.empty() || name.size() > 128 || name.front() == '.' || name.front() == '-') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '.';
  });
}

bool valid_version(const std::string& version) {
  return !version.empty() && version.size() <= 9 &&
         std::all_of(version.begin(), version.end(), [](char c) { return c >= '0' && c <= '9'; });
}

namespace {

// The newest (numerically largest) version directory of a model, or "" if none.
std::string newest_version(const fs::path& model_dir) {
  std::string best;
  for (const auto& entry : fs::directory_iterator(model_dir)) {
    const auto v = entry.path().filename().string();
    if (!entry.is_directory() || !valid_version(v)) continue;
    if (best.empty() || std::stoll(v) > std::stoll(best)) best = v;
  }
  return best;
}

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out.empty() ? "none" : out;
}

}  // namespace

// Refuses a path whose real location is outside the repository (a symlink out of it), so the
// server only ever reads what the repository's owner put inside it.
void check_confined(const fs::path& root, const fs::path& path, bool follow_symlinks) {
  if (follow_symlinks || !fs::exists(path)) return;
  const auto real = fs::canonical(path);
  const auto rel = real.lexically_relative(fs::canonical(root));
  if (rel.empty() || *rel.begin() == "..") {
    throw LoadError("'" + path.string() + "' leads outside the model repository (to '" + real.string() +
                    "'); pass --follow-symlinks to serve it");
  }
}

// config.json "libraries": operator libraries the model's artifacts call into, relative to the
// model directory and confined to the repository like the artifacts; loaded before the model.
void ModelRepository::load_libraries(const ModelConfig& config, const fs::path& model_dir, bool follow_symlinks) const {
  if (!config.raw.contains("libraries")) return;
  const auto& list = config.raw["libraries"];
  if (!list.is_array()) throw LoadError("config.json \"libraries\" is not a list of file names");
  for (const auto& entry : list) {
    if (!entry.is_string() || entry.get<std::string>().empty() || fs::path(entry.get<std::string>()).is_absolute()) {
      throw LoadError("config.json \"libraries\" entry " + entry.dump() + " is not a path inside the model directory");
    }
    const auto file = model_dir / entry.get<std::string>();
    check_confined(root_, file, follow_symlinks);
    load_op_library(file);
  }
}

ModelRepository::ModelRepository(fs::path root, const RepositoryOptions& options) : root_(std::move(root)) {
  if (!fs::is_directory(root_)) throw LoadError("model repository '" + root_.string() + "' is not a directory");
  std::vector<fs::path> dirs;
  for (const auto& entry : fs::directory_iterator(root_)) {
    if (entry.is_directory() && fs::exists(entry.path() / "config.json")) dirs.push_back(entry.path());
  }
  std::sort(dirs.begin(), dirs.end());
  for (const auto& wanted : options.only_models) {
    if (std::none_of(dirs.begin(), dirs.end(), [&](const fs::path& d) { return d.filename() == wanted; })) {
      throw LoadError("model '" + wanted + "' not found in " + root_.string());
    }
  }
  size_t found = 0;
  for (const auto& dir : dirs) {
    const auto name = dir.filename().string();
    if (!valid_model_name(name)) continue;
    if (!options.only_models.empty() &&
        std::find(options.only_models.begin(), options.only_models.end(), name) == options.only_models.end()) {
      continue;
    }
    ++found;
    std::string version;
    try {
      check_confined(root_, dir, options.follow_symlinks);
      check_confined(root_, dir / "config.json", options.follow_symlinks);
      auto config = ModelConfig::load(dir / "config.json");
      if (config.name != name) {
        throw LoadError("model directory '" + name + "' holds a config.json named '" + config.name + "'");
      }
      version = newest_version(dir);
      if (version.empty()) {
        throw LoadError("model '" + name + "' has no version directory (expected " + (dir / "1").string() + ")");
      }
      const auto version_dir = dir / version;
      check_confined(root_, version_dir, options.follow_symlinks);
      for (const auto& variant : list_variants(config.raw, version_dir)) {
        check_confined(root_, version_dir / variant.file, options.follow_symlinks);
      }
      load_libraries(config, dir, options.follow_symlinks);
      models_[name] = std::make_shared<Model>(std::move(config), version, version_dir, options.model);
    } catch (const std::exception& e) {
      if (options.strict) throw;
      failures_.push_back({name, version, e.what()});
    }
  }
  if (found == 0) {
    throw LoadError("no models in repository '" + root_.string() + "' (expected <repository>/<model>/config.json)");
  }
}

ModelRepository::~ModelRepository() { shutdown(); }

const ModelFailure* ModelRepository::failure(const std::string& name) const {
  const auto it = std::find_if(failures_.begin(), failures_.end(), [&](const auto& f) { return f.name == name; });
  return it == failures_.end() ? nullptr : &*it;
}

std::shared_ptr<Model> ModelRepository::get(const std::string& name, const std::string& version) const {
  const auto it = valid_model_name(name) ? models_.find(name) : models_.end();
  if (it == models_.end()) {
    if (const auto* f = failure(name)) {
      throw UnavailableError("model '" + name + "' is not available: " + f->reason);
    }
    std::vector<std::string> names;
    for (const auto& [n, m] : models_) names.push_back(n);
    throw NotFoundError("unknown model '" + name + "' (available: " + join(names) + ")");
  }
  if (!version.empty() && version != it->second->version()) {
    throw NotFoundError("model '" + name + "' has no version '" + version + "' loaded (loaded: " +
                        it->second->version() + ")");
  }
  return it->second;
}

std::vector<std::shared_ptr<Model>> ModelRepository::models() const {
  std::vector<std::shared_ptr<Model>> out;
  for (const auto& [n, m] : models_) out.push_back(m);
  return out;
}

bool ModelRepository::ready() const {
  return failures_.empty() && std::all_of(models_.begin(), models_.end(), [](const auto& kv) { return kv.second->ready(); });
}

void ModelRepository::shutdown() {
  for (auto& [n, m] : models_) m->shutdown();
}

}  // namespace torchship

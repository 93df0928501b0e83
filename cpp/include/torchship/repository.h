#pragma once
// The model repository on disk (written by `torchship export`):
//   <root>/<model>/config.json
//   <root>/<model>/<version>/{model.pt, model.pt2, model.onnx, manifest.json}
// Only directories found under the root are served; names are checked, so a
// request can never reach a path outside it.
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "torchship/model.h"

namespace torchship {

struct RepositoryOptions {
  ModelOptions model;
  std::vector<std::string> only_models;  // empty: every model found
  // Throw on the first model that fails to load (CI, tests) instead of serving the others.
  bool strict = false;
  // Serve model directories and artifacts whose real path leaves the root (symlinks); off: refused.
  bool follow_symlinks = false;
};

// A model that was found but could not be loaded or warmed up, and why.
struct ModelFailure {
  std::string name;
  std::string version;  // "" when no version was found
  std::string reason;
};

class ModelRepository {
 public:
  // Loads the newest version of every model. A model that fails is recorded in failures() and the
  // others load (with options.strict: throws LoadError on the first). Throws LoadError when the root
  // is not a directory, holds no model, or lacks one named in only_models.
  ModelRepository(std::filesystem::path root, const RepositoryOptions& options);
  ~ModelRepository();

  // Throws NotFoundError naming what exists, UnavailableError with the reason for a model that
  // failed to load. An empty version means the newest.
  std::shared_ptr<Model> get(const std::string& name, const std::string& version = "") const;
  std::vector<std::shared_ptr<Model>> models() const;
  const std::vector<ModelFailure>& failures() const { return failures_; }
  const ModelFailure* failure(const std::string& name) const;  // nullptr when it loaded
  const std::filesystem::path& root() const { return root_; }
  bool ready() const;  // every loaded model ready and none failed
  void shutdown();

 private:
  void load_libraries(const ModelConfig& config, const std::filesystem::path& model_dir, bool follow_symlinks) const;

  std::filesystem::path root_;
  std::map<std::string, std::shared_ptr<Model>> models_;
  std::vector<ModelFailure> failures_;
};

// Model names: letters, digits, '_', '-', '.', not starting with '.'; versions: digits.
bool valid_model_name(const std::string& name);
bool valid_version(const std::string& version);

}  // namespace torchship

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
};

class ModelRepository {
 public:
  // Loads the newest version of every model; throws LoadError on the first
  // model that fails (a server should not come up half-loaded).
  ModelRepository(std::filesystem::path root, const RepositoryOptions& options);
  ~ModelRepository();

  // Throws NotFoundError naming what exists. An empty version means the newest.
  std::shared_ptr<Model> get(const std::string& name, const std::string& version = "") const;
  std::vector<std::shared_ptr<Model>> models() const;
  const std::filesystem::path& root() const { return root_; }
  bool ready() const;
  void shutdown();

 private:
  std::filesystem::path root_;
  std::map<std::string, std::shared_ptr<Model>> models_;
};

// Model names: letters, digits, '_', '-', '.', not starting with '.'; versions: digits.
bool valid_model_name(const std::string& name);
bool valid_version(const std::string& version);

}  // namespace torchship

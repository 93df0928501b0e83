#pragma once
// Classes ranked by score: the classification extension of the inference protocol (a requested
// output's `classification` / tritonclient's `class_count`) and the image route's top-k.
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace torchship {

struct RankedClass {
  int64_t index = 0;
  double score = 0;
};

// For each row of `scores` (dimension 0 is the batch; later dimensions are flattened, as Triton
// does), its `k` highest entries, best first; equal scores keep the lower index first.
std::vector<std::vector<RankedClass>> top_classes(const torch::Tensor& scores, int64_t k);

// One entry as the classification extension returns it: "score:index" or "score:index:label"
// (Triton's form; `labels[index]` when there is one).
std::string classification_entry(const RankedClass& ranked, const std::vector<std::string>& labels);

}  // namespace torchship

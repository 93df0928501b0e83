#include "torchship/classification.h"

#include <torch/torch.h>

#include <cstdio>

#include "torchship/errors.h"

namespace torchship {

std::vector<std::vector<RankedClass>> top_classes(const torch::Tensor& scores, int64_t k) {
  if (scores.dim() < 2 || scores.numel() == 0) {
    throw InvalidInputError("classification needs an output of shape [batch, classes...], not " +
                            c10::str(scores.sizes()));
  }
  if (scores.scalar_type() == torch::kBool) {
    throw InvalidInputError("classification needs a numeric output, not BOOL");
  }
  const auto flat = scores.detach().to(torch::kCPU, torch::kFloat64).reshape({scores.size(0), -1});
  const int64_t count = std::min<int64_t>(k, flat.size(1));
  // A stable sort, so that equal scores are ranked by index (topk's order among ties is unspecified).
  const auto [values, indices] = flat.sort(/*stable=*/true, /*dim=*/1, /*descending=*/true);
  const auto v = values.narrow(1, 0, count).contiguous();
  const auto i = indices.narrow(1, 0, count).contiguous();
  std::vector<std::vector<RankedClass>> out(static_cast<size_t>(flat.size(0)));
  const auto* vp = v.const_data_ptr<double>();
  const auto* ip = i.const_data_ptr<int64_t>();
  for (int64_t r = 0; r < flat.size(0); ++r) {
    for (int64_t c = 0; c < count; ++c) out[static_cast<size_t>(r)].push_back({ip[r * count + c], vp[r * count + c]});
  }
  return out;
}

std::string classification_entry(const RankedClass& ranked, const std::vector<std::string>& labels) {
  char score[64];
  std::snprintf(score, sizeof(score), "%f", ranked.score);  // std::to_string's form, which Triton writes
  std::string entry = std::string(score) + ":" + std::to_string(ranked.index);
  if (ranked.index >= 0 && static_cast<size_t>(ranked.index) < labels.size()) entry += ":" + labels[static_cast<size_t>(ranked.index)];
  return entry;
}

}  // namespace torchship

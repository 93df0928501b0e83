// An operator library for the tests of --extra-library / Runtime(extra_libraries=...) / config.json
// "libraries": torchship_test::scale_add(x, s) = x * s + 1, registered with torch's dispatcher on load.
#include <ATen/ATen.h>
#include <torch/library.h>

namespace {

at::Tensor scale_add(const at::Tensor& x, double s) { return x * s + 1; }

}  // namespace

TORCH_LIBRARY(torchship_test, m) { m.def("scale_add(Tensor x, float s) -> Tensor"); }
TORCH_LIBRARY_IMPL(torchship_test, CPU, m) { m.impl("scale_add", &scale_add); }

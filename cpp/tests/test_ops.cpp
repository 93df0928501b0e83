// An operator library for the tests, registered with torch's dispatcher on load:
//   torchship_test::scale_add(x, s) = x * s + 1   (--extra-library, Runtime(extra_libraries=...), config "libraries")
//   torchship_test::sleep_ms(x, ms) = x, after ms  (a model that is slow on purpose: requests in flight, queued)
#include <ATen/ATen.h>
#include <torch/library.h>

#include <chrono>
#include <thread>

namespace {

at::Tensor scale_add(const at::Tensor& x, double s) { return x * s + 1; }

at::Tensor sleep_ms(const at::Tensor& x, int64_t ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return x.clone();
}

}  // namespace

TORCH_LIBRARY(torchship_test, m) {
  m.def("scale_add(Tensor x, float s) -> Tensor");
  m.def("sleep_ms(Tensor x, int ms) -> Tensor");
}
TORCH_LIBRARY_IMPL(torchship_test, CPU, m) {
  m.impl("scale_add", &scale_add);
  m.impl("sleep_ms", &sleep_ms);
}

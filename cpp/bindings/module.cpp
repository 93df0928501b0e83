// torchship._C: argument translation only. Every call that can take time
// releases the GIL; C++ errors become Python exceptions of matching types.
#include <pybind11/chrono.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/extension.h>

#include "torchship/device.h"
#include "torchship/errors.h"
#include "torchship/image.h"
#include "torchship/op_libraries.h"
#include "torchship/repository.h"
#include "torchship/variants.h"

namespace py = pybind11;
using namespace torchship;

namespace {

py::dict histogram_dict(const Histogram& h) {
  const auto s = h.snapshot();
  py::dict d;
  d["upper_bounds"] = s.upper_bounds;
  d["cumulative_counts"] = s.cumulative_counts;
  d["sum"] = s.sum;
  d["count"] = s.count;
  return d;
}

const ImagePipeline& image_pipeline(const Model& model) {
  if (!model.image()) {
    throw InvalidInputError("model '" + model.name() + "' takes no images: its config.json has no image record "
                            "(export it with its image preprocessing declared, docs/images.md)");
  }
  return *model.image();
}

py::dict stats_dict(ModelStats& s) {
  py::dict d;
  d["requests_ok"] = s.requests_ok.load();
  d["failed_invalid"] = s.failed_invalid.load();
  d["failed_overloaded"] = s.failed_overloaded.load();
  d["failed_unavailable"] = s.failed_unavailable.load();
  d["failed_timeout"] = s.failed_timeout.load();
  d["failed_internal"] = s.failed_internal.load();
  d["batches"] = s.batches.load();
  d["queue_depth"] = s.queue_depth.load();
  d["in_flight"] = s.in_flight.load();
  d["queue_seconds"] = histogram_dict(s.queue_seconds);
  d["compute_seconds"] = histogram_dict(s.compute_seconds);
  d["request_seconds"] = histogram_dict(s.request_seconds);
  d["batch_size"] = histogram_dict(s.batch_size);
  return d;
}

std::optional<std::chrono::microseconds> micros(std::optional<int64_t> us) {
  if (!us) return std::nullopt;
  return std::chrono::microseconds(*us);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "torchship native runtime (LibTorch). Use torchship.runtime for the Pythonic API.";
  m.attr("torch_version") = TORCHSHIP_TORCH_VERSION;
#ifdef TORCHSHIP_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif

  // Base first: pybind11 tries the most recently registered translator first.
  auto error = py::register_exception<Error>(m, "Error", PyExc_RuntimeError);
  py::register_exception<LoadError>(m, "LoadError", error.ptr());
  auto invalid = py::register_exception<InvalidInputError>(m, "InvalidInputError", PyExc_ValueError);
  py::register_exception<TooLargeError>(m, "TooLargeError", invalid.ptr());
  py::register_exception<NotFoundError>(m, "NotFoundError", PyExc_LookupError);
  py::register_exception<OverloadedError>(m, "OverloadedError", error.ptr());
  py::register_exception<UnavailableError>(m, "UnavailableError", error.ptr());
  py::register_exception<TimeoutError>(m, "TimeoutError", PyExc_TimeoutError);

  m.def("cuda_available", &cuda_available);
  m.def(
      "load_op_library", [](const std::string& path) { load_op_library(path); }, py::arg("path"),
      py::call_guard<py::gil_scoped_release>());
  m.def("find_torchvision_ops", []() -> std::optional<std::string> {
    const auto found = find_torchvision_ops();
    return found ? std::optional<std::string>(found->string()) : std::nullopt;
  });
  m.def("loaded_op_libraries", &loaded_op_libraries);
  m.def(
      "decode_image",
      [](const py::bytes& data, int64_t max_pixels, int64_t max_side) {
        const std::string_view view = data;  // the bytes object outlives the call
        py::gil_scoped_release release;
        return decode_image(view, ImageLimits{max_pixels, max_side});
      },
      py::arg("data"), py::arg("max_pixels") = ImageLimits{}.max_pixels, py::arg("max_side") = ImageLimits{}.max_side);
  m.def(
      "encode_image",
      [](const torch::Tensor& rgb, const std::string& format, int quality) {
        if (format != "jpeg" && format != "png") throw InvalidInputError("format must be 'jpeg' or 'png', not '" + format + "'");
        std::string encoded;
        {
          py::gil_scoped_release release;
          encoded = encode_image(rgb, format == "png" ? ImageFormat::Png : ImageFormat::Jpeg, quality);
        }
        return py::bytes(encoded);
      },
      py::arg("rgb"), py::arg("format") = "jpeg", py::arg("quality") = 90);
  m.def(
      "parse_device", [](const std::string& spec) { return parse_device(spec).str(); }, py::arg("spec"));
  m.def(
      "apply_process_settings",
      [](int intra_op_threads, int inter_op_threads, bool allow_tf32, bool cudnn_benchmark, bool jit_profiling) {
        apply_process_settings({intra_op_threads, inter_op_threads, allow_tf32, cudnn_benchmark, jit_profiling});
      },
      py::arg("intra_op_threads") = 0, py::arg("inter_op_threads") = 0, py::arg("allow_tf32") = false,
      py::arg("cudnn_benchmark") = false, py::arg("jit_profiling") = true);

  py::class_<Model, std::shared_ptr<Model>>(m, "Model")
      .def_property_readonly("name", &Model::name)
      .def_property_readonly("version", &Model::version)
      .def_property_readonly("format", &Model::format)
      .def_property_readonly("variant", [](const Model& self) { return self.variant().describe(); })
      .def_property_readonly("precision", [](const Model& self) { return self.variant().run_precision(); })
      .def_property_readonly("artifact", [](const Model& self) { return self.artifact().string(); })
      .def_property_readonly("device", [](const Model& self) { return self.device().str(); })
      .def_property_readonly("max_batch_size", [](const Model& self) { return self.config().max_batch_size; })
      .def_property_readonly("config_json", [](const Model& self) { return self.config().raw.dump(); })
      .def_property_readonly("input_names",
                             [](const Model& self) {
                               std::vector<std::string> names;
                               for (const auto& s : self.config().inputs) names.push_back(s.name);
                               return names;
                             })
      .def_property_readonly("output_names",
                             [](const Model& self) {
                               std::vector<std::string> names;
                               for (const auto& s : self.config().outputs) names.push_back(s.name);
                               return names;
                             })
      .def_property_readonly("ready", &Model::ready)
      .def_property_readonly("load_seconds", &Model::load_seconds)
      .def(
          "infer",
          [](Model& self, std::vector<torch::Tensor> inputs, std::optional<int64_t> timeout_us) {
            return self.infer(std::move(inputs), micros(timeout_us));
          },
          py::arg("inputs"), py::arg("timeout_us") = py::none(), py::call_guard<py::gil_scoped_release>())
      .def(
          "infer_named",
          [](Model& self, const NamedTensors& inputs, std::optional<int64_t> timeout_us) {
            return self.infer(inputs, micros(timeout_us));
          },
          py::arg("inputs"), py::arg("timeout_us") = py::none(), py::call_guard<py::gil_scoped_release>())
      .def("stats", [](Model& self) { return stats_dict(self.stats()); })
      // Image requests through the graphs export wrote beside the model (docs/images.md).
      .def_property_readonly("takes_images", [](const Model& self) { return self.image() != nullptr; })
      .def(
          "preprocess_image",
          [](const Model& self, const py::bytes& data, int64_t max_pixels, int64_t max_side) {
            const std::string_view view = data;  // the bytes object outlives the call
            py::gil_scoped_release release;
            return image_pipeline(self).preprocess(view, ImageLimits{max_pixels, max_side});
          },
          py::arg("data"), py::arg("max_pixels") = ImageLimits{}.max_pixels,
          py::arg("max_side") = ImageLimits{}.max_side)
      .def(
          "preprocess_pixels",
          [](const Model& self, const torch::Tensor& rgb) { return image_pipeline(self).preprocess_pixels(rgb); },
          py::arg("rgb"), py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("makes_images",
                             [](const Model& self) { return self.image() && self.image()->makes_images(); })
      .def_property_readonly("classifies", [](const Model& self) { return self.image() && self.image()->classifies(); })
      .def_property_readonly("image_output",
                             [](const Model& self) { return self.image() ? self.image()->output_index() : -1; })
      .def(
          "postprocess_image",
          [](const Model& self, const torch::Tensor& item) { return image_pipeline(self).postprocess(item); },
          py::arg("item"), py::call_guard<py::gil_scoped_release>())
      .def(
          "top_k",
          [](const Model& self, const torch::Tensor& output, int64_t k) {
            std::vector<std::vector<std::pair<int64_t, double>>> rows;
            for (const auto& row : image_pipeline(self).top_k(output, k)) {
              auto& r = rows.emplace_back();
              for (const auto& c : row) r.emplace_back(c.index, c.score);
            }
            return rows;
          },
          py::arg("output"), py::arg("k"))
      .def("shutdown", &Model::shutdown, py::call_guard<py::gil_scoped_release>());

  py::class_<ModelRepository>(m, "Repository")
      .def(py::init([](const std::string& root, const std::string& device, const std::string& format,
                       const std::vector<std::string>& models, std::optional<int> instance_count,
                       std::optional<int64_t> max_batch_size, std::optional<int64_t> max_queue_delay_us,
                       std::optional<int64_t> max_queue_size, bool warmup, const std::string& precision,
                       bool channels_last) {
             RepositoryOptions options;
             options.model.device = parse_device(device);
             options.model.format = format;
             options.model.instance_count = instance_count;
             options.model.max_batch_size = max_batch_size;
             options.model.max_queue_delay = micros(max_queue_delay_us);
             options.model.max_queue_size = max_queue_size;
             options.model.warmup = warmup;
             options.model.precision = parse_precision(precision);
             options.model.channels_last = channels_last;
             options.only_models = models;
             options.strict = true;  // Python callers get the load error as an exception, as before
             return std::make_unique<ModelRepository>(root, options);
           }),
           py::arg("root"), py::arg("device") = "cpu", py::arg("format") = "auto",
           py::arg("models") = std::vector<std::string>{}, py::arg("instance_count") = py::none(),
           py::arg("max_batch_size") = py::none(), py::arg("max_queue_delay_us") = py::none(),
           py::arg("max_queue_size") = py::none(), py::arg("warmup") = true, py::arg("precision") = "fp32",
           py::arg("channels_last") = false,
           py::call_guard<py::gil_scoped_release>())
      .def("model", &ModelRepository::get, py::arg("name"), py::arg("version") = "")
      .def("models", &ModelRepository::models)
      .def_property_readonly("root", [](const ModelRepository& self) { return self.root().string(); })
      .def("ready", &ModelRepository::ready)
      .def("shutdown", &ModelRepository::shutdown, py::call_guard<py::gil_scoped_release>());
}

// The Python face of libprune. Everything that decides runs in the C++ core; this file only
// converts arguments and errors. Python-only chores (flattening outputs, eval mode on an
// nn.Module) live in the small adapters in bindings/libprune/*.py.
#include <torch/extension.h>

#include "libprune/libprune.h"

namespace py = pybind11;
using libprune::graph::Forward;
using libprune::graph::NamedTensors;

namespace {

// Wraps a Python callable returning a list of tensors as the core's Forward.
Forward python_forward(py::function fn) {
  return [fn]() {
    py::object out = fn();
    return out.cast<std::vector<torch::Tensor>>();
  };
}

// Errors reach Python as ValueError/IndexError/TypeError/RuntimeError with LibTorch's message
// but without its C++ backtrace.
void register_errors() {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const c10::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
    } catch (const c10::IndexError& e) {
      PyErr_SetString(PyExc_IndexError, e.what_without_backtrace());
    } catch (const c10::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what_without_backtrace());
    } catch (const c10::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
    }
  });
}

}  // namespace

PYBIND11_MODULE(_libprune, m) {
  m.doc() = "libprune: structural pruning on LibTorch (C++ core, Python bindings)";
  m.attr("__version__") = libprune::version();
  register_errors();

  m.def("model_names", &libprune::models::names, "Names of the C++ model zoo's models");
  m.def(
      "zoo_state_shapes",
      [](const std::string& name, int64_t num_classes, int64_t in_channels) {
        auto model = libprune::models::create(
            name, libprune::models::ModelOptions().num_classes(num_classes).in_channels(in_channels));
        std::map<std::string, std::vector<int64_t>> shapes;
        for (const auto& kv : libprune::io::state_dict(*model)) shapes[kv.first] = kv.second.sizes().vec();
        return shapes;
      },
      py::arg("name"), py::arg("num_classes") = 1000, py::arg("in_channels") = 3,
      "state_dict keys and shapes of a C++ zoo model, to check against its Python twin");

  using libprune::report::OpCount;
  py::class_<libprune::report::LayerOps>(m, "LayerOps")
      .def_readonly("name", &libprune::report::LayerOps::name)
      .def_readonly("op", &libprune::report::LayerOps::op)
      .def_readonly("macs", &libprune::report::LayerOps::macs)
      .def("__repr__", [](const libprune::report::LayerOps& l) {
        return "LayerOps(name='" + l.name + "', op='" + l.op + "', macs=" + std::to_string(l.macs) + ")";
      });
  py::class_<OpCount>(m, "OpCount", "Result of count_ops; unpacks as (macs, params)")
      .def_readonly("macs", &OpCount::macs, "conv and linear multiply-accumulates")
      .def_readonly("params", &OpCount::params)
      .def_readonly("matmul_macs", &OpCount::matmul_macs, "activation-by-activation matmuls (attention)")
      .def_readonly("norm_elements", &OpCount::norm_elements)
      .def_readonly("pool_elements", &OpCount::pool_elements)
      .def_readonly("elementwise_elements", &OpCount::elementwise_elements)
      .def_readonly("layers", &OpCount::layers)
      .def_readonly("unknown_ops", &OpCount::unknown_ops)
      .def("__iter__", [](const OpCount& c) { return py::iter(py::make_tuple(c.macs, c.params)); })
      .def("__len__", [](const OpCount&) { return 2; })
      .def("__getitem__", [](const OpCount& c, int i) {
        if (i == 0 || i == -2) return c.macs;
        if (i == 1 || i == -1) return c.params;
        throw py::index_error("OpCount unpacks as (macs, params); index " + std::to_string(i) + " is out of range");
      })
      .def("__repr__", [](const OpCount& c) {
        return "OpCount(macs=" + std::to_string(c.macs) + ", params=" + std::to_string(c.params) +
               ", matmul_macs=" + std::to_string(c.matmul_macs) + ")";
      });

  m.def(
      "_count_ops",
      [](py::function forward, const NamedTensors& params, const std::string& inputs) {
        return libprune::report::count_ops(
            libprune::graph::Trace::capture(python_forward(std::move(forward)), params, inputs));
      },
      py::arg("forward"), py::arg("params"), py::arg("inputs") = "");

  m.def("_describe_inputs", &libprune::graph::describe_inputs);
}

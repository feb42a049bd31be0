#include "common.h"

#include "libprune/measure/count_ops.h"

namespace libprune::bindings {

void bind_measure(py::module_& m) {
  using measure::LayerOps;
  using measure::OpCount;
  py::class_<LayerOps>(m, "LayerOps")
      .def_readonly("name", &LayerOps::name)
      .def_readonly("op", &LayerOps::op)
      .def_readonly("macs", &LayerOps::macs)
      .def("__repr__", [](const LayerOps& l) {
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
      .def("__getitem__",
           [](const OpCount& c, int i) {
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
      [](py::function forward, const graph::NamedTensors& params, const std::string& inputs) {
        return measure::count_ops(graph::Trace::capture(python_forward(std::move(forward)), params, inputs));
      },
      py::arg("forward"), py::arg("params"), py::arg("inputs") = "");
  m.def("_describe_inputs", &graph::describe_inputs);
  m.def(
      "_eval_scope",
      [](const py::object& module) {
        // A handle whose close() restores the train flags (the context manager in _model.py).
        auto scope = std::make_shared<std::shared_ptr<void>>(eval_scope(module));
        return py::cpp_function([scope]() { scope->reset(); });
      },
      py::arg("model"), "eval mode for every submodule; returns the callable that restores each one's flag");
}

}  // namespace libprune::bindings

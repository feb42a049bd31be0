#include "common.h"

#include "libprune/measure/count_ops.h"
#include "libprune/measure/latency.h"
#include "libprune/measure/latency_table.h"

namespace libprune::bindings {

namespace {

// Latency tables: built from a Python model's trace and its measured latency (libprune.latency_table).
void bind_latency_table(py::module_& m) {
  using measure::LatencyTable;
  py::class_<LatencyTable, std::shared_ptr<LatencyTable>>(
      m, "LatencyTable", "Each conv and linear layer timed at sampled widths on this machine (libprune.latency_table)")
      .def_property_readonly("dense_ms", &LatencyTable::dense_ms)
      .def_property_readonly("rest_ms", &LatencyTable::rest_ms)
      .def_property_readonly("entries_measured", &LatencyTable::entries_measured)
      .def_property_readonly("entries_reused", &LatencyTable::entries_reused)
      .def_property_readonly("seconds_to_build", &LatencyTable::seconds_to_build)
      .def_property_readonly("cache_file", &LatencyTable::cache_file)
      .def_property_readonly("machine", [](const LatencyTable& t) { return t.machine().to_string(); })
      .def_property_readonly("layers", [](const LatencyTable& t) {
        std::vector<std::string> names;
        for (const auto& s : t.sites()) names.push_back(s.name);
        return names;
      })
      .def("op_ms", &LatencyTable::op_ms, py::arg("layer"), py::arg("in_width"), py::arg("out_width"))
      .def("_predict_ms",
           [](const LatencyTable& t, py::function forward, const graph::NamedTensors& params) {
             return t.predict_ms(graph::Trace::capture(python_forward(std::move(forward)), params));
           })
      .def("__repr__", [](const LatencyTable& t) { return "LatencyTable(" + t.to_string() + ")"; });
  m.def(
      "_latency_table",
      [](py::function forward, const graph::NamedTensors& params, double dense_ms, int threads, bool channels_last,
         int runs, int warmup, const std::string& cache_dir) {
        const auto trace = graph::Trace::capture(python_forward(std::move(forward)), params);
        py::gil_scoped_release release;
        return std::make_shared<LatencyTable>(LatencyTable::build(
            trace, dense_ms,
            measure::LatencyTableOptions().threads(threads).channels_last(channels_last).runs(runs).warmup(warmup).cache_dir(
                cache_dir)));
      },
      py::arg("forward"), py::arg("params"), py::arg("dense_ms"), py::arg("threads"), py::arg("channels_last"),
      py::arg("runs"), py::arg("warmup"), py::arg("cache_dir"));
}

}  // namespace

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
      "_time_calls",
      [](const py::function& call, int threads, int runs, int warmup) {
        return measure::time_calls([&] { call(); }, measure::LatencyOptions().threads(threads).runs(runs).warmup(warmup))
            .median_ms;
      },
      py::arg("call"), py::arg("threads"), py::arg("runs"), py::arg("warmup"));
  bind_latency_table(m);
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

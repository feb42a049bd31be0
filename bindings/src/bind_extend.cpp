// What Python extends or calls into: user criteria, op rules for custom autograd functions, and the
// layer attribute rules that libprune/_layers.py applies to Python modules.
#include "common.h"

#include "libprune/graph/op_rules.h"
#include "libprune/importance/importance.h"
#include "libprune/layers/metadata.h"

namespace libprune::bindings {
namespace {

// A Python criterion's answer (a tensor or a sequence of numbers) as scores.
std::vector<double> scores_of(const py::object& out, const std::string& name, const graph::Group& group) {
  try {
    if (THPVariable_Check(out.ptr())) {
      const auto t = out.cast<torch::Tensor>().detach().to(torch::kFloat64).flatten().contiguous().cpu();
      return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
    }
    return out.cast<std::vector<double>>();
  } catch (const py::cast_error&) {
    TORCH_CHECK_VALUE(false, "importance \"", name, "\" returned ", py::repr(out).cast<std::string>(), " for group ",
                      group.name(), "; nothing was pruned. Fix: return a tensor or a list of numbers, one per channel");
  }
  return {};
}

}  // namespace

void bind_extend(py::module_& m) {
  m.def(
      "_register_importance",
      [](const std::string& name, py::function fn) {
        // Held until the interpreter shuts down; not released after it has (static destruction order).
        std::shared_ptr<py::function> held(new py::function(std::move(fn)), [](py::function* f) {
          if (Py_IsInitialized()) {
            py::gil_scoped_acquire gil;
            delete f;
          }
        });
        importance::register_criterion(name, [held, name](const importance::GroupTensors& g) {
          py::gil_scoped_acquire gil;
          py::dict tensors;
          for (size_t k = 0; k < g.group.members.size(); ++k) {
            if (g.tensors[k].defined()) tensors[py::str(g.group.members[k].tensor)] = g.tensors[k];
          }
          return scores_of((*held)(g.group, tensors), name, g.group);
        });
      },
      py::arg("name"), py::arg("fn"));
  m.def("_unregister_importance", &importance::unregister_criterion, py::arg("name"));
  m.def("importance_criteria", &importance::criteria, "Every criterion's name: the built-ins, then registered ones");
  m.def("_register_op_alias", &graph::register_op_alias, py::arg("op"), py::arg("like"));
  m.def("ruled_ops", &graph::ruled_ops, "The traced ops the dependency graph has a rule for");
  m.def("_layer_attributes", &layers::layer_attributes, py::arg("kind"), py::arg("current"), py::arg("tensors"));
}

}  // namespace libprune::bindings

#pragma once
// Shared by the binding files: the engine's view of a Python nn.Module, Python callables as the
// core's Forward, optimizer views, option structs from keyword arguments, and one function per area
// that adds its bindings to the module.
#include <torch/extension.h>

#include "libprune/layers/model_access.h"
#include "libprune/options.h"

#include <string>
#include <type_traits>

namespace libprune::bindings {

namespace py = pybind11;

// A Python nn.Module as the engine sees it: its tensors are Python's own (set_data keeps them the
// same objects), its attributes follow the C++ layer rules through `layers` (libprune/_layers.py),
// and eval mode comes from eval_scope().
class PyModelAccess : public layers::ModelAccess {
 public:
  PyModelAccess(py::object module, py::object layers) : module_(std::move(module)), layers_(std::move(layers)) {}
  layers::TensorList parameters() const override;
  layers::TensorList buffers() const override;
  std::vector<std::string> module_names() const override;
  void update_metadata() override;
  std::vector<layers::TiedTensor> tied_tensors() const override;
  std::shared_ptr<void> eval_scope() override;

 private:
  py::object module_, layers_;
};

// Every submodule of a Python nn.Module in eval mode until the handle goes, then each one's own flag
// back (the rule nn::EvalModeGuard follows for C++ modules).
std::shared_ptr<void> eval_scope(const py::object& module);

// (held parameters, {name: state tensors}) from Python, as the surgery reads an optimizer.
layers::OptimizerView optimizer_view(const py::object& held, const py::object& state);

// A Python callable returning a list of tensors, as the core's Forward.
graph::Forward python_forward(py::function fn);

// A Python value as an option of `type`; TypeError naming `where` and `name` otherwise.
options::Value to_value(const py::handle& value, options::Type type, const std::string& where, const std::string& name);
py::object to_python(const options::Value& value);

template <typename O, typename = void>
struct HasRenamed : std::false_type {};
template <typename O>
struct HasRenamed<O, std::void_t<decltype(O::renamed())>> : std::true_type {};

// `O` from keyword arguments (`where` is the call, "prune()"): an unknown keyword is a TypeError that
// lists the options, or names the new key of a renamed one; a bad value is a ValueError.
template <typename O>
O from_kwargs(const py::dict& kwargs, const std::string& where) {
  O o;
  for (const auto& [key, value] : kwargs) {
    const auto name = py::cast<std::string>(key);
    const auto* spec = options::find(O::specs(), name);
    if (!spec || spec->name() != name) {
      if constexpr (HasRenamed<O>::value) {
        for (const auto& r : O::renamed()) {
          if (name == r.old_key) throw py::type_error(where + ": '" + name + "' was renamed to '" + r.new_key + "'. Fix: write " + r.new_key + "=...");
        }
      }
      std::vector<std::string> known;
      for (const auto& s : O::specs()) known.push_back(s.name());
      throw py::type_error(where + " got an unexpected keyword argument '" + name + "'. Fix: use one of " +
                           options::join(known));
    }
    spec->set(o, to_value(value, spec->type, where, name));
  }
  return o;
}

// Binds O as a Python class: O(**options), a read-write property per option, __repr__, and the
// class method _defaults() -> [(name, default, doc, type)] from which the Python signatures and the
// stub (bindings/gen_stub.py) are made; type is options::describe's ("a number", "an array of strings").
template <typename O>
py::class_<O> bind_options(py::module_& m, const char* name, const char* doc) {
  py::class_<O> cls(m, name, doc);
  cls.def(py::init([name](py::kwargs kwargs) { return from_kwargs<O>(kwargs, std::string(name) + "()"); }));
  for (const auto& spec : O::specs()) {
    cls.def_property(
        spec.name().c_str(), [&spec](const O& o) { return to_python(spec.get(o)); },
        [&spec, name](O& o, const py::object& v) { spec.set(o, to_value(v, spec.type, name, spec.name())); },
        spec.doc.c_str());
  }
  cls.def("__repr__", [name](const O& o) {
    std::string out = std::string(name) + "(";
    bool first = true;
    for (const auto& spec : O::specs()) {
      out += (first ? "" : ", ") + spec.name() + "=" + py::repr(to_python(spec.get(o))).template cast<std::string>();
      first = false;
    }
    return out + ")";
  });
  cls.def_static("_from_kwargs", [](const std::string& where, const py::dict& kwargs) { return from_kwargs<O>(kwargs, where); });
  cls.def_static("_defaults", [] {
    py::list out;
    const O defaults;
    for (const auto& spec : O::specs()) {
      out.append(py::make_tuple(spec.name(), to_python(spec.get(defaults)), spec.doc, options::describe(spec.type)));
    }
    return out;
  });
  return cls;
}

void bind_errors();
void bind_measure(py::module_& m);
void bind_prune(py::module_& m);
void bind_extend(py::module_& m);
void bind_schedule(py::module_& m);
void bind_recipe(py::module_& m);
void bind_quant(py::module_& m);

}  // namespace libprune::bindings

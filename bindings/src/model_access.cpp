#include "common.h"

namespace libprune::bindings {

layers::TensorList PyModelAccess::parameters() const {
  return py::list(module_.attr("named_parameters")()).cast<layers::TensorList>();
}

layers::TensorList PyModelAccess::buffers() const {
  layers::TensorList out;
  for (const auto& item : py::list(module_.attr("named_buffers")())) {
    auto pair = item.cast<py::tuple>();
    if (!pair[1].is_none()) out.emplace_back(pair[0].cast<std::string>(), pair[1].cast<torch::Tensor>());
  }
  return out;
}

std::vector<std::string> PyModelAccess::module_names() const {
  std::vector<std::string> out;
  for (const auto& item : py::list(module_.attr("named_modules")())) out.push_back(item.cast<py::tuple>()[0].cast<std::string>());
  return out;
}

void PyModelAccess::update_metadata() { layers_.attr("update_metadata")(module_); }

std::vector<layers::TiedTensor> PyModelAccess::tied_tensors() const {
  std::vector<layers::TiedTensor> out;
  for (const auto& t : layers_.attr("tied_tensors")(module_)) {
    auto tup = t.cast<py::tuple>();
    out.push_back({tup[0].cast<std::string>(), tup[1].cast<int64_t>(), tup[2].cast<std::string>()});
  }
  return out;
}

std::shared_ptr<void> PyModelAccess::eval_scope() { return bindings::eval_scope(module_); }

std::shared_ptr<void> eval_scope(const py::object& module) {
  // Every module's own flag, set back directly on exit (no train() call, so order does not matter).
  std::vector<std::pair<py::object, bool>> flags;
  for (const auto& m : module.attr("modules")()) {
    auto obj = py::reinterpret_borrow<py::object>(m);
    flags.emplace_back(obj, obj.attr("training").cast<bool>());
  }
  module.attr("eval")();
  return std::shared_ptr<void>(nullptr, [flags = std::move(flags)](void*) {
    py::gil_scoped_acquire gil;
    for (const auto& [m, flag] : flags) m.attr("training") = flag;
  });
}

layers::OptimizerView optimizer_view(const py::object& held, const py::object& state) {
  layers::OptimizerView view;
  if (held.is_none()) return view;
  view.given = true;
  for (const auto& t : held.cast<std::vector<torch::Tensor>>()) view.held.insert(t.unsafeGetTensorImpl());
  view.state = state.cast<std::map<std::string, std::vector<torch::Tensor>>>();
  return view;
}

graph::Forward python_forward(py::function fn) {
  return [fn]() {
    py::gil_scoped_acquire gil;
    py::object out = fn();
    return out.cast<std::vector<torch::Tensor>>();
  };
}

options::Value to_value(const py::handle& value, options::Type type, const std::string& where, const std::string& name) {
  using options::Type;
  auto wrong = [&]() -> options::Value {
    throw py::type_error(where + ": " + name + " expects " + options::describe(type) + ", got " +
                         py::str(py::type::of(value).attr("__name__")).cast<std::string>() + " (" +
                         py::repr(value).cast<std::string>() + ")");
  };
  const bool is_bool = py::isinstance<py::bool_>(value);
  const bool is_int = py::isinstance<py::int_>(value) && !is_bool;
  switch (type) {
    case Type::Bool: return is_bool ? options::Value(value.cast<bool>()) : wrong();
    case Type::Int: return is_int ? options::Value(value.cast<int64_t>()) : wrong();
    case Type::Number:
      return is_int || py::isinstance<py::float_>(value) ? options::Value(value.cast<double>()) : wrong();
    case Type::Text: return py::isinstance<py::str>(value) ? options::Value(value.cast<std::string>()) : wrong();
    case Type::TextList:
      if (py::isinstance<py::str>(value) || !py::isinstance<py::sequence>(value)) return wrong();
      try {
        return value.cast<std::vector<std::string>>();
      } catch (const py::cast_error&) {
        return wrong();
      }
    case Type::IntList:
      try {
        return value.cast<std::vector<int64_t>>();
      } catch (const py::cast_error&) {
        return wrong();
      }
    case Type::RatioMap: {
      if (!py::isinstance<py::dict>(value)) return wrong();
      options::RatioMap out;
      for (const auto& [k, v] : value.cast<py::dict>()) {
        if (!py::isinstance<py::str>(k) || !(py::isinstance<py::float_>(v) || py::isinstance<py::int_>(v))) return wrong();
        out.emplace_back(k.cast<std::string>(), v.cast<double>());
      }
      return out;
    }
  }
  return wrong();
}

py::object to_python(const options::Value& value) {
  return std::visit(
      [](const auto& x) -> py::object {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, options::RatioMap>) {
          py::dict out;
          for (const auto& [k, r] : x) out[py::str(k)] = r;
          return out;
        } else {
          return py::cast(x);
        }
      },
      value);
}

}  // namespace libprune::bindings

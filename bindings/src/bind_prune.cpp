#include "common.h"

#include "libprune/layers/apply.h"
#include "libprune/layers/exact.h"
#include "libprune/prune/pruner.h"

namespace libprune::bindings {

namespace {

void bind_plan_and_groups(py::module_& m) {
  using layers::PruningPlan;
  py::class_<PruningPlan>(m, "Plan", py::dynamic_attr(), "A pruning plan: the indices kept along each cut tensor dimension")
      .def("to_json", &PruningPlan::to_json)
      .def_static("from_json", &PruningPlan::from_json, py::arg("text"))
      .def("empty", &PruningPlan::empty)
      .def_property_readonly("cuts",
                             [](const PruningPlan& p) {
                               py::list out;
                               for (const auto& c : p.cuts) out.append(py::make_tuple(c.tensor, c.dim, c.original_size, c.keep));
                               return out;
                             })
      .def_property_readonly("groups", [](const PruningPlan& p) { return p.groups; })
      .def_property_readonly("notes", [](const PruningPlan& p) { return p.notes; }, "what the plan decided: budgets met, floors held")
      .def_property_readonly("importance_kept", [](const PruningPlan& p) { return p.importance_kept; },
                             "share of the scored groups' importance the plan keeps (each group's scores over their mean); -1 when none was scored")
      .def("__repr__", [](const PruningPlan& p) {
        return "Plan(" + std::to_string(p.cuts.size()) + " cuts over " + std::to_string(p.groups.size()) + " groups)";
      });
  using graph::Group;
  py::class_<Group>(m, "Group")
      .def_property_readonly("name", &Group::name)
      .def_property_readonly("size", &Group::size)
      .def_readonly("pinned", &Group::pinned)
      .def_readonly("reason", &Group::reason)
      .def_readonly("hidden", &Group::hidden, "whether this is the hidden size (embedding dim) of a model with attention")
      .def_readonly("normalised", &Group::normalised,
                    "whether a LayerNorm or GroupNorm normalises across these channels (its cut is not exact)")
      .def_property_readonly("indices", &Group::indices,
                             "indices[unit][member]: the indices each unit (channel, head) owns along each member")
      .def_property_readonly("members",
                             [](const Group& g) {
                               py::list out;
                               for (const auto& mem : g.members) out.append(py::make_tuple(mem.tensor, mem.dim));
                               return out;
                             })
      .def("__repr__", [](const Group& g) {
        return "Group('" + g.name() + "', size=" + std::to_string(g.size()) + (g.pinned ? ", pinned" : "") + ")";
      });
  py::class_<graph::DependencyGraph>(m, "_DependencyGraph")
      .def_property_readonly("groups", &graph::DependencyGraph::groups)
      .def("explain", &graph::DependencyGraph::explain);
}

}  // namespace

void bind_prune(py::module_& m) {
  bind_plan_and_groups(m);
  bind_options<prune::PrunerOptions>(m, "PrunerOptions",
                                     "The pruner's options, the same as a recipe's pruning stage keys and prune()'s "
                                     "keyword arguments: PrunerOptions(ratio=0.5, importance=\"l2\")");
  // The pruner behind prune(), DependencyGraph and Pruner (which keeps it across steps).
  using prune::Pruner;
  py::class_<Pruner, std::shared_ptr<Pruner>>(m, "_Pruner")
      .def(py::init([](py::object model, py::object layers, py::function forward, const prune::PrunerOptions& options) {
        return std::make_shared<Pruner>(std::make_shared<PyModelAccess>(std::move(model), std::move(layers)),
                                        python_forward(std::move(forward)), options);
      }))
      .def("set_ratio", &Pruner::set_ratio)
      .def("set_progress", &Pruner::set_progress)
      .def("set_latency_table",
           [](Pruner& p, std::shared_ptr<measure::LatencyTable> table) { p.set_latency_table(std::move(table)); })
      .def("set_sensitivity",
           [](Pruner& p, const std::string& scan_json) {
             p.set_sensitivity(std::make_shared<prune::Sensitivity>(prune::Sensitivity::from_json(scan_json)));
           })
      .def("record_sizes", &Pruner::record_sizes)
      .def("graph", &Pruner::graph)
      .def("step",
           [](Pruner& p, py::object held, py::object state) {
             const auto view = optimizer_view(held, state);
             return py::make_tuple(p.step(view.given ? &view : nullptr), p.verification_pins());
           })
      .def("remove_units",
           [](Pruner& p, const std::map<std::string, std::vector<int64_t>>& units, py::object held, py::object state) {
             const auto view = optimizer_view(held, state);
             return p.remove_units(units, view.given ? &view : nullptr);
           })
      .def("sensitivity",
           [](const Pruner& p, const py::function& evaluate, const std::vector<double>& ratios) {
             return p.sensitivity(
                        [&] {
                          const py::object value = evaluate();
                          if (!py::hasattr(value, "__float__") || py::isinstance<py::str>(value)) {
                            throw py::type_error("sensitivity: evaluate() returned " +
                                                 std::string(py::str(py::type::of(value).attr("__name__"))) +
                                                 ", not a number. Fix: return the metric as a float (e.g. top-1 %)");
                          }
                          return py::float_(value).cast<double>();
                        },
                        ratios)
                 .to_json();
           })
      .def_property_readonly("history", &Pruner::history);
  py::class_<layers::ExactReport>(m, "ExactReport", "What check_plan found: the worst difference and the first group that breaks it")
      .def_readonly("worst", &layers::ExactReport::worst,
                    "largest |pruned - masked dense| over an output's largest magnitude, the worst output")
      .def_readonly("tolerance", &layers::ExactReport::tolerance)
      .def_readonly("exact", &layers::ExactReport::exact)
      .def_readonly("group", &layers::ExactReport::group, "the first group whose own cut breaks it ('' when exact)")
      .def_readonly("problem", &layers::ExactReport::problem)
      .def_readonly("normalised", &layers::ExactReport::normalised, "groups a norm normalises across: shapes only")
      .def("__bool__", [](const layers::ExactReport& r) { return r.exact; })
      .def("__repr__", [](const layers::ExactReport& r) { return "ExactReport(" + r.to_string() + ")"; });
  m.def("_check_exact", [](py::object before, py::function before_forward, py::object after, py::function after_forward,
                           py::object layers, const layers::PruningPlan& plan, double tolerance) {
    PyModelAccess b(std::move(before), layers), a(std::move(after), layers);
    return layers::check_exact(b, python_forward(std::move(before_forward)), a,
                               python_forward(std::move(after_forward)), plan, tolerance);
  });
  m.def("_apply_plan", [](py::object model, py::object layers, const layers::PruningPlan& plan, py::object held,
                          py::object state) {
    PyModelAccess access(std::move(model), std::move(layers));
    const auto view = optimizer_view(held, state);
    layers::apply_plan(access, plan, view.given ? &view : nullptr);
  });
}

}  // namespace libprune::bindings

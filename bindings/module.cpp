// The Python face of libprune. Everything that decides runs in the C++ core; this file only
// converts arguments and errors. Python-only chores (flattening outputs, eval mode on an
// nn.Module) live in the small adapters in bindings/libprune/*.py.
#include <torch/extension.h>

#include <algorithm>
#include <chrono>

#include "libprune/libprune.h"
#include "libprune/recipe/recipe.h"
#include "libprune/recipe/runner.h"

namespace py = pybind11;
using libprune::graph::Forward;
using libprune::graph::NamedTensors;

namespace {

// The engine's view of a Python nn.Module: tensors are Python's own (set_data keeps them the
// same objects), and the few Python-only chores go to bindings/libprune/_adapters.py.
class PyModelAccess : public libprune::layers::ModelAccess {
 public:
  PyModelAccess(py::object module, py::object adapters) : module_(std::move(module)), adapters_(std::move(adapters)) {}
  libprune::layers::TensorList parameters() const override {
    return py::list(module_.attr("named_parameters")()).cast<libprune::layers::TensorList>();
  }
  libprune::layers::TensorList buffers() const override {
    libprune::layers::TensorList out;
    for (const auto& item : py::list(module_.attr("named_buffers")())) {
      auto pair = item.cast<py::tuple>();
      if (!pair[1].is_none()) out.emplace_back(pair[0].cast<std::string>(), pair[1].cast<torch::Tensor>());
    }
    return out;
  }
  std::vector<std::string> module_names() const override {
    std::vector<std::string> out;
    for (const auto& item : py::list(module_.attr("named_modules")())) out.push_back(item.cast<py::tuple>()[0].cast<std::string>());
    return out;
  }
  void update_metadata() override { adapters_.attr("update_metadata")(module_); }
  std::vector<libprune::layers::TiedTensor> tied_tensors() const override {
    std::vector<libprune::layers::TiedTensor> out;
    for (const auto& t : adapters_.attr("tied_tensors")(module_)) {
      auto tup = t.cast<py::tuple>();
      out.push_back({tup[0].cast<std::string>(), tup[1].cast<int64_t>(), tup[2].cast<std::string>()});
    }
    return out;
  }
  std::shared_ptr<void> eval_scope() override {
    py::object restore = adapters_.attr("enter_eval")(module_);
    return std::shared_ptr<void>(nullptr, [restore](void*) {
      py::gil_scoped_acquire gil;
      restore();
    });
  }

 private:
  py::object module_, adapters_;
};

libprune::layers::OptimizerView optimizer_view(const py::object& held, const py::object& state) {
  libprune::layers::OptimizerView view;
  if (held.is_none()) return view;
  view.given = true;
  for (const auto& t : held.cast<std::vector<torch::Tensor>>()) view.held.insert(t.unsafeGetTensorImpl());
  view.state = state.cast<std::map<std::string, std::vector<torch::Tensor>>>();
  return view;
}

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

  using libprune::measure::OpCount;
  py::class_<libprune::measure::LayerOps>(m, "LayerOps")
      .def_readonly("name", &libprune::measure::LayerOps::name)
      .def_readonly("op", &libprune::measure::LayerOps::op)
      .def_readonly("macs", &libprune::measure::LayerOps::macs)
      .def("__repr__", [](const libprune::measure::LayerOps& l) {
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
        return libprune::measure::count_ops(
            libprune::graph::Trace::capture(python_forward(std::move(forward)), params, inputs));
      },
      py::arg("forward"), py::arg("params"), py::arg("inputs") = "");

  m.def("_describe_inputs", &libprune::graph::describe_inputs);

  using libprune::layers::PruningPlan;
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
      .def("__repr__", [](const PruningPlan& p) {
        return "Plan(" + std::to_string(p.cuts.size()) + " cuts over " + std::to_string(p.groups.size()) + " groups)";
      });

  using libprune::graph::Group;
  py::class_<Group>(m, "Group")
      .def_property_readonly("name", &Group::name)
      .def_property_readonly("size", &Group::size)
      .def_readonly("pinned", &Group::pinned)
      .def_readonly("reason", &Group::reason)
      .def_readonly("hidden", &Group::hidden, "whether this is the hidden size (embedding dim) of a model with attention")
      .def_property_readonly("indices", [](const Group& g) { return g.indices; },
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
  py::class_<libprune::graph::DependencyGraph>(m, "_DependencyGraph")
      .def_property_readonly("groups", &libprune::graph::DependencyGraph::groups)
      .def("explain", &libprune::graph::DependencyGraph::explain);

  // The pruner behind prune(), DependencyGraph and Pruner (which keeps it across steps).
  py::class_<libprune::prune::Pruner, std::shared_ptr<libprune::prune::Pruner>>(m, "_Pruner")
      .def(py::init([](py::object model, py::object adapters, py::function forward, py::dict o) {
        libprune::prune::RatioOverrides overrides;
        for (const auto& kv : o["overrides"].cast<py::dict>()) {
          overrides.emplace_back(kv.first.cast<std::string>(), kv.second.cast<double>());
        }
        return std::make_shared<libprune::prune::Pruner>(
            std::make_shared<PyModelAccess>(std::move(model), std::move(adapters)), python_forward(std::move(forward)),
            libprune::prune::PrunerOptions()
                .ratio(o["ratio"].cast<double>())
                .importance(o["importance"].cast<std::string>())
                .reduction(o["reduction"].cast<std::string>())
                .normalize(o["normalize"].cast<bool>())
                .seed(o["seed"].cast<uint64_t>())
                .global_ranking(o["global_ranking"].cast<bool>())
                .ignored(o["ignored"].cast<std::vector<std::string>>())
                .overrides(overrides)
                .round_to(o["round_to"].cast<int64_t>())
                .max_ratio(o["max_ratio"].cast<double>())
                .min_channels(o["min_channels"].cast<int64_t>())
                .verify(o["verify"].cast<bool>())
                .prune_hidden(o["prune_hidden"].cast<bool>()));
      }))
      .def("set_ratio", &libprune::prune::Pruner::set_ratio)
      .def("record_sizes", &libprune::prune::Pruner::record_sizes)
      .def("graph", &libprune::prune::Pruner::graph)
      .def("plan", &libprune::prune::Pruner::plan)
      .def("step", [](libprune::prune::Pruner& p, py::object held, py::object state) {
        const auto view = optimizer_view(held, state);
        return py::make_tuple(p.step(view.given ? &view : nullptr), p.verification_pins());
      })
      .def_property_readonly("history", &libprune::prune::Pruner::history);

  using libprune::schedule::Schedule;
  py::class_<Schedule>(m, "Schedule", "How much to prune, and when: one_shot, iterative or agp (Zhu & Gupta)")
      .def(py::init([](const std::string& kind, double target, double start_epoch, double end_epoch, double frequency,
                       int64_t steps, double initial) {
             return Schedule(libprune::schedule::ScheduleOptions()
                                 .kind(libprune::schedule::parse_schedule(kind))
                                 .target(target)
                                 .start_epoch(start_epoch)
                                 .end_epoch(end_epoch)
                                 .frequency(frequency)
                                 .steps(steps)
                                 .initial(initial));
           }),
           py::arg("kind") = "one_shot", py::arg("target") = 0.5, py::arg("start_epoch") = 0, py::arg("end_epoch") = 0,
           py::arg("frequency") = 1.0, py::arg("steps") = 1, py::arg("initial") = 0.0)
      .def("prunes_at", &Schedule::prunes_at, py::arg("epoch"))
      .def("ratio_at", &Schedule::ratio_at, py::arg("epoch"))
      .def("steps", &Schedule::steps)
      .def("steps_between", &Schedule::steps_between, py::arg("start"), py::arg("end"),
           "(time, ratio) steps due in (start, end]: call once per batch with epoch + batch / batches_per_epoch and "
           "epoch + (batch + 1) / batches_per_epoch to cut between batches")
      .def("next_step_after", &Schedule::next_step_after, py::arg("epoch"));

  m.def(
      "_run_recipe",
      [](const std::string& path, std::vector<std::string> sets, bool resume, bool print) {
        libprune::recipe::RunOptions o;
        o.sets = std::move(sets);
        o.resume = resume;
        o.print = print;
        libprune::recipe::RunResult r;
        {
          py::gil_scoped_release release;
          r = libprune::recipe::run(path, o);
        }
        return py::make_tuple(r.completed, r.summary_json, r.output_dir);
      },
      py::arg("path"), py::arg("sets"), py::arg("resume") = false, py::arg("print") = true);
  m.def("_recipe_defaults", &libprune::recipe::defaults);

  m.def("retain_freed_memory", &libprune::retain_freed_memory, py::arg("max_block_bytes") = int64_t{32} << 20,
        "Keep freed tensor memory in the process instead of returning it to the OS (glibc mallopt), so a "
        "training loop does not fault its activations' pages in again every step. Process-wide; on the 2-core "
        "dev VM a ResNet-20 step went from 200-570 ms to 108 ms. Returns False (nothing changed) off glibc.");

  // The C++ half of scripts/bench_train_step.py: median seconds of one SGD training step of a zoo
  // model, run entirely in C++ (the GIL released).
  m.def("_train_step_seconds", [](const std::string& name, int64_t classes, int64_t batch, int64_t size, int steps,
                                  bool channels_last) {
    py::gil_scoped_release release;
    torch::manual_seed(0);
    auto model = libprune::models::create(name, libprune::models::ModelOptions().num_classes(classes));
    if (channels_last) libprune::nn::to_memory_format(*model, torch::MemoryFormat::ChannelsLast);
    torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9).weight_decay(5e-4));
    auto x = torch::randn({batch, 3, size, size});
    if (channels_last) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
    auto y = torch::randint(classes, {batch}, torch::kLong);
    model->train();
    std::vector<double> times;
    for (int s = 0; s < steps + 2; ++s) {
      const auto t0 = std::chrono::steady_clock::now();
      opt.zero_grad();
      torch::nn::functional::cross_entropy(model->forward(x), y).backward();
      opt.step();
      if (s >= 2) times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
  });

  m.def("_apply_plan", [](py::object model, py::object adapters, const PruningPlan& plan, py::object held,
                          py::object state) {
    PyModelAccess access(std::move(model), std::move(adapters));
    const auto view = optimizer_view(held, state);
    libprune::layers::apply_plan(access, plan, view.given ? &view : nullptr);
  });
}

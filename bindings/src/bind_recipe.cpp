#include "common.h"

#include "libprune/models/registry.h"
#include "libprune/recipe/recipe.h"
#include "libprune/recipe/runner.h"
#include "libprune/runtime.h"

namespace libprune::bindings {

void bind_recipe(py::module_& m) {
  m.def("model_names", &models::names, "Names of the C++ model zoo's models");
  m.def(
      "_run_recipe",
      [](const std::string& path, std::vector<std::string> sets, bool resume, bool print) {
        recipe::RunOptions o;
        o.sets = std::move(sets);
        o.resume = resume;
        o.print = print;
        recipe::RunResult r;
        {
          py::gil_scoped_release release;
          r = recipe::run(path, o);
        }
        return py::make_tuple(r.completed, r.summary_json, r.output_dir);
      },
      py::arg("path"), py::arg("sets"), py::arg("resume") = false, py::arg("print") = true);
  m.def("retain_freed_memory", &retain_freed_memory, py::arg("max_block_bytes") = int64_t{32} << 20,
        "Keep freed tensor memory in the process instead of returning it to the OS (glibc mallopt), so a training "
        "loop does not fault its activations' pages in again every step. Process-wide; on the 2-core dev VM a "
        "ResNet-20 step went from 200-570 ms to 108 ms. Returns False (nothing changed) off glibc.");
}

}  // namespace libprune::bindings

// The Python face of libprune. Everything that decides runs in the C++ core; these files convert
// arguments and errors, one file per area. Python-only chores (calling an nn.Module, reading and
// writing its attributes) live in the small modules beside libprune/__init__.py.
#include "common.h"

#include "libprune/version.h"

PYBIND11_MODULE(_libprune, m) {
  m.doc() = "libprune: structural pruning on LibTorch (C++ core, Python bindings)";
  m.attr("__version__") = libprune::version();
  libprune::bindings::bind_errors();
  libprune::bindings::bind_measure(m);
  libprune::bindings::bind_prune(m);
  libprune::bindings::bind_extend(m);
  libprune::bindings::bind_schedule(m);
  libprune::bindings::bind_recipe(m);
  libprune::bindings::bind_quant(m);
}

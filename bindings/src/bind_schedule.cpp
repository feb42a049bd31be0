#include "common.h"

#include "libprune/schedule/schedule.h"

namespace libprune::bindings {

void bind_schedule(py::module_& m) {
  using schedule::Schedule;
  using schedule::ScheduleOptions;
  bind_options<ScheduleOptions>(m, "ScheduleOptions", "A schedule's options: ScheduleOptions(kind=\"agp\", ratio=0.5, ...)");
  py::class_<Schedule>(m, "Schedule", "How much to prune, and when: one_shot, iterative or agp (Zhu & Gupta)")
      .def(py::init([](const std::string& kind, py::kwargs kwargs) {
             auto o = from_kwargs<ScheduleOptions>(kwargs, "Schedule()");
             o.kind(options::parse<schedule::ScheduleKind>(kind));
             return Schedule(o);
           }),
           py::arg("kind") = "one_shot")
      .def("prunes_at", &Schedule::prunes_at, py::arg("epoch"))
      .def("ratio_at", &Schedule::ratio_at, py::arg("epoch"))
      .def("steps", &Schedule::steps)
      .def("steps_between", &Schedule::steps_between, py::arg("start"), py::arg("end"),
           "(time, ratio) steps due in (start, end]: call once per batch with epoch + batch / batches_per_epoch and "
           "epoch + (batch + 1) / batches_per_epoch to cut between batches")
      .def("next_step_after", &Schedule::next_step_after, py::arg("epoch"))
      .def_property_readonly("options", &Schedule::options);
}

}  // namespace libprune::bindings

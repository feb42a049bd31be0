#include "helpers.h"
#include "libprune/libprune.h"

using namespace libprune;

TEST_CASE("latency: median and p90 over timed runs, with threads and batch", "[latency]") {
  auto m = models::cifar_resnet(20, models::ModelOptions().num_classes(10));
  m->train();
  const int threads_before = torch::get_num_threads();
  const auto lat = report::measure_latency(m, torch::randn({4, 3, 32, 32}),
                                           report::LatencyOptions().warmup(1).runs(5).threads(1).channels_last(true));
  CHECK(lat.runs == 5);
  CHECK(lat.threads == 1);
  CHECK(lat.batch == 4);
  CHECK(lat.channels_last);
  CHECK(lat.median_ms > 0);
  CHECK(lat.p90_ms >= lat.median_ms);
  CHECK(lat.min_ms <= lat.median_ms);
  CHECK(torch::get_num_threads() == threads_before);
  CHECK(m->is_training());
  CHECK(m->conv1->weight.is_contiguous(torch::MemoryFormat::ChannelsLast));
  CHECK_THAT(lat.to_string(), Catch::Contains("batch 4") && Catch::Contains("1 threads"));
}

TEST_CASE("latency: bad options are errors", "[latency]") {
  auto m = models::create("cifar_resnet20", models::ModelOptions().num_classes(10));
  CHECK_THROWS_WITH(report::measure_latency(m, torch::randn({1, 3, 32, 32}), report::LatencyOptions().runs(0)),
                    Catch::Contains("runs must be at least 1"));
  auto mlp = torch::nn::Linear(4, 2);
  CHECK_THROWS_WITH(report::measure_latency(mlp, torch::randn({2, 4}), report::LatencyOptions().channels_last(true)),
                    Catch::Contains("channels_last needs a 4-D"));
}

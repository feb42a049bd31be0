// The quantization sensitivity scan: each point is the metric of the model with only that unit
// quantised at that width, the model is as it was afterwards, and bad input changes nothing.
#include "helpers.h"
#include "libprune/libprune.h"

using namespace libprune;

namespace {

struct ScanSetup {
  models::ResNet m = nullptr;
  torch::Tensor calib, held_out, w;

  // The same model, data and weights every time.
  ScanSetup() {
    torch::manual_seed(0);
    m = models::cifar_resnet(20, models::ModelOptions().num_classes(10));
    calib = torch::randn({32, 3, 16, 16}) * 0.5 + 0.2;
    held_out = torch::randn({16, 3, 16, 16}) * 0.5 + 0.2;
    w = torch::randn({16, 10});
    torch::NoGradGuard no_grad;
    m->train();  // batch-norm statistics unlike their initial ones
    for (int i = 0; i < 4; ++i) m->forward(torch::randn({16, 3, 16, 16}) * 0.5 + 0.2);
  }
  graph::Forward forward() {
    auto net = m;
    auto x = calib.slice(0, 0, 2);
    return [net, x]() mutable { return std::vector<torch::Tensor>{net->forward(x)}; };
  }
  void calibrate() {
    for (int i = 0; i < 2; ++i) m->forward(calib.slice(0, i * 16, (i + 1) * 16));
  }
  // A number that moves with every logit: the logits weighted by fixed random weights, in eval mode.
  double metric() {
    torch::NoGradGuard no_grad;
    m->eval();
    return (m->forward(held_out) * w).sum().item<double>();
  }
};

std::vector<std::string> split_unit(const std::string& line) {
  std::vector<std::string> names;
  size_t start = 0;
  for (size_t at; (at = line.find(" + ", start)) != std::string::npos; start = at + 3) names.push_back(line.substr(start, at - start));
  names.push_back(line.substr(start));
  return names;
}

// The metric with prepare's quantisers at `bits`, calibrated, rounding only where `on` says: by
// quantiser name, built without the scan's code.
double prepared_metric(int64_t bits, const std::function<bool(const std::string&)>& on) {
  auto copy = ScanSetup();
  quant::prepare(*copy.m, copy.forward(), quant::QuantOptions().bits(bits).observer(quant::Observer::min_max));
  quant::calibration_mode(*copy.m);
  {
    torch::NoGradGuard no_grad;
    copy.calibrate();
  }
  for (auto& item : copy.m->named_modules("", false)) {
    if (auto fq = std::dynamic_pointer_cast<quant::FakeQuantizeImpl>(item.value())) {
      fq->calculate_qparams();
      fq->enable_observer(false);
      fq->enable_fake_quant(on(item.key()));
    }
  }
  return copy.metric();
}

}  // namespace

TEST_CASE("quant sensitivity: each point is the model with only that unit quantised at that width; nothing changes",
          "[quant]") {
  ScanSetup s;
  const auto before = test::snapshot(*s.m);
  const auto options = quant::QuantOptions().observer(quant::Observer::min_max);
  const auto scan = quant::sensitivity(*s.m, s.forward(), [&] { s.calibrate(); }, [&] { return s.metric(); }, {8, 4}, options);
  CHECK(test::same(before, test::snapshot(*s.m)));
  CHECK_FALSE(quant::is_prepared(*s.m));
  CHECK(s.m->is_training());  // the mode it was in
  CHECK(scan.baseline == Approx(s.metric()));
  REQUIRE(scan.rows.size() == 31);  // prepare's units: stem, 9 blocks x 3, 2 downsamples, fc
  CHECK(scan.rows[0].unit == "conv1 + bn1 + relu");
  CHECK(scan.bits == std::vector<int64_t>{8, 4});
  // Three units rebuilt by quantiser name, at both widths: the stem (input, weight and output
  // rounded), a residual add (its output only) and the classifier (weight; its input follows a
  // functional pooling, so it has its own quantiser; its logits stay float).
  for (const size_t i : {size_t{0}, size_t{3}, size_t{30}}) {
    const auto names = split_unit(scan.rows[i].unit);
    for (size_t b = 0; b < scan.bits.size(); ++b) {
      const double expected = prepared_metric(scan.bits[b], [&](const std::string& q) {
        return q == names.front() + ".weight_fake_quant" || q == names.front() + ".input_fake_quant" ||
               q == names.back() + ".output_fake_quant";
      });
      INFO(scan.rows[i].unit << " at " << scan.bits[b] << " bits");
      CHECK(scan.rows[i].metric[b] == Approx(expected).epsilon(1e-6));
      CHECK(scan.rows[i].metric[b] != Approx(scan.baseline).epsilon(1e-6));  // it did round
    }
  }
  CHECK(scan.rows[3].unit == "layer1.0.add + layer1.0.relu2");
  for (size_t b = 0; b < scan.bits.size(); ++b) {
    CHECK(scan.all[b] == Approx(prepared_metric(scan.bits[b], [](const std::string&) { return true; })).epsilon(1e-6));
  }
  // 4 bits costs more than 8, unit by unit on the whole.
  double drop8 = 0, drop4 = 0;
  for (const auto& r : scan.rows) {
    drop8 += std::abs(r.metric[0] - scan.baseline);
    drop4 += std::abs(r.metric[1] - scan.baseline);
  }
  CHECK(drop4 > 4 * drop8);
  const auto json = nlohmann::json::parse(scan.to_json());
  CHECK(json["rows"].size() == 31);
  CHECK(json["rows"][3]["unit"] == "layer1.0.add + layer1.0.relu2");
  CHECK(json["all"].size() == 2);
  CHECK_THAT(scan.to_string(), Catch::Contains("4-bit") && Catch::Contains("(every unit at once)"));
}

TEST_CASE("quant sensitivity: bad input names the problem and leaves the model as it was", "[quant]") {
  ScanSetup s;
  const auto before = test::snapshot(*s.m);
  const auto calibrate = [&] { s.calibrate(); };
  const auto evaluate = [&] { return s.metric(); };
  const auto scan_message = [&](const std::vector<int64_t>& bits, std::function<void()> cal) {
    return test::message_of([&] { quant::sensitivity(*s.m, s.forward(), cal, evaluate, bits); });
  };
  CHECK_THAT(scan_message({8, 1}, calibrate), Catch::Contains("bits.1 is 1 bits") && Catch::Contains("2 to 8"));
  CHECK_THAT(scan_message({4, 4}, calibrate), Catch::Contains("repeats 4 bits"));
  CHECK_THAT(scan_message({}, calibrate), Catch::Contains("is empty"));
  CHECK_THAT(scan_message({8}, nullptr), Catch::Contains("no calibrate function"));
  // An evaluate that throws mid-scan (quantisers on, one unit rounding): its error, and the model as
  // it was, each layer's train flag included (a frozen batch norm in a training model stays frozen).
  s.m->train();
  s.m->bn1->eval();
  int calls = 0;
  const auto midway = test::message_of([&] {
    quant::sensitivity(*s.m, s.forward(), calibrate, [&] {
      if (++calls == 3) throw std::runtime_error("metric failed");
      return s.metric();
    });
  });
  CHECK(calls == 3);
  CHECK(midway == "metric failed");
  CHECK_FALSE(quant::is_prepared(*s.m));
  CHECK(s.m->is_training());
  CHECK_FALSE(s.m->bn1->is_training());
  CHECK(s.m->stages[0][0]->as<models::BasicBlockImpl>()->bn1->is_training());
  CHECK(test::same(before, test::snapshot(*s.m)));
  // A calibration that runs nothing: named, and every quantiser taken off again.
  s.m->train();
  const auto nothing = scan_message({8}, [] {});
  CHECK_THAT(nothing, Catch::Contains("saw no finite value during calibration") && Catch::Contains("conv1."));
  CHECK_FALSE(quant::is_prepared(*s.m));
  CHECK(s.m->is_training());
  CHECK(test::same(before, test::snapshot(*s.m)));
  quant::prepare(*s.m, s.forward());
  CHECK_THAT(scan_message({8}, calibrate), Catch::Contains("already has fake quantisers") &&
                                                Catch::Contains("before quant::prepare"));
}

TEST_CASE("quant sensitivity: worst_units names the units with the lowest metric at a width, ties in call order",
          "[quant]") {
  const std::string scan = R"({"bits": [8, 4], "rows": [
      {"unit": "conv1 + bn1 + relu", "metric": [90.0, 10.0]},
      {"unit": "layer1.0.conv1 + layer1.0.bn1", "metric": [89.0, 80.0]},
      {"unit": "layer1.0.add + layer1.0.relu2", "metric": [90.0, 85.0]},
      {"unit": "fc -> fc", "metric": [89.0, 88.0]}]})";
  CHECK(quant::worst_units(scan, 8, 2) == std::vector<std::string>{"layer1.0.conv1", "fc"});
  CHECK(quant::worst_units(scan, 8, 3) == std::vector<std::string>{"layer1.0.conv1", "fc", "conv1"});
  CHECK(quant::worst_units(scan, 4, 1) == std::vector<std::string>{"conv1"});
  CHECK(quant::worst_units(scan, 8, 0).empty());
  CHECK_THROWS_WITH(quant::worst_units(scan, 6, 1), Catch::Contains("no 6-bit column") && Catch::Contains("8, 4"));
  CHECK_THROWS_WITH(quant::worst_units(scan, 8, 4), Catch::Contains("4 of 4 units") && Catch::Contains("Fix:"));
}

// Quantization inside a recipe run: QAT after pruning, post-training quantization, the report's rows,
// resume after QAT started, and the quantization section's checks.
#include "helpers.h"
#include "libprune/io/checkpoint.h"
#include "libprune/recipe/recipe.h"
#include "libprune/recipe/runner.h"
#include "libprune/quant/sensitivity.h"

#include <nlohmann/json.hpp>

#include <fstream>

using namespace libprune;
using nlohmann::json;

namespace {

// Prunes at epochs 1 and 2 (AGP to 50%), fine-tunes in epoch 2, QAT from epoch 3; 4 batches an epoch.
std::string hybrid_recipe(const test::TempDir& dir) {
  const std::string path = dir.file("hybrid.json");
  std::ofstream(path) << R"({
    "name": "hybrid", "model": {"name": "cifar_resnet20"},
    "data": {"kind": "synthetic", "synthetic_size": 8, "synthetic_channels": 1, "limit_train": 64, "limit_eval": 64},
    "training": {"epochs": 5, "batch_size": 16, "optimizer": {"name": "sgd", "lr": 0.05}, "progress": false, "threads": 2},
    "pruning": [{"importance": "l2", "schedule": {"kind": "agp", "start_epoch": 1, "end_epoch": 2}, "ratio": 0.5,
                 "ignored_layers": ["fc"], "round_to": 8}],
    "quantization": {"mode": "qat", "start_epoch": 3, "freeze_observers_epoch": 4, "freeze_bn_epoch": 4,
                     "calibration_batches": 2, "simulate_bits": 4},
    "report": {"latency_runs": 2, "latency_warmup": 1, "latency_threads": 1, "quant_sensitivity_bits": [8, 4]},
    "output_dir": ")" + dir.file("out") + R"("})";
  return path;
}

recipe::RunResult run(const std::string& path, std::vector<std::string> sets, int64_t stop_after = 0, bool resume = false) {
  recipe::RunOptions o;
  o.print = false;
  o.sets = std::move(sets);
  o.stop_after_epochs = stop_after;
  o.resume = resume;
  return recipe::run(path, o);
}

}  // namespace

TEST_CASE("runner: prune, fine-tune, QAT, convert; five rows; killed after QAT started and resumed, it ends the same",
          "[quant]") {
  test::TempDir dir("qat_recipe");
  const auto path = hybrid_recipe(dir);
  const auto a = run(path, {"output_dir=" + dir.file("a")});
  REQUIRE(a.completed);
  const auto s = json::parse(a.summary_json);
  CHECK(s["quantization"] == "qat");
  std::vector<std::string> keys, labels;
  for (const auto& r : s["rows"]) keys.push_back(r["row"]), labels.push_back(r["label"]);
  CHECK(keys == std::vector<std::string>{"dense", "pruned", "int8", "pruned_int8", "pruned_int8_ptq", "pruned_lowbit"});
  CHECK(labels == std::vector<std::string>{"dense", "pruned", "int8 (PTQ)", "pruned+int8 (QAT)", "pruned+int8 (PTQ)",
                                           "pruned+int4 (simulated QAT)"});
  // The simulated 4-bit row: an accuracy of the pruned architecture, no file, no latency.
  CHECK(s["pruned_lowbit"]["bits"] == 4);
  CHECK(s["pruned_lowbit"]["params"] == s["pruned"]["params"]);
  CHECK(s["pruned_lowbit"]["accuracy"].get<double>() > 0);
  CHECK_FALSE(s["pruned_lowbit"].contains("size_bytes"));
  // int8 rows keep their float row's architecture and are about 4x smaller on file.
  CHECK(s["pruned_int8"]["params"] == s["pruned"]["params"]);
  CHECK(s["int8"]["macs"] == s["dense"]["macs"]);
  CHECK(s["pruned"]["params"].get<int64_t>() < s["dense"]["params"].get<int64_t>() / 3);
  CHECK(s["pruned_int8"]["size_bytes"].get<double>() < s["pruned"]["size_bytes"].get<double>() / 3);
  CHECK(s["int8"]["size_bytes"].get<double>() < s["dense"]["size_bytes"].get<double>() / 3);
  // Timed rows have latencies; the PTQ comparison row is accuracy and size only.
  for (const char* key : {"dense", "pruned", "int8", "pruned_int8"}) CHECK(s[key].contains("latency_ms_b32"));
  CHECK_FALSE(s["pruned_int8_ptq"].contains("latency_ms_b32"));
  // The log marks the QAT stage.
  std::ifstream log(dir.file("a/metrics.jsonl"));
  int qat_records = 0;
  for (std::string line; std::getline(log, line);) qat_records += line.find("\"type\":\"qat\"") != std::string::npos;
  CHECK(qat_records == 1);
  // The quantization scan, of the pruned float model just before QAT prepared it: its float metric is
  // the pruned row's top-1 (every eval batch), each of its 31 units has a point per width.
  const auto& scan = s["quant_sensitivity"];
  CHECK(scan["baseline"].get<double>() == Approx(s["pruned"]["accuracy"].get<double>()));
  CHECK(scan["bits"] == json::array({8, 4}));
  REQUIRE(scan["rows"].size() == 31);
  CHECK(scan["rows"][30]["unit"] == "fc");
  CHECK(scan["rows"][30]["metric"].size() == 2);
  CHECK(scan["calibration_batches"] == 2);

  // Killed after epoch 4 (QAT running, its state in the checkpoint), then resumed: the same figures.
  CHECK_FALSE(run(path, {"output_dir=" + dir.file("b")}, 4).completed);
  CHECK(io::read_checkpoint_meta(dir.file("b/last.ckpt")).epoch == 4);
  const auto b = run(path, {"output_dir=" + dir.file("b")}, 0, true);
  REQUIRE(b.completed);
  const auto t = json::parse(b.summary_json);
  for (const char* key : {"dense", "pruned", "int8", "pruned_int8", "pruned_int8_ptq", "pruned_lowbit"}) {
    CHECK(t[key]["accuracy"] == s[key]["accuracy"]);
    CHECK(t[key].value("size_bytes", 0.0) == s[key].value("size_bytes", 0.0));
  }
  // The scan ran before the kill, and came back from the checkpoint.
  CHECK(t["quant_sensitivity"]["rows"] == scan["rows"]);
  CHECK(t["quant_sensitivity"]["all"] == scan["all"]);
  // Resumed with other widths: the saved scan is not this run's; the QAT model's float weights are scanned.
  CHECK_FALSE(run(path, {"output_dir=" + dir.file("c")}, 4).completed);
  const auto c = json::parse(run(path, {"output_dir=" + dir.file("c"), "report.quant_sensitivity_bits=[4]"}, 0, true).summary_json);
  CHECK(c["quant_sensitivity"]["bits"] == json::array({4}));
  CHECK_THAT(c["quant_sensitivity"]["of"].get<std::string>(), Catch::Contains("resumed after QAT started"));
}

TEST_CASE("runner: LSQ scales join the optimizer when QAT starts; killed while they learn and resumed, it ends the same",
          "[quant]") {
  test::TempDir dir("lsq_recipe");
  const auto path = hybrid_recipe(dir);
  const std::vector<std::string> lsq{"training.epochs=6", "quantization.learnable_scales=true",
                                     "quantization.freeze_observers_epoch=4"};
  auto sets = lsq;
  sets.push_back("output_dir=" + dir.file("a"));
  const auto a = run(path, sets);
  REQUIRE(a.completed);
  sets.back() = "output_dir=" + dir.file("b");
  CHECK_FALSE(run(path, sets, 5).completed);  // scales learned in epoch 4, in the checkpoint with their momentum
  const auto b = run(path, sets, 0, true);
  REQUIRE(b.completed);
  const auto s = json::parse(a.summary_json), t = json::parse(b.summary_json);
  for (const char* key : {"pruned_int8", "pruned_int8_ptq"}) CHECK(t[key]["accuracy"] == s[key]["accuracy"]);
  CHECK(t["pruned_int8"]["logit_cosine_with_qat"] == s["pruned_int8"]["logit_cosine_with_qat"]);
  CHECK(s["pruned_int8"]["argmax_agreement_with_qat"].get<double>() > 0.95);
  // The scales did learn: the same run with observed scales ends elsewhere.
  const auto fixed = run(path, {"training.epochs=6", "quantization.freeze_observers_epoch=4", "output_dir=" + dir.file("c")});
  CHECK(json::parse(fixed.summary_json)["pruned_int8"]["logit_cosine_with_qat"] != s["pruned_int8"]["logit_cosine_with_qat"]);
}

TEST_CASE("runner: post-training quantization without pruning reports dense and int8 only", "[quant]") {
  test::TempDir dir("ptq_recipe");
  const auto path = hybrid_recipe(dir);
  const auto r = run(path, {"pruning=[]", "quantization.mode=ptq", "training.epochs=1", "quantization.simulate_bits=0",
                            "quantization.calibration_observer=percentile", "report.quant_sensitivity_bits=[8]"});
  REQUIRE(r.completed);
  const auto s = json::parse(r.summary_json);
  REQUIRE(s["rows"].size() == 2);
  CHECK(s["rows"][1]["label"] == "int8 (PTQ)");
  CHECK(s["int8"]["params"] == s["dense"]["params"]);
  CHECK(s["int8"].contains("latency_ms_b1"));
  // Every PTQ row says how closely it follows the float model it came from, over the eval set.
  CHECK(s["int8"]["argmax_agreement_with_float"].get<double>() > 50);
  CHECK(s["int8"]["logit_cosine_with_float"].get<double>() > 0.9);
  // The scan of the final float model, before PTQ converted it.
  CHECK(s["quant_sensitivity"]["baseline"].get<double>() == Approx(s["dense"]["accuracy"].get<double>()));
  CHECK(s["quant_sensitivity"]["rows"].size() == 31);
  CHECK(s["quant_sensitivity"]["all"].size() == 1);
}

TEST_CASE("runner: keep_float keeps units float in the int8 row and its deploy file; a bad name fails before training",
          "[quant]") {
  test::TempDir dir("ptq_mixed");
  const auto path = hybrid_recipe(dir);
  const std::vector<std::string> ptq{"pruning=[]", "quantization.mode=ptq", "training.epochs=1",
                                     "quantization.simulate_bits=0", "report.quant_sensitivity_bits=[]"};
  auto sets = ptq;
  sets.push_back("quantization.keep_float=[\"conv1\", \"fc\"]");
  const auto r = run(path, sets);
  REQUIRE(r.completed);
  const auto s = json::parse(r.summary_json);
  CHECK(s["int8"]["kept_float"] == json::array({"conv1", "fc"}));
  const auto deploy = io::read_state_dict(dir.file("out") + "/model_int8.pt");
  CHECK(deploy.count("conv1.weight"));
  CHECK(deploy.count("fc.weight"));
  CHECK_FALSE(deploy.count("conv1.int8.weight"));
  CHECK(deploy.count("layer1.0.conv1.int8.weight"));

  // Chosen by the scan: the two units whose agreement with the float model falls most at 8 bits.
  sets = ptq;
  sets.insert(sets.end(), {"quantization.keep_float=[\"fc\"]", "quantization.keep_float_worst=2",
                           "report.quant_sensitivity_bits=[8]", "report.quant_sensitivity_metric=agreement",
                           "output_dir=" + dir.file("worst")});
  const auto worst = run(path, sets);
  REQUIRE(worst.completed);
  const auto w = json::parse(worst.summary_json);
  CHECK(w["quant_sensitivity"]["metric"] == "agreement");
  CHECK(w["quant_sensitivity"]["baseline"].get<double>() == Approx(100));
  quant::Names expected{"fc"};  // keep_float's, then the two worst of the others
  for (const auto& name : quant::worst_units(w["quant_sensitivity"].dump(), 8, 3)) {
    if (name != "fc" && expected.size() < 3) expected.push_back(name);
  }
  CHECK(w["int8"]["kept_float"].get<std::vector<std::string>>() == expected);
  const auto mixed = io::read_state_dict(dir.file("worst") + "/model_int8.pt");
  CHECK_FALSE(mixed.count(expected[1] + ".int8.qparams"));
  CHECK_FALSE(mixed.count(expected[2] + ".int8.qparams"));

  sets = ptq;
  sets.push_back("quantization.keep_float=[\"conv1\", \"layer9.conv\"]");
  sets.push_back("output_dir=" + dir.file("bad"));
  const auto message = test::message_of([&] { run(path, sets); });
  CHECK_THAT(message, Catch::Contains("quantization.keep_float") && Catch::Contains("'layer9.conv'") &&
                          Catch::Contains("Fix:"));
  CHECK_FALSE(std::filesystem::exists(dir.file("bad") + "/metrics.jsonl"));  // no epoch ran
}

TEST_CASE("recipes: the quantization section's bad values name the key and the fix", "[quant]") {
  test::TempDir dir("qat_bad");
  const auto path = hybrid_recipe(dir);
  auto msg = [&](std::vector<std::string> sets) { return test::message_of([&] { recipe::read(path, sets); }); };
  CHECK_THAT(msg({"quantization.bits=4"}), Catch::Contains("at quantization.bits") && Catch::Contains("only 8 bits convert"));
  CHECK_THAT(msg({"quantization.bits=9"}), Catch::Contains("at quantization.bits") && Catch::Contains("[2, 8]"));
  CHECK_THAT(msg({"quantization.start_epoch=2"}),
             Catch::Contains("at quantization.start_epoch") && Catch::Contains("pruning.0 cuts at epoch 2") &&
                 Catch::Contains("start QAT at epoch 3"));
  CHECK_THAT(msg({"quantization.start_epoch=5"}), Catch::Contains("must be below training.epochs"));
  CHECK_THAT(msg({"quantization.freeze_observers_epoch=3"}),
             Catch::Contains("at quantization.freeze_observers_epoch") && Catch::Contains("(start_epoch, training.epochs)"));
  CHECK_THAT(msg({"quantization.freeze_bn_epoch=2"}),
             Catch::Contains("at quantization.freeze_bn_epoch") && Catch::Contains("[start_epoch, training.epochs)"));
  CHECK_THAT(msg({"quantization.engine=fbgemm"}), Catch::Contains("quantization.engine") && Catch::Contains("onednn"));
  CHECK_THAT(msg({"quantization.mode=int4"}), Catch::Contains("quantization.mode") && Catch::Contains("qat"));
  CHECK_THAT(msg({"quantization.observer=histogram"}), Catch::Contains("min_max") && Catch::Contains("percentile"));
  CHECK_THAT(msg({"quantization.percentile=40"}), Catch::Contains("at quantization.percentile"));
  CHECK_THAT(msg({"quantization.simulate_bits=8"}),
             Catch::Contains("at quantization.simulate_bits") && Catch::Contains("2 to 7 bits, got 8"));
  CHECK_THAT(msg({"quantization.mode=ptq", "training.epochs=1", "pruning=[]"}),
             Catch::Contains("simulate_bits") && Catch::Contains("mode ptq"));
  CHECK_THAT(msg({"quantization.learnable_scales=true", "quantization.freeze_observers_epoch=-1"}),
             Catch::Contains("at quantization.learnable_scales") && Catch::Contains("freeze_observers_epoch"));
  CHECK_THAT(msg({"report.quant_sensitivity_bits=[8, 16]"}),
             Catch::Contains("at report.quant_sensitivity_bits.1: is 16 bits") && Catch::Contains("2 to 8"));
  CHECK_THAT(msg({"quantization.keep_float_worst=2", "report.quant_sensitivity_bits=[8]"}),
             Catch::Contains("at quantization.keep_float_worst") && Catch::Contains("mode is qat") &&
                 Catch::Contains("set quantization.mode to ptq"));
  CHECK_THAT(msg({"quantization.keep_float_worst=2", "quantization.mode=ptq", "training.epochs=1", "pruning=[]",
                  "quantization.simulate_bits=0", "report.quant_sensitivity_bits=[4]"}),
             Catch::Contains("at quantization.keep_float_worst") && Catch::Contains("has no 8"));
  CHECK_THAT(test::message_of([&] {
               run(path, {"pruning=[]", "quantization.mode=ptq", "training.epochs=1", "quantization.simulate_bits=0",
                          "report.quant_sensitivity_bits=[8]", "quantization.keep_float_worst=31",
                          "output_dir=" + dir.file("too_many")});
             }),
             Catch::Contains("quantization.keep_float_worst: 31 of the 31 units") && Catch::Contains("Fix:"));
  CHECK_FALSE(std::filesystem::exists(dir.file("too_many") + "/metrics.jsonl"));  // refused before training
  CHECK_THAT(msg({"report.quant_sensitivity_metric=loss"}),
             Catch::Contains("report.quant_sensitivity_metric") && Catch::Contains("agreement"));
  // Off by default: a recipe without the section loads with mode none.
  CHECK(recipe::read(path, {"quantization.mode=none"}).quantization.mode() == recipe::QuantMode::None);
}

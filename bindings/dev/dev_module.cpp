// _libprune_dev: helpers for libprune's own benchmarks and tests, kept out of the product module.
#include <torch/extension.h>

#include "libprune/io/state_dict.h"
#include "libprune/models/bert.h"
#include "libprune/models/bert_export.h"
#include "libprune/prune/pruner.h"
#include "libprune/models/registry.h"
#include "libprune/nn/memory_format.h"
#include "libprune/quant/quantize.h"

#include <algorithm>
#include <chrono>

namespace py = pybind11;

namespace {

// The C++ BERT built from a config.json text with the state_dict at `state_path`: its eval logits,
// then the heads an L1 cut of `ratio` keeps per layer (original indices; feed-forward and pooler
// untouched) and the logits after the cut. The Python reference's twin in tests/python/test_bert.py.
py::tuple bert_cpp(const std::string& config_json, const std::string& state_path, const torch::Tensor& ids,
                   const torch::Tensor& mask, double ratio, const std::string& export_dir) {
  using namespace libprune;
  models::BertForSequenceClassification model(models::BertConfig::from_json(config_json));
  io::load_state_dict(*model, state_path);
  model->eval();
  const nn::Inputs in{{"input_ids", ids}, {"attention_mask", mask}};
  torch::Tensor before;
  {
    torch::NoGradGuard no_grad;
    before = model->forward_inputs(in);
  }
  prune::Pruner pruner(model.ptr(), [&] { return std::vector<torch::Tensor>{model->forward_inputs(in)}; },
                       prune::PrunerOptions().ratio(ratio).ignored_layers({"classifier"}).overrides(
                           {{".*intermediate\\.dense", 0.0}, {".*pooler\\.dense", 0.0}}));
  const auto plan = pruner.step();
  if (!export_dir.empty()) models::save_pretrained(*model, export_dir, pruner.history());
  std::vector<std::vector<int64_t>> heads(model->layers->size());
  const int64_t head = model->config.hidden_size() / model->config.num_attention_heads();
  for (size_t l = 0; l < heads.size(); ++l) {
    const auto name = "bert.encoder.layer." + std::to_string(l) + ".attention.self.query.weight";
    for (const auto& cut : plan.cuts) {
      if (cut.tensor != name || cut.dim != 0) continue;
      for (size_t k = 0; k < cut.keep.size(); k += static_cast<size_t>(head)) heads[l].push_back(cut.keep[k] / head);
    }
    for (int64_t h = 0; heads[l].empty() && h < model->config.num_attention_heads(); ++h) heads[l].push_back(h);
  }
  torch::NoGradGuard no_grad;
  return py::make_tuple(before, heads, model->forward_inputs(in));
}

}  // namespace

PYBIND11_MODULE(_libprune_dev, m) {
  m.doc() = "libprune's benchmark and test helpers";
  // A zoo model post-training quantized in C++ (batch norms settled and observers calibrated on
  // `calib`), its int8 deploy file written to `path`; returns the int8 model's logits on `x`.
  m.def(
      "int8_zoo_model",
      [](const std::string& name, const std::string& path, const torch::Tensor& calib, const torch::Tensor& x) {
        torch::manual_seed(0);
        auto model = libprune::models::create(
            name, libprune::models::ModelOptions().num_classes(10).in_channels(x.size(1)));
        torch::NoGradGuard no_grad;
        model->train();
        model->forward(calib);
        for (auto& p : model->named_parameters()) {
          if (p.key().find("bn") != std::string::npos && p.key().find("weight") != std::string::npos) p.value().uniform_(0.5, 1.5);
        }
        model->named_parameters()["fc.weight"].normal_(0, 0.2);
        const auto example = [&] { return std::vector<torch::Tensor>{model->forward(calib.slice(0, 0, 2))}; };
        libprune::quant::prepare(*model, example, libprune::quant::QuantOptions().observer(libprune::quant::Observer::min_max));
        libprune::quant::calibration_mode(*model);
        model->forward(calib);
        libprune::quant::convert(*model, example);
        libprune::io::write_state_dict(libprune::quant::int8_state_dict(*model), path);
        model->eval();
        return model->forward(x);
      },
      py::arg("name"), py::arg("path"), py::arg("calib"), py::arg("x"));
  // The C++ BERT built from a config.json text with the state_dict at `state_path`: its eval logits,
  // then the heads an L1 cut of `ratio` keeps per layer (original indices; feed-forward untouched)
  // and the logits after the cut. The Python reference module's twin in tests/python/test_bert.py.
  m.def("bert_cpp", &bert_cpp, py::arg("config_json"), py::arg("state_path"), py::arg("input_ids"),
        py::arg("attention_mask"), py::arg("ratio"), py::arg("export_dir") = "",
        "the C++ BERT's logits on a state_dict, the heads an L1 cut keeps per layer, and the logits after "
        "(with export_dir, the cut model saved there in Hugging Face's form)");
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
  // The C++ half of scripts/bench_train_step.py: median seconds of one SGD training step of a zoo
  // model, run entirely in C++ (the GIL released).
  m.def("train_step_seconds", [](const std::string& name, int64_t classes, int64_t batch, int64_t size, int steps,
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
}

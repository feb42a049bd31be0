#include "libprune/train/qat_callback.h"

#include <iostream>

namespace libprune::train {

QatCallback::QatCallback(quant::QuantOptions options, QatSchedule schedule, graph::Forward forward)
    : options_(std::move(options)), schedule_(schedule), forward_(std::move(forward)) {}

namespace {

// A parameter group for LSQ's scales: the optimizer's settings without weight decay (decay would pull
// every step size toward zero, i.e. toward a finer grid than the values need).
void add_scales(torch::optim::Optimizer& optimizer, std::vector<torch::Tensor> scales) {
  if (scales.empty()) return;
  auto options = optimizer.defaults().clone();
  if (auto* sgd = dynamic_cast<torch::optim::SGDOptions*>(options.get())) sgd->weight_decay(0);
  if (auto* adamw = dynamic_cast<torch::optim::AdamWOptions*>(options.get())) adamw->weight_decay(0);
  if (auto* adam = dynamic_cast<torch::optim::AdamOptions*>(options.get())) adam->weight_decay(0);
  const double lr = optimizer.param_groups().front().options().get_lr();  // the schedule's current value
  options->set_lr(lr);
  optimizer.add_param_group(torch::optim::OptimizerParamGroup(std::move(scales), std::move(options)));
}

}  // namespace

void QatCallback::install(Trainer& trainer) {
  if (quant::is_prepared(*trainer.model())) return;
  report_ = quant::prepare(*trainer.model(), forward_, options_);
  add_scales(trainer.optimizer(), quant::learnable_scales(*trainer.model()));
}

void QatCallback::restore(Trainer& trainer, int64_t next_epoch) {
  if (next_epoch > schedule_.start_epoch()) install(trainer);
}

void QatCallback::on_epoch_begin(Trainer& trainer, int64_t epoch) {
  auto& model = *trainer.model();
  if (epoch == schedule_.start_epoch() && !quant::is_prepared(model)) {
    if (before_prepare) before_prepare(trainer);
    install(trainer);
    if (verbose) {
      std::cout << "qat    epoch " << epoch << ": " << report_.quantized.size() << " units fake-quantised to "
                << options_.bits() << " bits, " << report_.skipped.size() << " left float" << std::endl;
    }
    if (log) {
      log->write("qat", {{"epoch", static_cast<double>(epoch)},
                          {"bits", static_cast<double>(options_.bits())},
                          {"units", static_cast<double>(report_.quantized.size())}});
    }
  }
  if (!quant::is_prepared(model)) return;
  const auto reached = [epoch](int64_t at) { return at >= 0 && epoch >= at; };
  quant::enable_observers(model, !reached(schedule_.freeze_observers_epoch()));
  if (reached(schedule_.freeze_bn_epoch())) freeze_batch_norms(model);
}

void freeze_batch_norms(torch::nn::Module& model) {
  for (const auto& m : model.modules()) {
    if (m->as<torch::nn::BatchNorm2d>() || m->as<torch::nn::BatchNorm1d>() || m->as<torch::nn::BatchNorm3d>()) m->eval();
  }
}

}  // namespace libprune::train

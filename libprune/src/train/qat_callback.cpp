#include "libprune/train/qat_callback.h"

#include <iostream>

namespace libprune::train {

QatCallback::QatCallback(quant::QuantOptions options, QatSchedule schedule, graph::Forward forward)
    : options_(std::move(options)), schedule_(schedule), forward_(std::move(forward)) {}

void QatCallback::install(Trainer& trainer) {
  if (quant::is_prepared(*trainer.model())) return;
  report_ = quant::prepare(*trainer.model(), forward_, options_);
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

#include "libprune/models/registry.h"

#include "libprune/models/bert.h"
#include "libprune/models/mobilenet_v2.h"
#include "libprune/models/resnet.h"
#include "libprune/models/vgg.h"

#include <functional>
#include <map>
#include <sstream>

namespace libprune::models {
namespace {

using Factory = std::function<ModelPtr(const ModelOptions&)>;

template <typename Holder>
ModelPtr impl(Holder holder) {
  return holder.ptr();
}

// BERT sizes take the class count and the tokenizer's vocabulary from the options.
ModelPtr bert(const std::string& size, const ModelOptions& o) {
  auto config = bert_config(size).num_labels(o.num_classes());
  if (o.vocab_size() > 0) config.vocab_size(o.vocab_size());
  return impl(BertForSequenceClassification(config));
}

const std::map<std::string, Factory>& factories() {
  static const std::map<std::string, Factory> table = {
      {"resnet18", [](const ModelOptions& o) { return impl(resnet18(o)); }},
      {"resnet34", [](const ModelOptions& o) { return impl(resnet34(o)); }},
      {"resnet50", [](const ModelOptions& o) { return impl(resnet50(o)); }},
      {"resnet101", [](const ModelOptions& o) { return impl(resnet101(o)); }},
      {"resnet152", [](const ModelOptions& o) { return impl(resnet152(o)); }},
      {"resnext50_32x4d", [](const ModelOptions& o) { return impl(resnext50_32x4d(o)); }},
      {"wide_resnet50_2", [](const ModelOptions& o) { return impl(wide_resnet50_2(o)); }},
      {"vgg11_bn", [](const ModelOptions& o) { return impl(vgg11_bn(o)); }},
      {"vgg16_bn", [](const ModelOptions& o) { return impl(vgg16_bn(o)); }},
      {"mobilenet_v2", [](const ModelOptions& o) { return impl(mobilenet_v2(o)); }},
      {"cifar_resnet20", [](const ModelOptions& o) { return impl(cifar_resnet(20, o)); }},
      {"cifar_resnet32", [](const ModelOptions& o) { return impl(cifar_resnet(32, o)); }},
      {"cifar_resnet56", [](const ModelOptions& o) { return impl(cifar_resnet(56, o)); }},
      {"cifar_resnet110", [](const ModelOptions& o) { return impl(cifar_resnet(110, o)); }},
      {"bert_tiny", [](const ModelOptions& o) { return bert("bert_tiny", o); }},
      {"bert_mini", [](const ModelOptions& o) { return bert("bert_mini", o); }},
      {"bert_small", [](const ModelOptions& o) { return bert("bert_small", o); }},
      {"bert_base", [](const ModelOptions& o) { return bert("bert_base", o); }},
  };
  return table;
}

}  // namespace

std::vector<std::string> names() {
  std::vector<std::string> out;
  for (const auto& kv : factories()) out.push_back(kv.first);
  return out;
}

ModelPtr create(const std::string& name, const ModelOptions& options) {
  const auto& table = factories();
  auto it = table.find(name);
  if (it == table.end()) {
    std::ostringstream known;
    for (const auto& kv : table) known << (kv.first == table.begin()->first ? "" : ", ") << kv.first;
    TORCH_CHECK_VALUE(false, "unknown model \"", name, "\"; expected one of ", known.str());
  }
  TORCH_CHECK_VALUE(options.num_classes() > 0, "model \"", name, "\": num_classes must be positive, got ",
                    options.num_classes());
  TORCH_CHECK_VALUE(options.in_channels() > 0, "model \"", name, "\": in_channels must be positive, got ",
                    options.in_channels());
  return it->second(options);
}

}  // namespace libprune::models

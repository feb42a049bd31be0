#include "libprune/models/resnet.h"

#include "libprune/models/init.h"

namespace libprune::models {
namespace {

torch::nn::Conv2d conv3x3(int64_t in, int64_t out, int64_t stride = 1, int64_t groups = 1) {
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).groups(groups).bias(false));
}

torch::nn::Conv2d conv1x1(int64_t in, int64_t out, int64_t stride = 1) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 1).stride(stride).bias(false));
}

torch::nn::Sequential projection(int64_t in, int64_t out, int64_t stride) {
  return torch::nn::Sequential(conv1x1(in, out, stride), torch::nn::BatchNorm2d(out));
}

// ReLUs run in place, as torchvision's do: every out-of-place activation is a fresh allocation,
// and on this class of VM fresh pages cost more than the arithmetic. They are modules without
// parameters (state_dict keys are unchanged) so that extensions can observe them.
torch::nn::ReLU inplace_relu() { return torch::nn::ReLU(torch::nn::ReLUOptions(true)); }

// The residual add, in place into the block's output (as torchvision's `out += identity`) unless an
// extension (QAT) observes it through the module. Batch norm's backward does not need its output,
// so overwriting it is safe; measured: an out-of-place add makes a training step ~25% slower.
torch::Tensor residual(libprune::nn::Add& add, torch::Tensor out, const torch::Tensor& identity) {
  if (!libprune::nn::has_extensions(*add)) return out.add_(identity);
  return libprune::nn::call(add, out, identity);
}

}  // namespace

BasicBlockImpl::BasicBlockImpl(int64_t inplanes, int64_t planes, int64_t stride, int64_t groups,
                               int64_t base_width) {
  TORCH_CHECK(groups == 1 && base_width == 64, "BasicBlock supports only groups=1 and width_per_group=64 (got ",
              groups, " and ", base_width, "); use the Bottleneck block for ResNeXt or wide ResNets");
  conv1 = register_module("conv1", conv3x3(inplanes, planes, stride));
  bn1 = register_module("bn1", torch::nn::BatchNorm2d(planes));
  conv2 = register_module("conv2", conv3x3(planes, planes));
  bn2 = register_module("bn2", torch::nn::BatchNorm2d(planes));
  if (stride != 1 || inplanes != planes * expansion) {
    downsample = register_module("downsample", projection(inplanes, planes * expansion, stride));
  }
  add = register_module("add", libprune::nn::Add());
  relu1 = register_module("relu1", inplace_relu());
  relu2 = register_module("relu2", inplace_relu());
}

torch::Tensor BasicBlockImpl::forward(torch::Tensor x) {
  using libprune::nn::call;
  auto out = call(relu1, call(bn1, call(conv1, x)));
  out = call(bn2, call(conv2, out));
  auto identity = downsample ? libprune::nn::call_sequential(downsample, x) : x;
  return call(relu2, residual(add, out, identity));
}

BottleneckImpl::BottleneckImpl(int64_t inplanes, int64_t planes, int64_t stride, int64_t groups,
                               int64_t base_width) {
  const int64_t width = planes * base_width / 64 * groups;
  conv1 = register_module("conv1", conv1x1(inplanes, width));
  bn1 = register_module("bn1", torch::nn::BatchNorm2d(width));
  conv2 = register_module("conv2", conv3x3(width, width, stride, groups));
  bn2 = register_module("bn2", torch::nn::BatchNorm2d(width));
  conv3 = register_module("conv3", conv1x1(width, planes * expansion));
  bn3 = register_module("bn3", torch::nn::BatchNorm2d(planes * expansion));
  if (stride != 1 || inplanes != planes * expansion) {
    downsample = register_module("downsample", projection(inplanes, planes * expansion, stride));
  }
  add = register_module("add", libprune::nn::Add());
  relu1 = register_module("relu1", inplace_relu());
  relu2 = register_module("relu2", inplace_relu());
  relu3 = register_module("relu3", inplace_relu());
}

torch::Tensor BottleneckImpl::forward(torch::Tensor x) {
  using libprune::nn::call;
  auto out = call(relu1, call(bn1, call(conv1, x)));
  out = call(relu2, call(bn2, call(conv2, out)));
  out = call(bn3, call(conv3, out));
  auto identity = downsample ? libprune::nn::call_sequential(downsample, x) : x;
  return call(relu3, residual(add, out, identity));
}

ResNetImpl::ResNetImpl(ResNetOptions options_) : options(std::move(options_)) {
  const auto& o = options;
  TORCH_CHECK(o.widths().size() == o.layers().size(), "ResNetOptions: ", o.layers().size(),
              " stages need as many widths, got ", o.widths().size());
  TORCH_CHECK(o.in_channels() > 0 && o.num_classes() > 0,
              "ResNetOptions: in_channels and num_classes must be positive");
  const bool imagenet = o.stem() == Stem::ImageNet;
  conv1 = register_module(
      "conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(o.in_channels(), o.stem_width(), imagenet ? 7 : 3)
                                     .stride(imagenet ? 2 : 1)
                                     .padding(imagenet ? 3 : 1)
                                     .bias(false)));
  bn1 = register_module("bn1", torch::nn::BatchNorm2d(o.stem_width()));
  relu = register_module("relu", inplace_relu());
  if (imagenet) {
    maxpool = register_module("maxpool", torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(3).stride(2).padding(1)));
  }

  const int64_t expansion = o.block() == BlockKind::Basic ? BasicBlockImpl::expansion : BottleneckImpl::expansion;
  int64_t inplanes = o.stem_width();
  for (size_t s = 0; s < o.layers().size(); ++s) {
    torch::nn::Sequential stage;
    const int64_t planes = o.widths()[s];
    for (int64_t b = 0; b < o.layers()[s]; ++b) {
      const int64_t stride = (b == 0 && s > 0) ? 2 : 1;
      if (o.block() == BlockKind::Basic) {
        stage->push_back(BasicBlock(inplanes, planes, stride, o.groups(), o.width_per_group()));
      } else {
        stage->push_back(Bottleneck(inplanes, planes, stride, o.groups(), o.width_per_group()));
      }
      inplanes = planes * expansion;
    }
    stages.push_back(register_module("layer" + std::to_string(s + 1), stage));
  }
  fc = register_module("fc", torch::nn::Linear(inplanes, o.num_classes()));
  init_like_torchvision(*this);
}

torch::Tensor ResNetImpl::forward(torch::Tensor x) {
  x = libprune::nn::call(relu, libprune::nn::call(bn1, libprune::nn::call(conv1, x)));
  if (maxpool) x = libprune::nn::call(maxpool, x);
  for (auto& stage : stages) x = stage->forward(x);
  x = torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
  return libprune::nn::call(fc, x);
}

namespace {
ResNet make(BlockKind block, std::vector<int64_t> layers, const ModelOptions& o, int64_t groups = 1,
            int64_t width_per_group = 64) {
  return ResNet(ResNetOptions(block, std::move(layers))
                    .num_classes(o.num_classes())
                    .in_channels(o.in_channels())
                    .groups(groups)
                    .width_per_group(width_per_group));
}
}  // namespace

ResNet resnet18(const ModelOptions& o) { return make(BlockKind::Basic, {2, 2, 2, 2}, o); }
ResNet resnet34(const ModelOptions& o) { return make(BlockKind::Basic, {3, 4, 6, 3}, o); }
ResNet resnet50(const ModelOptions& o) { return make(BlockKind::Bottleneck, {3, 4, 6, 3}, o); }
ResNet resnet101(const ModelOptions& o) { return make(BlockKind::Bottleneck, {3, 4, 23, 3}, o); }
ResNet resnet152(const ModelOptions& o) { return make(BlockKind::Bottleneck, {3, 8, 36, 3}, o); }
ResNet resnext50_32x4d(const ModelOptions& o) { return make(BlockKind::Bottleneck, {3, 4, 6, 3}, o, 32, 4); }
ResNet wide_resnet50_2(const ModelOptions& o) { return make(BlockKind::Bottleneck, {3, 4, 6, 3}, o, 1, 128); }

ResNet cifar_resnet(int64_t depth, const ModelOptions& o) {
  TORCH_CHECK(depth >= 8 && (depth - 2) % 6 == 0, "cifar_resnet: depth must be 6n+2 (20, 32, 56, 110), got ",
              depth);
  const int64_t n = (depth - 2) / 6;
  return ResNet(ResNetOptions(BlockKind::Basic, {n, n, n})
                    .num_classes(o.num_classes())
                    .in_channels(o.in_channels())
                    .stem(Stem::Cifar)
                    .stem_width(16)
                    .widths({16, 32, 64}));
}

}  // namespace libprune::models

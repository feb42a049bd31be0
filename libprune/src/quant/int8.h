#pragma once
// Inside quant/: int8 kernels as forward extensions that replace their layer's computation.
#include "libprune/nn/extension.h"

#include <ATen/ATen.h>

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace libprune::quant::detail {

struct QParams {
  double scale = 1;
  int64_t zero_point = 0;
};

class Int8Impl : public nn::ExtensionImpl {
 public:
  // Drops the packed weights; the next call packs them again for its shape and thread count.
  virtual void repack() {}
};

// `qweight`: per-channel qint8 (zero points 0); `bias`: float; `in`: the input quantiser's parameters
// when the layer has one (a float or foreign-grid input is rounded to them); `out`: the output's;
// `relu`: fused; `dequantize_output`: the output leaves as float (no int8 layer reads it).
std::shared_ptr<Int8Impl> make_int8_conv2d(const torch::Tensor& qweight, const torch::Tensor& bias, std::optional<QParams> in,
                                           QParams out, bool relu, bool dequantize_output, const std::string& layer);
std::shared_ptr<Int8Impl> make_int8_linear(const torch::Tensor& qweight, const torch::Tensor& bias, std::optional<QParams> in,
                                           QParams out, bool relu, bool dequantize_output, const std::string& layer);
std::shared_ptr<Int8Impl> make_int8_add(std::vector<std::optional<QParams>> in, QParams out, bool relu,
                                        bool dequantize_output, const std::string& layer);
// On a batch norm or ReLU fused into the kernel before it: passes its input on.
std::shared_ptr<Int8Impl> make_fused_away();
// On a layer that stays float: dequantises its int8 inputs.
std::shared_ptr<Int8Impl> make_float_fallback();
bool is_float_fallback(const torch::nn::Module& ext);

// The engine `name` ("onednn", "qnnpack"); throws naming the engines built in when it is not one.
at::QEngine engine_of(const std::string& name);
// Packs made by int8 kernels in this process (quant::packs_made).
std::atomic<int64_t>& packs_made_counter();

}  // namespace libprune::quant::detail

// Loads torchvision weights and eval outputs written by tests/python/parity_fixtures.py (made at
// test time), checks the C++ zoo reproduces them, and writes the state_dict back for Python.
#include "helpers.h"
#include "libprune/libprune.h"
#include "test_paths.h"

using namespace libprune;

TEST_CASE("torchvision parity: weights load and outputs agree within 1e-4", "[parity]") {
  const std::string dir = LIBPRUNE_FIXTURE_DIR;
  for (const std::string name : {"resnet18", "resnet50", "mobilenet_v2", "vgg11_bn"}) {
    INFO(name);
    auto model = models::create(name);
    io::load_state_dict(*model, dir + "/" + name + ".pt");
    const auto io_pair = io::read_state_dict(dir + "/" + name + ".io.pt");
    const auto& x = io_pair.at("input");
    const auto& expected = io_pair.at("output");
    model->eval();
    torch::NoGradGuard no_grad;
    const double err = (model->forward(x) - expected).abs().max().item<double>();
    CHECK(err < 1e-4);
    io::save_state_dict(*model, dir + "/" + name + ".from_cpp.pt");
    // The same in channels_last. oneDNN sums in another order than the NCHW kernels, so allow a
    // few ulps more on resnet50's deep sums (measured: 1.03e-4).
    nn::to_memory_format(*model, torch::MemoryFormat::ChannelsLast);
    const double err_cl =
        (model->forward(x.contiguous(torch::MemoryFormat::ChannelsLast)) - expected).abs().max().item<double>();
    CHECK(err_cl < 5e-4);
  }
}

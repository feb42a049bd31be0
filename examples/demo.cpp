// The main job until the recipe runner lands: build a CIFAR-style ResNet-20 from the zoo, print
// its parameters and MACs, and train it for a few steps on Fashion-MNIST in channels_last.
//
//   build/libprune-demo [--model NAME] [--steps N] [--batch N] [--data DIR]
#include "libprune/libprune.h"

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>

namespace {

struct Args {
  std::string model = "cifar_resnet20";
  std::string data = libprune::data::kFashionMnistDir;
  int steps = 50;
  int batch = 128;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(k + " needs a value");
      return argv[++i];
    };
    if (k == "--model") a.model = value();
    else if (k == "--data") a.data = value();
    else if (k == "--steps") a.steps = std::stoi(value());
    else if (k == "--batch") a.batch = std::stoi(value());
    else throw std::invalid_argument("unknown option " + k + "; expected --model, --data, --steps or --batch");
  }
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args args = parse(argc, argv);
    torch::manual_seed(0);
    torch::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
    std::cout << "libprune " << libprune::version() << ", " << torch::get_num_threads() << " threads\n";

    auto train = libprune::data::read_mnist(args.data, libprune::data::Split::Train);
    auto test = libprune::data::read_mnist(args.data, libprune::data::Split::Test);
    const double mean = 0.2860, stdev = 0.3530;  // Fashion-MNIST training-set statistics
    auto train_x = libprune::data::normalize_images(train.images, mean, stdev);
    auto test_x = libprune::data::normalize_images(test.images, mean, stdev);
    std::cout << "Fashion-MNIST: " << train_x.size(0) << " train, " << test_x.size(0) << " test images from "
              << args.data << "\n";

    auto model = libprune::models::create(args.model, libprune::models::ModelOptions().num_classes(10).in_channels(1));
    const auto ops = libprune::measure::count_ops(model, train_x.slice(0, 0, 1));
    std::printf("%s: %.3f M params, %.2f M MACs per image (conv+linear)\n", args.model.c_str(), ops.params / 1e6,
                ops.macs / 1e6);

    libprune::nn::to_memory_format(*model, torch::MemoryFormat::ChannelsLast);
    torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9).weight_decay(5e-4));
    model->train();
    const auto t0 = std::chrono::steady_clock::now();
    for (int step = 0; step < args.steps; ++step) {
      auto idx = torch::randint(train_x.size(0), {args.batch}, torch::kLong);
      auto x = train_x.index_select(0, idx).contiguous(torch::MemoryFormat::ChannelsLast);
      auto y = train.labels.index_select(0, idx);
      opt.zero_grad();
      auto loss = torch::cross_entropy_loss(model->forward(x), y);
      loss.backward();
      opt.step();
      if (step % 10 == 0 || step + 1 == args.steps) {
        std::printf("step %3d  loss %.4f\n", step, loss.item<double>());
        std::fflush(stdout);
      }
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%d steps of batch %d in %.1f s (%.3f s/step)\n", args.steps, args.batch, secs, secs / args.steps);

    model->eval();
    torch::NoGradGuard no_grad;
    int64_t correct = 0;
    for (int64_t i = 0; i < test_x.size(0); i += 1000) {
      auto x = test_x.slice(0, i, i + 1000).contiguous(torch::MemoryFormat::ChannelsLast);
      correct += model->forward(x).argmax(1).eq(test.labels.slice(0, i, i + 1000)).sum().item<int64_t>();
    }
    std::printf("test accuracy after %d steps: %.2f%%\n", args.steps, 100.0 * correct / test_x.size(0));
    const auto lat = libprune::measure::measure_latency(model, test_x.slice(0, 0, 32),
                                                       libprune::measure::LatencyOptions().channels_last(true));
    std::cout << "latency: " << lat.to_string() << "\n";
    return 0;
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
  }
  return 1;
}

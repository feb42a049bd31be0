#pragma once
// Fuzz targets for every parser of outside input. Each target is a function of the input bytes,
// registered by name; it is linked two ways (tests/fuzz/CMakeLists.txt):
//   - with libFuzzer (clang, scripts/fuzz.sh): one executable per target, which explores;
//   - with replay.cpp (any compiler, ctest): one executable that runs every file of a target's
//     corpus once, so each input ever kept (crashes found included) is a regression test.
// A target throws nothing: a bad input must end in a c10::Error or std::exception whose message
// names the input (file path or JSON source) and leaves the model as it was; anything else aborts,
// which both drivers report as a failure.
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>

namespace fuzz {

using Target = std::function<void(const uint8_t* data, size_t size)>;

std::map<std::string, Target>& targets();

struct Register {
  Register(const std::string& name, Target target) { targets()[name] = std::move(target); }
};

// Runs `fn`. An error is expected; its message must contain one of `names` (the file or source), and
// `unchanged()` (when given) must hold afterwards. A violation prints the input's story and aborts.
void expect_clean(const std::function<void()>& fn, const std::vector<std::string>& names,
                  const std::function<bool()>& unchanged = nullptr);

// A small conv net (two conv-BN-ReLU blocks, pooling, linear) whose files and plans the corpora
// hold; the same architecture every time, so seeds written by make_seeds fit it.
std::shared_ptr<torch::nn::SequentialImpl> tiny_model();

// A scratch folder for this process (under $TMPDIR, /dev/shm when it exists), made once.
std::string scratch_dir();
// Writes `size` bytes to `path`.
void write(const std::string& path, const uint8_t* data, size_t size);

// Every parameter and buffer, deep-copied, and whether a model still equals such a copy.
std::vector<torch::Tensor> snapshot(const torch::nn::Module& model);
bool equal(const torch::nn::Module& model, const std::vector<torch::Tensor>& before);

}  // namespace fuzz

#define LIBPRUNE_FUZZ_TARGET(name)                                                    \
  static void fuzz_target_##name(const uint8_t* data, size_t size);                   \
  static const fuzz::Register fuzz_register_##name(#name, fuzz_target_##name);        \
  static void fuzz_target_##name(const uint8_t* data, size_t size)

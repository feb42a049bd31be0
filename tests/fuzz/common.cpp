#include "fuzz.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <unistd.h>

namespace fuzz {

std::map<std::string, Target>& targets() {
  static std::map<std::string, Target> all;
  return all;
}

namespace {

[[noreturn]] void fail(const std::string& why) {
  std::fprintf(stderr, "libprune fuzz: contract broken: %s\n", why.c_str());
  std::abort();
}

}  // namespace

void expect_clean(const std::function<void()>& fn, const std::vector<std::string>& names,
                  const std::function<bool()>& unchanged) {
  std::string message;
  bool threw = false;
  try {
    fn();
  } catch (const c10::Error& e) {
    threw = true;
    message = e.what_without_backtrace();
  } catch (const std::exception& e) {
    threw = true;
    message = e.what();
  }
  if (!threw) return;
  if (std::getenv("LIBPRUNE_FUZZ_VERBOSE")) std::fprintf(stderr, "error (expected): %s\n", message.c_str());
  bool named = false;
  for (const auto& n : names) named = named || message.find(n) != std::string::npos;
  if (!named) fail("the error names none of '" + names.front() + "'...:\n" + message);
  if (unchanged && !unchanged()) fail("the model changed although the call failed with:\n" + message);
}

std::shared_ptr<torch::nn::SequentialImpl> tiny_model() {
  namespace nn = torch::nn;
  torch::manual_seed(0);
  auto m = nn::Sequential(nn::Conv2d(nn::Conv2dOptions(1, 4, 3).padding(1)), nn::BatchNorm2d(4), nn::ReLU(),
                          nn::Conv2d(nn::Conv2dOptions(4, 4, 3).padding(1)), nn::BatchNorm2d(4), nn::ReLU(),
                          nn::AdaptiveAvgPool2d(1), nn::Flatten(), nn::Linear(4, 3));
  return m.ptr();
}

std::string scratch_dir() {
  // Never destroyed, so the exit handler that removes the folder can still read its name.
  static const std::string* dir = [] {
    namespace fs = std::filesystem;
    const char* env = std::getenv("TMPDIR");
    const char* tmp = env && *env ? env : nullptr;
    const fs::path shm = "/dev/shm";
    const fs::path base = tmp ? fs::path(tmp) : (fs::is_directory(shm) ? shm : fs::temp_directory_path());
    const fs::path d = base / ("libprune_fuzz_" + std::to_string(::getpid()));
    fs::create_directories(d);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(*dir, ec);
    });
    return new std::string(d.string());
  }();
  return *dir;
}

void write(const std::string& path, const uint8_t* data, size_t size) {
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
}

std::vector<torch::Tensor> snapshot(const torch::nn::Module& model) {
  std::vector<torch::Tensor> out;
  for (const auto& t : model.parameters()) out.push_back(t.detach().clone());
  for (const auto& t : model.buffers()) out.push_back(t.detach().clone());
  return out;
}

bool equal(const torch::nn::Module& model, const std::vector<torch::Tensor>& before) {
  std::vector<torch::Tensor> now;
  for (const auto& t : model.parameters()) now.push_back(t.detach());
  for (const auto& t : model.buffers()) now.push_back(t.detach());
  if (now.size() != before.size()) return false;
  for (size_t i = 0; i < now.size(); ++i) {
    if (!now[i].sizes().equals(before[i].sizes()) || !torch::equal(now[i], before[i])) return false;
  }
  return true;
}

}  // namespace fuzz

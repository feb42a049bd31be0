#pragma once
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

namespace test {

// A fresh scratch directory under the build tree's temp area, removed on destruction.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& name) {
    path = std::filesystem::temp_directory_path() / ("libprune_test_" + name + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

// Deep copy of every parameter and buffer, for "the model is unchanged" checks.
inline std::vector<torch::Tensor> snapshot(const torch::nn::Module& m) {
  std::vector<torch::Tensor> out;
  for (const auto& p : m.parameters()) out.push_back(p.detach().clone());
  for (const auto& b : m.buffers()) out.push_back(b.detach().clone());
  return out;
}

inline bool same(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!a[i].sizes().equals(b[i].sizes()) || !torch::equal(a[i], b[i])) return false;
  }
  return true;
}

// Writes `bytes` to `path` as they are (truncated or corrupted copies of files).
inline void write_bytes(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

// Rewrites the latency cache `file` as a made-up machine: the entry of op `key` at widths in x out
// costs ms(key, in, out). Returns what was written, for "read, not re-timed" checks.
inline std::string plant_latency_cache(const std::string& file,
                                       const std::function<double(const std::string&, int64_t, int64_t)>& ms) {
  auto cached = read_json(file);
  for (auto& [key, grid] : cached["ops"].items()) {
    std::vector<double> entries;
    for (int64_t in : grid["in"].get<std::vector<int64_t>>()) {
      for (int64_t out : grid["out"].get<std::vector<int64_t>>()) entries.push_back(ms(key, in, out));
    }
    grid["ms"] = entries;
  }
  const auto text = cached.dump();
  std::ofstream(file) << text;
  return text;
}

inline std::string message_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace test

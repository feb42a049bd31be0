// Runs fuzz targets without libFuzzer: every kept input once (ctest's regression run), or writes
// the seed files that start the corpora.
//   libprune_fuzz_replay TARGET PATH...   each PATH an input file or a folder of them
//   libprune_fuzz_replay --seeds DIR      writes DIR/<target>/seed-* (run once; the corpora keep them)
#include "fuzz.h"

#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>

namespace fuzz {
void write_seeds(const std::string& dir);
}

namespace {

std::vector<std::filesystem::path> inputs_under(const std::vector<std::string>& paths) {
  namespace fs = std::filesystem;
  std::vector<fs::path> out;
  for (const auto& p : paths) {
    if (fs::is_directory(p)) {
      for (const auto& e : fs::directory_iterator(p)) {
        if (e.is_regular_file()) out.push_back(e.path());
      }
    } else {
      out.emplace_back(p);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 2 && args[0] == "--seeds") {
    fuzz::write_seeds(args[1]);
    return 0;
  }
  if (args.size() < 2 || !fuzz::targets().count(args[0])) {
    std::cerr << "usage: libprune_fuzz_replay TARGET PATH... | --seeds DIR\ntargets:";
    for (const auto& [name, target] : fuzz::targets()) std::cerr << " " << name;
    std::cerr << "\n";
    return 2;
  }
  torch::set_num_threads(1);
  const auto files = inputs_under({args.begin() + 1, args.end()});
  if (files.empty()) {
    std::cerr << args[0] << ": no inputs under the given paths (the corpus is missing)\n";
    return 1;
  }
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::cout << "input " << f.filename().string() << " (" << bytes.size() << " bytes)" << std::endl;
    fuzz::targets().at(args[0])(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  }
  std::cout << args[0] << ": " << files.size() << " inputs, every one handled cleanly\n";
  return 0;
}

#include "libprune/io/file.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <unistd.h>

namespace libprune::io {

std::vector<char> read_file(const std::string& path, const std::string& what) {
  namespace fs = std::filesystem;
  std::error_code ec;
  TORCH_CHECK_VALUE(fs::exists(path, ec), what, " '", path, "' does not exist. Fix: check the path (relative paths are "
                    "resolved from ", fs::current_path(ec).string(), ")");
  TORCH_CHECK_VALUE(fs::is_regular_file(path, ec), what, " '", path, "' is not a regular file. Fix: pass the file, not a directory");
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK_VALUE(in, what, " '", path, "' cannot be opened: ", std::strerror(errno), ". Fix: check its permissions");
  return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

namespace {
std::atomic<int64_t> g_fail_after{-1};
}  // namespace

void detail::fail_next_write_after(int64_t bytes) { g_fail_after = bytes; }

void write_file_atomic(const std::string& path, const std::vector<char>& bytes, const std::string& what) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  TORCH_CHECK(f, "cannot write ", what, " '", path, "': ", std::strerror(errno),
              ". Fix: check that the directory exists and is writable");
  const int64_t fail_after = g_fail_after.exchange(-1);
  const size_t n = fail_after >= 0 ? std::min(bytes.size(), static_cast<size_t>(fail_after)) : bytes.size();
  bool ok = std::fwrite(bytes.data(), 1, n, f) == n && std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
  if (fail_after >= 0) {
    ok = false;
    errno = ENOSPC;
  }
  const int err = errno;
  const bool closed = std::fclose(f) == 0;
  if (!ok || !closed) {
    std::remove(tmp.c_str());
    TORCH_CHECK(false, "writing ", what, " '", path, "' failed: ", std::strerror(err),
                " (disk full?). The previous file, if any, is unchanged. Fix: free space or choose another path");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int rerr = errno;
    std::remove(tmp.c_str());
    TORCH_CHECK(false, "cannot move ", what, " into place at '", path, "': ", std::strerror(rerr));
  }
}

std::string error_text(const std::exception& e) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  return c10_error ? c10_error->what_without_backtrace() : e.what();
}

}  // namespace libprune::io

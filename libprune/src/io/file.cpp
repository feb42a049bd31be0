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

namespace {

uint32_t le32(const std::vector<char>& b, size_t at) {
  uint32_t v = 0;
  for (int k = 3; k >= 0; --k) v = (v << 8) | static_cast<unsigned char>(b[at + static_cast<size_t>(k)]);
  return v;
}
uint32_t le16(const std::vector<char>& b, size_t at) {
  return static_cast<uint32_t>(static_cast<unsigned char>(b[at])) | static_cast<uint32_t>(static_cast<unsigned char>(b[at + 1])) << 8;
}

// The problem with the archive's structure, or "" when it is whole.
std::string zip_problem(const std::vector<char>& b) {
  constexpr size_t kEnd = 22, kCentral = 46, kLocal = 30;
  if (b.size() < kEnd) return "shorter than a zip end record";
  // The end record: within the last 22 + 65535 bytes (its comment), searched from the back.
  size_t end = b.size() - kEnd;
  const size_t lowest = b.size() > kEnd + 65535 ? b.size() - kEnd - 65535 : 0;
  while (le32(b, end) != 0x06054b50) {
    if (end == lowest) return "no zip end record (the file is cut short)";
    --end;
  }
  const uint32_t entries = le16(b, end + 10), dir_size = le32(b, end + 12), dir_at = le32(b, end + 16);
  if (entries == 0xFFFF || dir_size == 0xFFFFFFFF || dir_at == 0xFFFFFFFF) return "";  // zip64: left to the reader
  if (static_cast<uint64_t>(dir_at) + dir_size > end) return "its central directory runs past the end record";
  size_t at = dir_at;
  for (uint32_t e = 0; e < entries; ++e) {
    if (at + kCentral > end || le32(b, at) != 0x02014b50) return "a central directory entry is missing or damaged";
    const uint64_t packed = le32(b, at + 20), local = le32(b, at + 42);
    const size_t name = le16(b, at + 28), extra = le16(b, at + 30), comment = le16(b, at + 32);
    if (packed != 0xFFFFFFFF && local != 0xFFFFFFFF && local + kLocal + name + packed > dir_at) {
      return "an entry's data runs past the central directory";
    }
    at += kCentral + name + extra + comment;
  }
  return "";
}

}  // namespace

void check_zip(const std::vector<char>& bytes, const std::string& path, const std::string& what, const std::string& fix) {
  const auto problem = zip_problem(bytes);
  TORCH_CHECK_VALUE(problem.empty(), what, " '", path, "' is truncated or corrupt (", bytes.size(), " bytes; ", problem,
                    "). Fix: ", fix);
}

}  // namespace libprune::io

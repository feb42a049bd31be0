#pragma once
#include <string>
#include <vector>

namespace libprune::io {

// Reads a whole file; `what` names it in errors ("weights file", "checkpoint", ...).
std::vector<char> read_file(const std::string& path, const std::string& what);

// Writes to `path`.tmp-<pid>, flushes, then renames over `path`: a failed or interrupted write
// leaves any earlier file at `path` intact and removes the partial temp file.
void write_file_atomic(const std::string& path, const std::vector<char>& bytes, const std::string& what);

namespace detail {
// Test hook: the next atomic write fails (as a full disk would) after writing `bytes` bytes of its
// temp file. Negative: off.
void fail_next_write_after(int64_t bytes);
}  // namespace detail

}  // namespace libprune::io

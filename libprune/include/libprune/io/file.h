#pragma once
#include <exception>
#include <string>
#include <vector>

namespace libprune::io {

// Reads a whole file; `what` names it in errors ("weights file", "checkpoint", ...).
std::vector<char> read_file(const std::string& path, const std::string& what);

// Writes to `path`.tmp-<pid>, flushes, then renames over `path`: a failed or interrupted write
// leaves any earlier file at `path` intact and removes the partial temp file.
void write_file_atomic(const std::string& path, const std::vector<char>& bytes, const std::string& what);

// Checks that `bytes` hold a whole, undamaged zip archive (torch.save's and LibTorch's format): an
// end record, a central directory inside the file, every entry stored (never compressed) before it
// with its CRC-32 right, and every pickle in it well formed (lengths, stack, memo). LibTorch 1.13
// trusts all of these (it reads past a truncated archive, skips CRCs, and its unpickler allocates
// what a length says and pops empty stacks: found by AddressSanitizer and libFuzzer), so every
// archive is checked before it. Throws c10::ValueError naming `path` as `what` and the fix.
void check_zip(const std::vector<char>& bytes, const std::string& path, const std::string& what, const std::string& fix);

// An exception's message for an error text: LibTorch's c10::Error without its backtrace (which would
// bury the file's name and the fix under frames), anything else as what() says.
std::string error_text(const std::exception& e);

namespace detail {
// Test hook: the next atomic write fails (as a full disk would) after writing `bytes` bytes of its
// temp file. Negative: off.
void fail_next_write_after(int64_t bytes);
}  // namespace detail

}  // namespace libprune::io

// check_zip: the structure of a torch.save / LibTorch zip archive, every entry's CRC-32, and every
// pickle in it, checked before LibTorch reads it. LibTorch 1.13 trusts all three (it reads past the
// end of a truncated archive, skips CRCs, and its unpickler allocates whatever a length field says
// and pops an empty stack), so a damaged or hostile file must be refused here, with its name.
#include "libprune/io/file.h"

#include <c10/util/Exception.h>

#include <array>
#include <set>
#include <utility>

#ifdef LIBPRUNE_HAVE_ZLIB
#include <zlib.h>
#endif

namespace libprune::io {
namespace {

uint64_t le_bytes(const char* p, int bytes) {
  uint64_t v = 0;
  for (int k = bytes - 1; k >= 0; --k) v = (v << 8) | static_cast<unsigned char>(p[k]);
  return v;
}

uint32_t crc32_of(const char* data, size_t size) {
#ifdef LIBPRUNE_HAVE_ZLIB
  uLong crc = ::crc32(0L, Z_NULL, 0);
  while (size > 0) {
    const auto n = static_cast<uInt>(std::min<size_t>(size, 1u << 30));
    crc = ::crc32(crc, reinterpret_cast<const Bytef*>(data), n);
    data += n;
    size -= n;
  }
  return static_cast<uint32_t>(crc);
#else
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) c = table[(c ^ static_cast<unsigned char>(data[i])) & 255] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
#endif
}

// Inflates a deflated entry in pieces, for its CRC-32 (`crc`) and, when `keep`, its bytes (`out`);
// "" or the problem. Without zlib it checks nothing and sets `checked` false.
std::string inflate_entry(const char* data, uint64_t packed, uint64_t unpacked, bool keep, std::vector<char>& out,
                          uint32_t& crc, bool& checked) {
#ifdef LIBPRUNE_HAVE_ZLIB
  checked = true;
  z_stream zs{};
  if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) return "cannot be inflated (zlib init failed)";
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data));
  zs.avail_in = static_cast<uInt>(packed);
  std::array<char, 65536> piece{};
  uLong sum = ::crc32(0L, Z_NULL, 0);
  int rc = Z_OK;
  while (rc == Z_OK && zs.total_out <= unpacked) {
    zs.next_out = reinterpret_cast<Bytef*>(piece.data());
    zs.avail_out = static_cast<uInt>(piece.size());
    rc = inflate(&zs, Z_NO_FLUSH);
    const auto n = static_cast<uInt>(piece.size() - zs.avail_out);
    sum = ::crc32(sum, reinterpret_cast<const Bytef*>(piece.data()), n);
    if (keep) out.insert(out.end(), piece.data(), piece.data() + n);
    if (rc == Z_OK && n == 0) break;  // no progress: the input ended early
  }
  const uint64_t got = zs.total_out;
  inflateEnd(&zs);
  if (rc != Z_STREAM_END || got != unpacked) return "does not inflate to its recorded size";
  crc = static_cast<uint32_t>(sum);
#else
  (void)data, (void)packed, (void)unpacked, (void)keep, (void)out, (void)crc;
  checked = false;
#endif
  return "";
}

// What is wrong with a pickle (protocol <= 2, the opcodes LibTorch's unpickler knows), or "".
// Simulates the stack's depth and marks, and checks every length and memo index.
class PickleCheck {
 public:
  PickleCheck(const char* data, size_t size) : p_(data), end_(data + size) {}

  std::string problem() {
    while (p_ < end_) {
      const auto op = static_cast<unsigned char>(*p_++);
      if (op == '.') return depth_ >= 1 ? "" : "STOP with an empty stack";
      const std::string why = step(op);
      if (!why.empty()) return why + " (opcode 0x" + hex(op) + ")";
    }
    return "no STOP opcode (cut short)";
  }

 private:
  static std::string hex(unsigned op) {
    const char* digits = "0123456789abcdef";
    return {digits[op >> 4], digits[op & 15]};
  }
  bool take(size_t n, uint64_t* value = nullptr) {
    if (static_cast<size_t>(end_ - p_) < n) return false;
    if (value) *value = le_bytes(p_, static_cast<int>(n));
    p_ += n;
    return true;
  }
  bool skip_line() {
    while (p_ < end_) {
      if (*p_++ == '\n') return true;
    }
    return false;
  }
  // Pops `n` items above the top mark (all of them when n < 0), and that mark when `to_mark`.
  bool pop(int64_t n, bool to_mark = false) {
    const int64_t floor = marks_.empty() ? 0 : marks_.back();
    if (to_mark) {
      if (marks_.empty()) return false;
      depth_ = floor;
      marks_.pop_back();
      return true;
    }
    if (depth_ - floor < n) return false;
    depth_ -= n;
    return true;
  }
  std::string sized(int length_bytes) {
    uint64_t n = 0;
    if (!take(length_bytes, &n) || !take(n)) return "a length runs past the end";
    ++depth_;
    return "";
  }
  std::string step(unsigned char op);

  const char* p_;
  const char* end_;
  int64_t depth_ = 0;
  std::vector<int64_t> marks_;
  std::set<uint64_t> memo_;
};

std::string PickleCheck::step(unsigned char op) {
  uint64_t v = 0;
  switch (op) {
    case 0x80: return take(1) ? "" : "cut short";  // PROTO
    case '(': marks_.push_back(depth_); return "";
    case 'c': ++depth_; return skip_line() && skip_line() ? "" : "cut short";  // GLOBAL
    case 'q': case 'r':  // BINPUT, LONG_BINPUT
      if (!take(op == 'q' ? 1 : 4, &v)) return "cut short";
      if (depth_ - (marks_.empty() ? 0 : marks_.back()) < 1) return "memo of an empty stack";
      // Picklers number memo slots from 0, one per PUT; LibTorch sizes its table by the index.
      if (v > static_cast<uint64_t>(end_ - p_) + memo_.size()) return "memo index far past the slots stored";
      memo_.insert(v);
      return "";
    case 'h': case 'j':  // BINGET, LONG_BINGET
      if (!take(op == 'h' ? 1 : 4, &v)) return "cut short";
      if (!memo_.count(v)) return "memo index never stored";
      ++depth_;
      return "";
    case '}': case ']': case ')': case 'N': case 0x88: case 0x89: ++depth_; return "";
    case 'J': case 'K': case 'M': case 'G':  // BININT, BININT1, BININT2, BINFLOAT
      ++depth_;
      return take(op == 'J' ? 4 : op == 'K' ? 1 : op == 'M' ? 2 : 8) ? "" : "cut short";
    case 0x8a: return sized(1);  // LONG1
    case 'X': case 'T': case 'B': return sized(4);  // BINUNICODE, BINSTRING, BINBYTES
    case 'U': case 'C': return sized(1);  // SHORT_BINSTRING, SHORT_BINBYTES
    case 't': case 'l': case 'd':  // TUPLE, LIST, DICT
      if (!pop(0, true)) return "no mark";
      ++depth_;
      return "";
    case 0x85: case 0x86: case 0x87:  // TUPLE1..3
      if (!pop(op - 0x84)) return "stack underflow";
      ++depth_;
      return "";
    case 's': case 'a': case 'b': case 'R': case 0x81:  // SETITEM APPEND BUILD REDUCE NEWOBJ
      if (!pop(op == 's' ? 3 : 2)) return "stack underflow";
      ++depth_;
      return "";
    case 'u': case 'e':  // SETITEMS, APPENDS: the container sits below the mark
      if (!pop(0, true) || !pop(1)) return "no mark, or nothing below it";
      ++depth_;
      return "";
    case 'Q': return pop(1) ? (++depth_, "") : "stack underflow";  // BINPERSID
    case '0': return pop(1) ? "" : "stack underflow";  // POP
    case '1': return pop(0, true) ? "" : "no mark";  // POP_MARK
    case '2': return pop(1) ? (depth_ += 2, "") : "stack underflow";  // DUP
    default: return "an opcode LibTorch cannot read";
  }
}

// The problem with one entry's content (compression, CRC-32, a pickle's opcodes, the version
// record), or "".
std::string content_problem(const std::string& name, const char* data, uint64_t method, uint64_t crc,
                            uint64_t packed, uint64_t unpacked, bool version) {
  // data.pkl, constants.pkl and the code's .debug_pkl: all go through LibTorch's unpickler
  const bool pickle = name.size() > 3 && name.compare(name.size() - 3, 3, "pkl") == 0;
  std::vector<char> inflated;
  const char* content = data;
  uint32_t actual_crc = 0;
  bool checked = true;
  if (method == 8) {  // deflated (LibTorch compresses a module archive's code files)
    const auto why = inflate_entry(content, packed, unpacked, pickle || version, inflated, actual_crc, checked);
    if (!why.empty()) return "entry '" + name + "' " + why;
    content = inflated.data();
  } else if (method != 0 || packed != unpacked) {
    return "entry '" + name + "' uses a compression LibTorch does not write";
  } else {
    actual_crc = crc32_of(content, packed);
  }
  if (checked && actual_crc != crc) return "entry '" + name + "' fails its CRC-32 check";
  if (version && checked) {
    const std::string text(content, std::min<uint64_t>(unpacked, 8));
    if (text.empty() || text[0] < '1' || text[0] > '9') return "its version record is not a format version";
  }
  if (pickle) {
    if (!checked) return "pickle '" + name + "' is compressed and cannot be checked (built without zlib)";
    const auto why = PickleCheck(content, unpacked).problem();
    if (!why.empty()) return "pickle '" + name + "': " + why;
  }
  return "";
}

// Checks the zip64 end record and locator before the end record at `end`, when there are any:
// ("" or the problem, where the central directory must end).
std::pair<std::string, uint64_t> zip64_tail(const char* b, uint64_t end, uint64_t entries, uint64_t dir_size,
                                            uint64_t dir_at) {
  constexpr uint64_t kLocator = 20, kRecord = 56;
  if (end < kLocator || le_bytes(b + end - kLocator, 4) != 0x07064b50) return {"", end};
  const uint64_t record = le_bytes(b + end - kLocator + 8, 8);
  if (end < kLocator + kRecord || record != end - kLocator - kRecord || le_bytes(b + record, 4) != 0x06064b50) {
    return {"its zip64 end record is missing or misplaced", 0};
  }
  const bool same = le_bytes(b + end - kLocator + 4, 4) == 0 && le_bytes(b + end - kLocator + 16, 4) == 1 &&
                    le_bytes(b + record + 16, 4) == 0 && le_bytes(b + record + 20, 4) == 0 &&
                    le_bytes(b + record + 24, 8) == entries && le_bytes(b + record + 32, 8) == entries &&
                    le_bytes(b + record + 40, 8) == dir_size && le_bytes(b + record + 48, 8) == dir_at;
  if (!same) return {"its zip64 end record disagrees with its end record", 0};
  return {"", record};
}

// The problem with the archive, or "" when it is whole.
std::string zip_problem(const std::vector<char>& bytes) {
  constexpr size_t kEnd = 22, kCentral = 46, kLocal = 30;
  const char* b = bytes.data();
  if (bytes.size() < kEnd) return "shorter than a zip end record";
  // The end record: within the last 22 + 65535 bytes (its comment), searched from the back.
  size_t end = bytes.size() - kEnd;
  const size_t lowest = bytes.size() > kEnd + 65535 ? bytes.size() - kEnd - 65535 : 0;
  while (le_bytes(b + end, 4) != 0x06054b50) {
    if (end == lowest) return "no zip end record (the file is cut short)";
    --end;
  }
  const uint64_t entries = le_bytes(b + end + 10, 2), dir_size = le_bytes(b + end + 12, 4);
  const uint64_t dir_at = le_bytes(b + end + 16, 4);
  // One disk, all entries on it: what LibTorch's reader (miniz) requires. Where its constructor
  // fails it leaks its state, so refuse here what it would refuse there.
  if (le_bytes(b + end + 4, 2) != 0 || le_bytes(b + end + 6, 2) != 0 || le_bytes(b + end + 8, 2) != entries) {
    return "it claims to span several disks";
  }
  // zip64 (archives over 4 GiB or 65535 entries) is left to the reader; below that its markers
  // are damage, and LibTorch's reader follows them past the end of the file.
  const bool small = bytes.size() < 0xFFFFFFFFull;
  const bool zip64 = entries == 0xFFFF || dir_size == 0xFFFFFFFF || dir_at == 0xFFFFFFFF;
  if (zip64) return small ? "zip64 markers in an archive under 4 GiB" : "";
  // torch.save also writes a zip64 end record and its locator before the end record, and LibTorch's
  // reader takes the directory from there when they are present: they must say the same, and the
  // directory must end where they (or the end record) begin, so no second directory can hide.
  const auto tail = zip64_tail(b, end, entries, dir_size, dir_at);
  if (!tail.first.empty()) return tail.first;
  if (dir_at + dir_size != tail.second) return "its central directory does not end where the end records begin";
  size_t at = dir_at;
  const size_t dir_end = dir_at + dir_size;
  bool has_version = false;  // every torch.save / LibTorch archive records its format version
  for (uint64_t e = 0; e < entries; ++e) {
    if (at + kCentral > dir_end || le_bytes(b + at, 4) != 0x02014b50) {
      return "a central directory entry is missing or damaged";
    }
    const uint64_t method = le_bytes(b + at + 10, 2), crc = le_bytes(b + at + 16, 4);
    const uint64_t packed = le_bytes(b + at + 20, 4);
    const uint64_t unpacked = le_bytes(b + at + 24, 4), local = le_bytes(b + at + 42, 4);
    const size_t name_size = le_bytes(b + at + 28, 2), extra = le_bytes(b + at + 30, 2);
    const size_t comment = le_bytes(b + at + 32, 2);
    if (at + kCentral + name_size + extra + comment > dir_end) return "a central directory entry is cut short";
    const std::string name(b + at + kCentral, name_size);
    if (le_bytes(b + at + 8, 2) & 1) return "entry '" + name + "' is encrypted";
    const bool version = name.size() > 8 && name.compare(name.size() - 8, 8, "/version") == 0;
    has_version = has_version || version;
    if (packed == 0xFFFFFFFF || unpacked == 0xFFFFFFFF || local == 0xFFFFFFFF) {
      if (small) return "entry '" + name + "' has zip64 markers in an archive under 4 GiB";
      return "";  // a zip64 entry: left to the reader
    }
    if (local + kLocal > dir_at || le_bytes(b + local, 4) != 0x04034b50) {
      return "entry '" + name + "' has no local header";
    }
    const uint64_t data_at = local + kLocal + le_bytes(b + local + 26, 2) + le_bytes(b + local + 28, 2);
    if (data_at + packed > dir_at) return "entry '" + name + "' runs past the central directory";
    const auto why = content_problem(name, b + data_at, method, crc, packed, unpacked, version);
    if (!why.empty()) return why;
    at += kCentral + name_size + extra + comment;
  }
  if (at != dir_end) return "its central directory's size does not match its entries";
  if (!has_version) return "no version record (not written by torch.save or LibTorch)";
  return "";
}

}  // namespace

void check_zip(const std::vector<char>& bytes, const std::string& path, const std::string& what,
               const std::string& fix) {
  const auto problem = zip_problem(bytes);
  TORCH_CHECK_VALUE(problem.empty(), what, " '", path, "' is truncated or corrupt (", bytes.size(), " bytes; ", problem,
                    "). Fix: ", fix);
}

}  // namespace libprune::io

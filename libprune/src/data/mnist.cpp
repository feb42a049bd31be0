#include "libprune/data/mnist.h"

#include "libprune/io/file.h"

#include <filesystem>

#ifdef LIBPRUNE_HAVE_ZLIB
#include <zlib.h>
#endif

namespace libprune::data {
namespace {

std::vector<char> gunzip(const std::vector<char>& in, const std::string& path) {
#ifdef LIBPRUNE_HAVE_ZLIB
  z_stream zs{};
  TORCH_CHECK(inflateInit2(&zs, 16 + MAX_WBITS) == Z_OK, "zlib init failed");
  std::vector<char> out(in.size() * 4 + 1024);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  int rc = Z_OK;
  while (rc == Z_OK) {
    if (zs.total_out >= out.size()) out.resize(out.size() * 2);
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + zs.total_out);
    zs.avail_out = static_cast<uInt>(out.size() - zs.total_out);
    rc = inflate(&zs, Z_NO_FLUSH);
  }
  const auto total = zs.total_out;
  inflateEnd(&zs);
  TORCH_CHECK_VALUE(rc == Z_STREAM_END, "'", path, "' is not a complete gzip stream (truncated or corrupt). "
                    "Fix: reinstall the dataset (apt-get install --reinstall dataset-fashion-mnist) or re-download it");
  out.resize(total);
  return out;
#else
  TORCH_CHECK_VALUE(false, "'", path, "' is gzipped, but libprune was built without zlib. Fix: gunzip it, "
                    "or install zlib1g-dev and rebuild");
  return {};
#endif
}

std::vector<char> read_idx(const std::string& dir, const std::string& stem) {
  namespace fs = std::filesystem;
  const fs::path plain = fs::path(dir) / stem;
  const fs::path gz = fs::path(dir) / (stem + ".gz");
  std::error_code ec;
  TORCH_CHECK_VALUE(fs::is_directory(dir, ec), "MNIST data directory '", dir, "' does not exist. Fix: install "
                    "dataset-fashion-mnist (scripts/setup.sh does) or point the data path at a folder holding ",
                    stem, "[.gz]");
  if (fs::exists(plain, ec)) return io::read_file(plain.string(), "IDX file");
  TORCH_CHECK_VALUE(fs::exists(gz, ec), "MNIST data directory '", dir, "' has neither ", plain.filename().string(),
                    " nor ", gz.filename().string(), ". Fix: point the data path at the folder that holds the IDX files");
  return gunzip(io::read_file(gz.string(), "IDX file"), gz.string());
}

int32_t be32(const std::vector<char>& b, size_t at) {
  const auto* u = reinterpret_cast<const unsigned char*>(b.data() + at);
  return static_cast<int32_t>((uint32_t(u[0]) << 24) | (uint32_t(u[1]) << 16) | (uint32_t(u[2]) << 8) | u[3]);
}

}  // namespace

MnistData read_mnist(const std::string& dir, Split split) {
  const std::string prefix = split == Split::Train ? "train" : "t10k";
  const auto images = read_idx(dir, prefix + "-images-idx3-ubyte");
  const auto labels = read_idx(dir, prefix + "-labels-idx1-ubyte");
  const std::string where = dir + "/" + prefix;
  TORCH_CHECK_VALUE(images.size() >= 16 && be32(images, 0) == 2051, "'", where,
                    "-images-idx3-ubyte' is not an IDX image file (bad magic). Fix: reinstall the dataset");
  TORCH_CHECK_VALUE(labels.size() >= 8 && be32(labels, 0) == 2049, "'", where,
                    "-labels-idx1-ubyte' is not an IDX label file (bad magic). Fix: reinstall the dataset");
  const int64_t n = be32(images, 4), rows = be32(images, 8), cols = be32(images, 12);
  TORCH_CHECK_VALUE(be32(labels, 4) == n, "'", where, "': ", n, " images but ", be32(labels, 4),
                    " labels. Fix: use matching image and label files");
  // Sizes from the header are checked against the file before any product of them can overflow.
  const int64_t pixels = static_cast<int64_t>(images.size()) - 16;
  const bool sizes_fit = n >= 0 && rows >= 0 && cols >= 0 &&
                         (rows * cols == 0 ? pixels == 0 : n == pixels / (rows * cols) && pixels % (rows * cols) == 0);
  TORCH_CHECK_VALUE(sizes_fit && static_cast<int64_t>(labels.size()) == 8 + n, "'", where, "' IDX files are truncated ",
                    "or their header is damaged (", n, " images of ", rows, "x", cols, " in ", pixels,
                    " bytes). Fix: reinstall the dataset");
  MnistData out;
  out.images = torch::from_blob(const_cast<char*>(images.data() + 16), {n, rows, cols}, torch::kUInt8).clone();
  out.labels = torch::from_blob(const_cast<char*>(labels.data() + 8), {n}, torch::kUInt8).to(torch::kInt64);
  return out;
}

torch::Tensor normalize_images(const torch::Tensor& images_u8, double mean, double std) {
  return images_u8.to(torch::kFloat32).div_(255.0).sub_(mean).div_(std).unsqueeze(1);
}

}  // namespace libprune::data

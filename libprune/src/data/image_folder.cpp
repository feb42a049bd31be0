#include "libprune/data/image_folder.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <thread>

#ifdef LIBPRUNE_HAVE_OPENCV
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

namespace libprune::data {
namespace fs = std::filesystem;

bool image_folder_available() {
#ifdef LIBPRUNE_HAVE_OPENCV
  return true;
#else
  return false;
#endif
}

namespace {
bool is_image(const fs::path& p) {
  auto ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".bmp";
}
}  // namespace

ImageFolder::ImageFolder(const std::string& root, ImageFolderOptions options) : options_(std::move(options)) {
  TORCH_CHECK_VALUE(image_folder_available(), "ImageFolder \"", root,
                    "\": this libprune was built without OpenCV. Fix: install libopencv-dev (scripts/setup.sh) and rebuild");
  TORCH_CHECK_VALUE(fs::is_directory(root), "image folder \"", root,
                    "\" does not exist. Fix: set data.path to a folder of class folders (root/<class>/<image>.jpg)");
  TORCH_CHECK_VALUE(options_.crop() > 0 && options_.resize() >= options_.crop(), "ImageFolder: resize (", options_.resize(),
                    ") must be >= crop (", options_.crop(), ") > 0");
  TORCH_CHECK_VALUE(options_.mean().size() == 3 && options_.std().size() == 3, "ImageFolder: mean and std need 3 values");
  for (const auto& e : fs::directory_iterator(root)) {
    if (e.is_directory()) classes_.push_back(e.path().filename().string());
  }
  std::sort(classes_.begin(), classes_.end());
  for (size_t c = 0; c < classes_.size(); ++c) {
    std::vector<std::string> images;
    for (const auto& e : fs::recursive_directory_iterator(fs::path(root) / classes_[c])) {
      if (e.is_regular_file() && is_image(e.path())) images.push_back(e.path().string());
    }
    std::sort(images.begin(), images.end());
    for (auto& f : images) files_.emplace_back(std::move(f), static_cast<int64_t>(c));
  }
  TORCH_CHECK_VALUE(!files_.empty(), "image folder \"", root, "\" has no images (", classes_.size(),
                    " class folders). Fix: put .jpg/.jpeg/.png/.bmp files in root/<class>/");
}

#ifdef LIBPRUNE_HAVE_OPENCV
namespace {

// RandomResizedCrop: area in [min_scale, 1] of the image, aspect in [3/4, 4/3] (log-uniform), ten
// tries, then a center crop of the whole image; resized to side x side and flipped half the time.
cv::Mat random_resized_crop(const cv::Mat& img, int side, double min_scale, std::mt19937_64& rng) {
  const double area = static_cast<double>(img.rows) * img.cols;
  cv::Rect box(0, 0, img.cols, img.rows);
  std::uniform_real_distribution<double> scale(min_scale, 1.0), log_ratio(std::log(3.0 / 4), std::log(4.0 / 3));
  bool found = false;
  for (int t = 0; t < 10 && !found; ++t) {
    const double a = area * scale(rng), r = std::exp(log_ratio(rng));
    const int w = static_cast<int>(std::round(std::sqrt(a * r))), h = static_cast<int>(std::round(std::sqrt(a / r)));
    if (w > 0 && h > 0 && w <= img.cols && h <= img.rows) {
      box = cv::Rect(std::uniform_int_distribution<int>(0, img.cols - w)(rng),
                     std::uniform_int_distribution<int>(0, img.rows - h)(rng), w, h);
      found = true;
    }
  }
  if (!found) {
    const int square = std::min(img.cols, img.rows);
    box = cv::Rect((img.cols - square) / 2, (img.rows - square) / 2, square, square);
  }
  cv::Mat out;
  cv::resize(img(box), out, cv::Size(side, side), 0, 0, cv::INTER_LINEAR);
  if (std::uniform_int_distribution<int>(0, 1)(rng)) cv::flip(out, out, 1);
  return out;
}

// Resize (the shorter side to `resize`), then a side x side center crop.
cv::Mat resize_center_crop(const cv::Mat& img, int side, int64_t resize) {
  const double f = static_cast<double>(resize) / std::min(img.rows, img.cols);
  cv::Mat resized;
  cv::resize(img, resized,
             cv::Size(std::max(side, static_cast<int>(std::round(img.cols * f))),
                      std::max(side, static_cast<int>(std::round(img.rows * f)))),
             0, 0, cv::INTER_LINEAR);
  return resized(cv::Rect((resized.cols - side) / 2, (resized.rows - side) / 2, side, side)).clone();
}

// HWC bytes to normalised CHW floats in a plain loop: an ATen op here, on a decoding thread, is large
// enough to go parallel and would start an OpenMP team per decoding thread that fights training for
// the cores (as the in-memory loader did before it gathered in loops).
void to_normalised_chw(const cv::Mat& rgb, int64_t side, const std::vector<double>& mean, const std::vector<double>& std,
                       float* dst) {
  const int64_t plane = side * side;
  for (int c = 0; c < 3; ++c) {
    const float scale = static_cast<float>(1.0 / (255.0 * std[static_cast<size_t>(c)]));
    const float shift = static_cast<float>(mean[static_cast<size_t>(c)] / std[static_cast<size_t>(c)]);
    for (int64_t r = 0; r < side; ++r) {
      const unsigned char* row = rgb.ptr<unsigned char>(static_cast<int>(r));
      float* d = dst + c * plane + r * side;
      for (int64_t col = 0; col < side; ++col) d[col] = static_cast<float>(row[col * 3 + c]) * scale - shift;
    }
  }
}

}  // namespace
#endif

bool ImageFolder::decode(const std::string& path, bool train, uint64_t seed, float* dst) const {
#ifdef LIBPRUNE_HAVE_OPENCV
  cv::Mat img = cv::imread(path, cv::IMREAD_COLOR);
  if (img.empty()) return false;
  cv::cvtColor(img, img, cv::COLOR_BGR2RGB);
  std::mt19937_64 rng(seed);
  const int side = static_cast<int>(options_.crop());
  const cv::Mat out = train ? random_resized_crop(img, side, options_.min_scale(), rng)
                            : resize_center_crop(img, side, options_.resize());
  to_normalised_chw(out, options_.crop(), options_.mean(), options_.std(), dst);
  return true;
#else
  (void)path, (void)train, (void)seed, (void)dst;
  return false;
#endif
}

Batch ImageFolder::get(const std::vector<int64_t>& indices, bool train, uint64_t seed) {
  const int64_t n = static_cast<int64_t>(indices.size()), s = options_.crop();
  for (const int64_t index : indices) {
    TORCH_CHECK_INDEX(index >= 0 && index < size(), "ImageFolder: index ", index, " is out of range for ", size(),
                      " images. Fix: sample indices in [0, size())");
  }
  auto x = torch::empty({n, 3, s, s});
  auto y = torch::empty({n}, torch::kLong);
  std::vector<char> ok(static_cast<size_t>(n), 0);
  std::vector<std::string> errors(static_cast<size_t>(n));
  int64_t* yp = y.data_ptr<int64_t>();
  float* xp = x.data_ptr<float>();
  const int threads = std::max(1, std::min<int>(options_.threads(), static_cast<int>(n)));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int64_t i = t; i < n; i += threads) {
        const auto& [path, label] = files_.at(static_cast<size_t>(indices[static_cast<size_t>(i)]));
        yp[i] = label;
        // An exception must not leave a std::thread (that terminates the process): the image
        // counts as unreadable, with the reason.
        try {
          ok[static_cast<size_t>(i)] = decode(path, train, seed * 1315423911ULL + static_cast<uint64_t>(i), xp + i * 3 * s * s);
          if (!ok[static_cast<size_t>(i)]) errors[static_cast<size_t>(i)] = path;
        } catch (const std::exception& e) {
          errors[static_cast<size_t>(i)] = path + " (" + e.what() + ")";
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  int64_t good = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (ok[static_cast<size_t>(i)]) good = i;
  }
  for (int64_t i = 0; i < n; ++i) {
    if (ok[static_cast<size_t>(i)]) continue;
    TORCH_CHECK_VALUE(options_.skip_unreadable(), "image \"", errors[static_cast<size_t>(i)],
                      "\" cannot be read. Fix: remove or replace it, or set data.skip_unreadable to true to skip it");
    ++skipped_;
    // Keep the batch shape: reuse a readable example of the same batch.
    TORCH_CHECK_VALUE(good >= 0, "no image of a batch could be read (first: \"", errors[static_cast<size_t>(i)],
                      "\"). Fix: check the image folder's files");
    x[i].copy_(x[good]);
    yp[i] = yp[good];
  }
  return {{{kImages, x}}, y};
}

}  // namespace libprune::data

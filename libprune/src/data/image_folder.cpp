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
#ifdef LIBPRUNE_HAVE_OPENCV
  float* xp = x.data_ptr<float>();
  auto work = [&](int64_t i) {
    const auto& [path, label] = files_.at(static_cast<size_t>(indices[static_cast<size_t>(i)]));
    yp[i] = label;
    cv::Mat img = cv::imread(path, cv::IMREAD_COLOR);
    if (img.empty()) {
      errors[static_cast<size_t>(i)] = path;
      return;
    }
    cv::cvtColor(img, img, cv::COLOR_BGR2RGB);
    std::mt19937_64 rng(seed * 1315423911ULL + static_cast<uint64_t>(i));
    cv::Mat out;
    if (train) {
      // RandomResizedCrop: area in [min_scale, 1] of the image, aspect in [3/4, 4/3] (log-uniform),
      // ten tries, then a center crop of the whole image.
      const double area = static_cast<double>(img.rows) * img.cols;
      cv::Rect box(0, 0, img.cols, img.rows);
      std::uniform_real_distribution<double> scale(options_.min_scale(), 1.0), log_ratio(std::log(3.0 / 4), std::log(4.0 / 3));
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
        const int side = std::min(img.cols, img.rows);
        box = cv::Rect((img.cols - side) / 2, (img.rows - side) / 2, side, side);
      }
      cv::resize(img(box), out, cv::Size(static_cast<int>(s), static_cast<int>(s)), 0, 0, cv::INTER_LINEAR);
      if (std::uniform_int_distribution<int>(0, 1)(rng)) cv::flip(out, out, 1);
    } else {
      const double f = static_cast<double>(options_.resize()) / std::min(img.rows, img.cols);
      cv::Mat resized;
      cv::resize(img, resized, cv::Size(std::max(static_cast<int>(s), static_cast<int>(std::round(img.cols * f))),
                                        std::max(static_cast<int>(s), static_cast<int>(std::round(img.rows * f)))),
                 0, 0, cv::INTER_LINEAR);
      out = resized(cv::Rect((resized.cols - static_cast<int>(s)) / 2, (resized.rows - static_cast<int>(s)) / 2,
                             static_cast<int>(s), static_cast<int>(s)))
                .clone();
    }
    // HWC bytes to normalised CHW floats in a plain loop: an ATen op here, on a decoding thread,
    // is large enough to go parallel and would start an OpenMP team per decoding thread that
    // fights training for the cores (as the in-memory loader did before it gathered in loops).
    const int64_t plane = s * s;
    float* dst = xp + i * 3 * plane;
    for (int c = 0; c < 3; ++c) {
      const float scale = static_cast<float>(1.0 / (255.0 * options_.std()[static_cast<size_t>(c)]));
      const float shift = static_cast<float>(options_.mean()[static_cast<size_t>(c)] / options_.std()[static_cast<size_t>(c)]);
      for (int64_t r = 0; r < s; ++r) {
        const unsigned char* row = out.ptr<unsigned char>(static_cast<int>(r));
        float* d = dst + c * plane + r * s;
        for (int64_t col = 0; col < s; ++col) d[col] = static_cast<float>(row[col * 3 + c]) * scale - shift;
      }
    }
    ok[static_cast<size_t>(i)] = 1;
  };
  const int threads = std::max(1, std::min<int>(options_.threads(), static_cast<int>(n)));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int64_t i = t; i < n; i += threads) {
        // An exception must not leave a std::thread (that terminates the process): the image
        // counts as unreadable, with the reason.
        try {
          work(i);
        } catch (const std::exception& e) {
          errors[static_cast<size_t>(i)] = files_[static_cast<size_t>(indices[static_cast<size_t>(i)])].first + " (" + e.what() + ")";
        }
      }
    });
  }
  for (auto& th : pool) th.join();
#endif
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

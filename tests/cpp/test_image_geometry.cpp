// ImageFolder's geometry on images with a known gradient (tests/python/image_fixtures.py: red = 3 x
// column, green = 4 x row, blue = 100, 64 x 48), as PNG and JPEG: the crop's pixels say which source
// pixels it took, so a wrong Resize, CenterCrop or RandomResizedCrop shows.
#include "helpers.h"

#include "libprune/data/image_folder.h"
#include "test_paths.h"

#include <cmath>

using libprune::data::ImageFolder;
using libprune::data::ImageFolderOptions;

namespace {

constexpr double kWidth = 64, kHeight = 48, kRedSlope = 3, kGreenSlope = 4;

// Least squares of v[i] = a + b i; also the largest residual.
struct Line {
  double a = 0, b = 0, residual = 0;
};
Line fit(const torch::Tensor& v) {
  const auto n = v.size(0);
  const auto i = torch::arange(n, torch::kDouble), y = v.to(torch::kDouble);
  const double mi = i.mean().item<double>(), my = y.mean().item<double>();
  Line l;
  l.b = ((i - mi) * (y - my)).sum().item<double>() / ((i - mi) * (i - mi)).sum().item<double>();
  l.a = my - l.b * mi;
  l.residual = (y - (l.a + l.b * i)).abs().max().item<double>();
  return l;
}

// Pixel levels (0..255) of one decoded image: mean 0, std 1/255.
ImageFolderOptions levels() {
  return ImageFolderOptions().crop(16).resize(20).mean({0, 0, 0}).std({1.0 / 255, 1.0 / 255, 1.0 / 255}).threads(1);
}

std::string fixture(const std::string& format) { return std::string(LIBPRUNE_FIXTURE_DIR) + "/images/" + format; }

}  // namespace

TEST_CASE("image folder: Resize and CenterCrop take the centre of the short-side-resized image", "[imagefolder]") {
  if (!libprune::data::image_folder_available()) {
    WARN("ImageFolder tests skipped: built without OpenCV");
    return;
  }
  for (const std::string format : {"png", "jpg"}) {
    INFO(format);
    const double tol = format == "png" ? 1.0 : 2.5;  // levels, on a fit over the whole crop
    ImageFolder set(fixture(format), levels());
    const auto x = set.get({0}, false).x()[0];
    // Short side 48 -> 20: 64 x 48 becomes 27 x 20; the 16 x 16 centre starts at column 5, row 2.
    // Bilinear resizing keeps a linear gradient linear: output column c is source column
    // (c + 5 + 0.5) * 64 / 27 - 0.5.
    const auto red = fit(x[0].mean(0)), green = fit(x[1].mean(1));
    CHECK(red.b == Approx(kRedSlope * kWidth / 27).margin(0.05));
    CHECK(red.a == Approx(kRedSlope * (5.5 * kWidth / 27 - 0.5)).margin(tol));
    CHECK(green.b == Approx(kGreenSlope * kHeight / 20).margin(0.05));
    CHECK(green.a == Approx(kGreenSlope * (2.5 * kHeight / 20 - 0.5)).margin(tol));
    // Red varies along columns only, green along rows only: nothing is transposed or flipped.
    CHECK(fit(x[0].mean(1)).b == Approx(0).margin(0.05));
    CHECK(fit(x[1].mean(0)).b == Approx(0).margin(0.05));
    CHECK(x[2].mean().item<double>() == Approx(100).margin(tol));
  }
}

TEST_CASE("image folder: RandomResizedCrop boxes keep area, aspect and bounds, and flip horizontally", "[imagefolder]") {
  if (!libprune::data::image_folder_available()) {
    WARN("ImageFolder tests skipped: built without OpenCV");
    return;
  }
  ImageFolder set(fixture("png"), levels().min_scale(0.25));
  int flipped = 0;
  std::set<int64_t> widths;
  for (uint64_t seed = 0; seed < 24; ++seed) {
    INFO("seed " << seed);
    const auto x = set.get({0}, true, seed).x()[0];
    const auto red = fit(x[0].mean(0)), green = fit(x[1].mean(1));
    CHECK(red.residual < 1.5);
    CHECK(green.residual < 1.5);
    CHECK(green.b > 0);  // never flipped vertically
    flipped += red.b < 0;
    // The box the crop took, from the slopes (source pixels per output pixel) and the first column.
    const double w = std::abs(red.b) / kRedSlope * 16, h = green.b / kGreenSlope * 16;
    const double x0 = (red.b > 0 ? red.a : red.a + 15 * red.b) / kRedSlope - 0.5 * w / 16 + 0.5;
    const double y0 = green.a / kGreenSlope - 0.5 * h / 16 + 0.5;
    widths.insert(std::lround(w));
    CHECK(w / h >= 0.75 - 0.06);
    CHECK(w / h <= 4.0 / 3 + 0.08);
    CHECK(w * h / (kWidth * kHeight) >= 0.25 - 0.03);
    CHECK(w * h / (kWidth * kHeight) <= 1.0 + 0.03);
    CHECK(x0 >= -0.6);
    CHECK(x0 + w <= kWidth + 0.6);
    CHECK(y0 >= -0.6);
    CHECK(y0 + h <= kHeight + 0.6);
  }
  CHECK(flipped > 3);
  CHECK(flipped < 21);
  CHECK(widths.size() > 5);  // the boxes vary with the seed
}

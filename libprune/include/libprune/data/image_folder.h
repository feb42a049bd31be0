#pragma once
// ImageFolder: the ImageNet layout, root/<class>/<image>.{jpg,jpeg,png,bmp}, classes sorted by
// name. Decoded with OpenCV (optional at build time: without it, constructing one throws).
#include "libprune/data/dataset.h"

#include <atomic>
#include <string>
#include <vector>

namespace libprune::data {

struct ImageFolderOptions {
  ImageFolderOptions() = default;
  // train: RandomResizedCrop(crop, scale [min_scale, 1], ratio [3/4, 4/3]) + horizontal flip;
  // eval: Resize(resize) of the short side, then CenterCrop(crop). Then normalise per channel.
  TORCH_ARG(int64_t, crop) = 224;
  TORCH_ARG(int64_t, resize) = 256;
  TORCH_ARG(double, min_scale) = 0.08;
  TORCH_ARG(std::vector<double>, mean) = std::vector<double>{0.485, 0.456, 0.406};
  TORCH_ARG(std::vector<double>, std) = std::vector<double>{0.229, 0.224, 0.225};
  // An unreadable image: skipped (counted, replaced by another image of the batch) or an error.
  TORCH_ARG(bool, skip_unreadable) = true;
  TORCH_ARG(int, threads) = 2;  // decoding threads per batch
};

bool image_folder_available();

class ImageFolder : public Dataset {
 public:
  ImageFolder(const std::string& root, ImageFolderOptions options = {});
  int64_t size() const override { return static_cast<int64_t>(files_.size()); }
  int64_t num_classes() const override { return static_cast<int64_t>(classes_.size()); }
  Batch get(const std::vector<int64_t>& indices, bool train, uint64_t seed = 0) override;
  const std::vector<std::string>& classes() const { return classes_; }
  int64_t skipped() const { return skipped_; }

 private:
  // Decodes one image into `dst` (3 x crop x crop floats), augmented with `seed` when training;
  // false when it cannot be read.
  bool decode(const std::string& path, bool train, uint64_t seed, float* dst) const;
  ImageFolderOptions options_;
  std::vector<std::string> classes_;
  std::vector<std::pair<std::string, int64_t>> files_;
  std::atomic<int64_t> skipped_{0};
};

}  // namespace libprune::data

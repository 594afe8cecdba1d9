// emoji_dataset.h: the built-in default training set (DESIGN.md section 11;
// docs/eval-data-formats.md section 5): the Noto emoji images and names shipped by the npm
// package emoji-datasource-google (open licence), about 1,900 captioned 64x64 RGBA PNGs.
//
// Layout of the package: emoji.json, an array of entries {"name": "RED APPLE", "image":
// "1f34e.png", "has_img_google": true, ...}, and img/google/64/<image>. Only top-level entries are
// used (skin-tone variations would repeat a caption with near-identical images). The caption is
// the name lowercased ("red apple", "grinning face"). Entries without a name, with
// has_img_google false, or whose PNG is missing are skipped. Samples are sorted by image file
// name, so indices are stable across machines and runs.
//
// scripts/setup.sh installs the package with
//   npm install --prefix third_party/emoji emoji-datasource-google@16.0.0 --no-audit --no-fund
// so `root` may be that prefix (third_party/emoji) or the package folder itself.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace engine::io {

struct EmojiSample {
  std::string image_path;  // absolute or root-relative path of the 64x64 PNG
  std::string caption;     // lowercased name, e.g. "red apple"
};

class EmojiDataset {
 public:
  // Read `root`/emoji.json (or `root`/node_modules/emoji-datasource-google/emoji.json). Throws
  // engine::Error saying how to install the package when it is not there, or naming the file
  // when emoji.json is malformed.
  static EmojiDataset open(const std::string& root = "third_party/emoji");

  size_t size() const { return samples_.size(); }
  const std::vector<EmojiSample>& samples() const { return samples_; }
  const EmojiSample& at(size_t i) const;
  const std::string& caption(size_t i) const { return at(i).caption; }
  const std::string& image_path(size_t i) const { return at(i).image_path; }
  // The package folder actually used (the one holding emoji.json).
  const std::string& package_dir() const { return package_dir_; }

  // Sample i as f32 [3, 64, 64] in [-1, 1]. The PNGs are RGBA with transparent backgrounds;
  // they are composited over white (out = a * rgb + (1 - a) * 255, a = alpha / 255), the same
  // choice as img2dataset's white border padding, so every sample has one background colour the
  // generator can learn. Images of another size are resized to 64x64 (none are in 16.0.0).
  Tensor load(size_t i) const;

 private:
  std::string package_dir_;
  std::vector<EmojiSample> samples_;
};

}  // namespace engine::io

// image_folder.h: a folder of images with optional caption sidecars as a Dataset
// (io/dataset.h; DESIGN.md section 11), and the RGB decoding every dataset shares.
//
// The folder is searched recursively for *.jpg, *.jpeg, *.png and *.bmp (extension case
// ignored; hidden files and folders, whose names start with '.', are left out). Samples are
// sorted by their path relative to the folder (byte order), so index i names the same image on
// every machine and in every run. The caption of a/b/photo.jpg is the text of a/b/photo.txt
// with surrounding whitespace removed, or "" when there is no such file.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "io/dataset.h"
#include "tensor/tensor.h"

namespace engine::io {

// Decode an image (any format io::decode_image reads) to u8 [H, W, 3] RGB: grey is replicated
// and an alpha channel is composited over white (out = (a * c + (255 - a) * 255) / 255,
// rounded), the background img2dataset pads with. `source` names the data in errors.
Tensor decode_rgb(const void* data, size_t size, const std::string& source);
Tensor read_rgb(const std::string& path);
// The same compositing for an already decoded u8 [H, W, 4] image.
Tensor composite_over_white(const Tensor& rgba);

class ImageFolderDataset : public Dataset {
 public:
  // Throws engine::Error when `root` is missing, not a folder, or holds no image.
  explicit ImageFolderDataset(const std::string& root);

  size_t size() const override { return files_.size(); }
  RawSample get(size_t i) const override;
  std::string describe() const override;

  // Path of sample i relative to the root (generic '/' separators).
  const std::string& relative_path(size_t i) const;
  const std::string& root() const { return root_; }

 private:
  std::string root_;
  std::vector<std::string> files_;  // relative paths, sorted
};

}  // namespace engine::io

// image_folder.cpp: see image_folder.h. Listing uses std::filesystem; decoding is io/image (stb).
#include "io/image_folder.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/image.h"
#include "tensor/error.h"

namespace engine::io {
namespace fs = std::filesystem;

namespace {

// u8 [H, W, C] with C in 1..4 -> u8 [H, W, 3]; alpha (C = 2 or 4) over white.
Tensor rgb_from_any(const Tensor& image) {
  const int64_t h = image.sizes()[0], w = image.sizes()[1], c = image.sizes()[2];
  if (c == 3) return image;
  Tensor out = empty({h, w, 3}, opts(DType::u8));
  const uint8_t* in = image.data<uint8_t>();
  uint8_t* o = out.data<uint8_t>();
  const bool alpha = c == 2 || c == 4;
  const int colours = c <= 2 ? 1 : 3;
  for (int64_t p = 0; p < h * w; ++p) {
    const uint8_t* px = in + p * c;
    const int a = alpha ? px[c - 1] : 255;
    for (int k = 0; k < 3; ++k) {
      const int v = px[colours == 1 ? 0 : k];
      // Integer (a * v + (255 - a) * 255) / 255 rounded to nearest: exact for a = 255.
      o[p * 3 + k] = uint8_t((v * a + 255 * (255 - a) + 127) / 255);
    }
  }
  return out;
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool is_image_extension(const std::string& ext) {
  const std::string e = lower(ext);
  return e == ".jpg" || e == ".jpeg" || e == ".png" || e == ".bmp";
}

std::string trim(const std::string& s) {
  const char* ws = " \t\r\n\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

}  // namespace

Tensor decode_rgb(const void* data, size_t size, const std::string& source) {
  return rgb_from_any(decode_image(data, size, source, 0));
}

Tensor read_rgb(const std::string& path) { return rgb_from_any(read_image(path, 0)); }

Tensor composite_over_white(const Tensor& rgba) {
  ENGINE_CHECK(rgba.defined() && rgba.dim() == 3 && rgba.sizes()[2] == 4 && rgba.dtype() == DType::u8,
               "composite_over_white: expected u8 [H, W, 4], got {}",
               rgba.defined() ? rgba.sizes().str() : std::string("undefined"));
  return rgb_from_any(rgba.contiguous());
}

ImageFolderDataset::ImageFolderDataset(const std::string& root) : root_(root) {
  std::error_code ec;
  ENGINE_CHECK(fs::exists(root, ec), "image folder '{}' does not exist", root);
  ENGINE_CHECK(fs::is_directory(root, ec), "image folder '{}' is not a folder", root);
  fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec);
  ENGINE_CHECK(!ec, "image folder '{}': cannot list it: {}", root, ec.message());
  const fs::path base(root);
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    ENGINE_CHECK(!ec, "image folder '{}': cannot list it: {}", root, ec.message());
    const fs::path& p = it->path();
    const std::string name = p.filename().string();
    if (!name.empty() && name[0] == '.') {
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file(ec) || !is_image_extension(p.extension().string())) continue;
    files_.push_back(p.lexically_relative(base).generic_string());
  }
  std::sort(files_.begin(), files_.end());
  ENGINE_CHECK(!files_.empty(),
               "image folder '{}' holds no images (looked recursively for .jpg, .jpeg, .png, .bmp; for "
               "WebDataset tar shards use wds:PATTERN)",
               root);
}

const std::string& ImageFolderDataset::relative_path(size_t i) const {
  ENGINE_CHECK(i < files_.size(), "image folder '{}': index {} out of range (size {})", root_, i, files_.size());
  return files_[i];
}

RawSample ImageFolderDataset::get(size_t i) const {
  const fs::path path = fs::path(root_) / relative_path(i);
  RawSample s;
  s.key = relative_path(i);
  s.image = read_rgb(path.string());
  fs::path sidecar = path;
  sidecar.replace_extension(".txt");
  std::ifstream f(sidecar, std::ios::binary);
  if (f.is_open()) {
    std::ostringstream ss;
    ss << f.rdbuf();
    s.caption = trim(ss.str());
  }
  return s;
}

std::string ImageFolderDataset::describe() const {
  return fmt::format("folder ({} images, {})", files_.size(), root_);
}

}  // namespace engine::io

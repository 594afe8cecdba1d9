// emoji_dataset.cpp: see emoji_dataset.h. Parses emoji.json with nlohmann::json and decodes the
// PNGs with io/image.
#include "io/emoji_dataset.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "io/image.h"
#include "tensor/error.h"

namespace engine::io {
namespace fs = std::filesystem;

namespace {

constexpr int64_t kSide = 64;

// The folder holding emoji.json: `root` itself or the npm prefix layout below it.
std::string find_package_dir(const std::string& root) {
  const fs::path r(root);
  for (const fs::path& p : {r, r / "node_modules" / "emoji-datasource-google"}) {
    std::error_code ec;
    if (fs::is_regular_file(p / "emoji.json", ec)) return p.string();
  }
  throw Error(fmt::format(
      "EmojiDataset: emoji-datasource-google not found under '{}' (looked for emoji.json there and in "
      "node_modules/emoji-datasource-google). Install it with `bash scripts/setup.sh`, or directly: "
      "npm install --prefix third_party/emoji emoji-datasource-google@16.0.0 --no-audit --no-fund",
      root));
}

std::string lowercase_ascii(std::string s) {
  // ASCII only: the names are upper-case English (a few flags carry accented letters, which
  // stay as they are rather than being mangled byte by byte).
  for (char& ch : s)
    if (ch >= 'A' && ch <= 'Z') ch = char(ch - 'A' + 'a');
  return s;
}

}  // namespace

EmojiDataset EmojiDataset::open(const std::string& root) {
  EmojiDataset ds;
  ds.package_dir_ = find_package_dir(root);
  const fs::path json_path = fs::path(ds.package_dir_) / "emoji.json";
  const fs::path img_dir = fs::path(ds.package_dir_) / "img" / "google" / "64";

  std::ifstream f(json_path, std::ios::binary);
  ENGINE_CHECK(f.is_open(), "EmojiDataset: cannot open '{}'", json_path.string());
  std::ostringstream ss;
  ss << f.rdbuf();
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("EmojiDataset: '{}' is not valid JSON: {}", json_path.string(), e.what()));
  }
  ENGINE_CHECK(doc.is_array(), "EmojiDataset: '{}': expected a JSON array of entries", json_path.string());

  for (const auto& entry : doc) {
    if (!entry.is_object()) continue;
    const auto name = entry.find("name");
    const auto image = entry.find("image");
    const auto has = entry.find("has_img_google");
    if (name == entry.end() || !name->is_string() || image == entry.end() || !image->is_string()) continue;
    // Only an explicit false skips: an entry without the flag still has its PNG checked below.
    if (has != entry.end() && has->is_boolean() && !has->get<bool>()) continue;
    const std::string file = image->get<std::string>();
    // Refuse path components in the file name: the JSON is data, not a place to escape img_dir.
    if (file.empty() || file.find('/') != std::string::npos || file.find('\\') != std::string::npos) continue;
    const fs::path png = img_dir / file;
    std::error_code ec;
    if (!fs::is_regular_file(png, ec)) continue;
    const std::string caption = lowercase_ascii(name->get<std::string>());
    if (caption.empty()) continue;
    ds.samples_.push_back({png.string(), caption});
  }
  std::sort(ds.samples_.begin(), ds.samples_.end(),
            [](const EmojiSample& a, const EmojiSample& b) { return a.image_path < b.image_path; });
  ENGINE_CHECK(!ds.samples_.empty(), "EmojiDataset: no usable entries in '{}' (images expected in '{}')",
               json_path.string(), img_dir.string());
  return ds;
}

const EmojiSample& EmojiDataset::at(size_t i) const {
  ENGINE_CHECK(i < samples_.size(), "EmojiDataset: index {} out of range (size {})", i, samples_.size());
  return samples_[i];
}

Tensor EmojiDataset::load(size_t i) const {
  Tensor rgba = read_image(at(i).image_path, 4);
  if (rgba.sizes()[0] != kSide || rgba.sizes()[1] != kSide)
    rgba = resize_image(center_crop_square(rgba), kSide, kSide);
  // Composite over white in u8 space, then the usual u8 -> [-1, 1] mapping.
  const int64_t n = kSide * kSide;
  Tensor rgb = empty({kSide, kSide, 3}, opts(DType::u8));
  const uint8_t* in = rgba.data<uint8_t>();
  uint8_t* out = rgb.data<uint8_t>();
  for (int64_t p = 0; p < n; ++p) {
    const int a = in[p * 4 + 3];
    for (int k = 0; k < 3; ++k) {
      const int v = (in[p * 4 + k] * a + 255 * (255 - a) + 127) / 255;
      out[p * 3 + k] = uint8_t(v);
    }
  }
  return to_float(rgb);
}

}  // namespace engine::io

// dataset.cpp: open_dataset (the dataset spec strings of io/dataset.h) and the adapter that
// exposes the built-in emoji set (io/emoji_dataset.h) as a Dataset. The folder and WebDataset
// sources live in io/image_folder.cpp and io/webdataset.cpp; the loader in io/data_loader.cpp.
#include "io/dataset.h"

#include <filesystem>

#include "io/emoji_dataset.h"
#include "io/image.h"
#include "io/image_folder.h"
#include "io/webdataset.h"
#include "tensor/error.h"

namespace engine::io {
namespace fs = std::filesystem;

namespace {

// The emoji PNGs are RGBA with transparent backgrounds: composited over white, the choice
// EmojiDataset::load documents, so both routes give the same pixels.
class EmojiAdapter : public Dataset {
 public:
  explicit EmojiAdapter(const std::string& root) : root_(root), emoji_(EmojiDataset::open(root)) {}
  size_t size() const override { return emoji_.size(); }
  RawSample get(size_t i) const override {
    const EmojiSample& s = emoji_.at(i);
    RawSample out;
    out.image = composite_over_white(read_image(s.image_path, 4));
    out.caption = s.caption;
    out.key = fs::path(s.image_path).filename().string();
    return out;
  }
  std::string describe() const override { return fmt::format("emoji ({} images, {})", emoji_.size(), root_); }

 private:
  std::string root_;
  EmojiDataset emoji_;
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

}  // namespace

std::shared_ptr<Dataset> open_dataset(const std::string& spec) {
  ENGINE_CHECK(!spec.empty(), "dataset: empty spec (expected emoji, emoji:ROOT, folder:PATH, wds:PATTERN, a folder or a .tar)");
  if (spec == "emoji") return std::make_shared<EmojiAdapter>("third_party/emoji");
  const auto rest = [&](const std::string& prefix) {
    const std::string r = spec.substr(prefix.size());
    ENGINE_CHECK(!r.empty(), "dataset '{}': nothing after '{}'", spec, prefix);
    return r;
  };
  if (starts_with(spec, "emoji:")) return std::make_shared<EmojiAdapter>(rest("emoji:"));
  if (starts_with(spec, "folder:")) return std::make_shared<ImageFolderDataset>(rest("folder:"));
  if (starts_with(spec, "wds:")) return std::make_shared<WebDataset>(rest("wds:"));
  std::error_code ec;
  if (fs::is_directory(spec, ec)) return std::make_shared<ImageFolderDataset>(spec);
  if (ends_with(spec, ".tar") || spec.find('{') != std::string::npos) return std::make_shared<WebDataset>(spec);
  throw Error(fmt::format(
      "dataset '{}': not a folder or a .tar file, and not one of emoji, emoji:ROOT, folder:PATH, wds:PATTERN", spec));
}

}  // namespace engine::io

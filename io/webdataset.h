// webdataset.h: WebDataset tar shards as img2dataset writes them, as a map-style Dataset
// (io/dataset.h; docs/eval-data-formats.md section 4; DESIGN.md section 11).
//
// A shard holds, per sample, KEY.jpg (or .jpeg, .png, .webp, .bmp) + KEY.txt (the caption) +
// KEY.json (metadata, not used). As in webdataset's tariterators, the key of a member is its path
// up to the first '.' of the base name and the rest is its extension (lowercased); consecutive
// members with the same key form one sample.
//
// Opening indexes every shard in one streaming pass (io/tar_reader.h: headers only, plus the
// first bytes of each image member to check its signature), keeping (shard, offset, size) of each
// sample's image and caption; get(i) then reads those two members with pread and decodes the
// image. Damage never stops training:
//   - a truncated shard or a corrupt header: the samples before it are kept, the rest of the
//     shard is skipped (one line on stderr naming the shard and the offset);
//   - an image member whose bytes are not an image (no known signature) and samples without a
//     .txt caption are skipped (one line per shard with the count and the first key);
//   - WebP images are skipped: stb, the decoder of this project, cannot read WebP (one line
//     for the whole dataset, suggesting img2dataset --encode_format jpg); a sample that has a
//     JPEG or PNG besides its .webp uses that;
//   - an image that passes the signature check but fails to decode throws from get() with the
//     shard and key, and the DataLoader logs it once and substitutes another sample.
// Shards that cannot be opened at all, or a dataset with no usable sample, are errors.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/dataset.h"

namespace engine::io {

// Expand brace ranges and lists: "shard-{000..002}.tar" -> shard-000.tar, shard-001.tar,
// shard-002.tar (zero-padded to the width of the first bound when it has leading zeros), and
// "{a,b}" -> a, b. Several braces expand as a cartesian product, left to right. Throws
// engine::Error on an unbalanced brace or a bad range.
std::vector<std::string> expand_braces(const std::string& pattern);

// The shard files a pattern names: a brace pattern (every expanded path must exist), a single
// file, or a folder (its *.tar files, sorted by name). Throws engine::Error when none exist.
std::vector<std::string> resolve_shards(const std::string& pattern);

class WebDataset : public Dataset {
 public:
  // Index the shards `pattern` names (see resolve_shards). Throws engine::Error when no shard
  // can be opened or when no usable sample remains.
  explicit WebDataset(const std::string& pattern);

  size_t size() const override { return samples_.size(); }
  RawSample get(size_t i) const override;
  std::string describe() const override;

  const std::vector<std::string>& shards() const { return shards_; }
  // Key of sample i ("000000123"), as in the shard.
  const std::string& key(size_t i) const;
  // How many samples of each kind were skipped while indexing (for messages and tests).
  struct Skipped {
    uint64_t no_caption = 0, webp = 0, not_an_image = 0, no_image = 0;
    uint64_t damaged_shards = 0;  // shards cut short by truncation or a corrupt header
  };
  const Skipped& skipped() const { return skipped_; }

 private:
  struct Entry {
    uint32_t shard = 0;
    std::string key;
    uint64_t image_offset = 0, image_size = 0;
    uint64_t text_offset = 0, text_size = 0;
    std::string image_ext;  // "jpg", "png", ... for messages
  };
  void index_shard(uint32_t shard_id);

  std::string pattern_;
  std::vector<std::string> shards_;
  std::vector<Entry> samples_;
  Skipped skipped_;
  std::string first_webp_;  // "shard: key" of the first WebP-only sample, for the message
};

}  // namespace engine::io

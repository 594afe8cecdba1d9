// webdataset.cpp: see webdataset.h. Key/extension splitting follows webdataset's
// tariterators.base_plus_ext (regex ^((?:.*/|)[^.]+)[.]([^/]*)$) and group_by_keys (consecutive
// members with one key are one sample); shard discovery and brace expansion follow the
// conventions of webdataset's shard lists ("shard-{000..009}.tar").
#include "io/webdataset.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <optional>

#include "io/image_folder.h"
#include "io/tar_reader.h"
#include "tensor/error.h"

namespace engine::io {
namespace fs = std::filesystem;

namespace {

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string trim(const std::string& s) {
  const char* ws = " \t\r\n\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

bool is_image_ext(const std::string& ext) {
  return ext == "jpg" || ext == "jpeg" || ext == "png" || ext == "bmp" || ext == "webp";
}

// What the first bytes of an image member say it is.
enum class Signature { decodable, webp, unknown };

Signature classify(const std::string& head) {
  const auto starts = [&](const char* magic, size_t n) { return head.size() >= n && std::memcmp(head.data(), magic, n) == 0; };
  if (starts("\x89PNG\r\n\x1a\n", 8) || starts("\xff\xd8\xff", 3) || starts("BM", 2)) return Signature::decodable;
  if (head.size() >= 12 && starts("RIFF", 4) && std::memcmp(head.data() + 8, "WEBP", 4) == 0) return Signature::webp;
  return Signature::unknown;
}

// Members of the sample being assembled while streaming a shard.
struct Group {
  std::string key;
  struct Image {
    std::string ext;
    uint64_t offset, size;
    Signature sig;
  };
  std::vector<Image> images;
  std::optional<std::pair<uint64_t, uint64_t>> text;  // (offset, size)
};

// Counts and first keys of the samples one shard skipped, for its single log line.
struct ShardSkips {
  uint64_t no_caption = 0, not_an_image = 0, no_image = 0;
  std::string first_no_caption, first_not_an_image, first_no_image;
};

}  // namespace

std::vector<std::string> expand_braces(const std::string& pattern) {
  const size_t open = pattern.find('{');
  const size_t close_before = pattern.find('}');
  if (open == std::string::npos) {
    ENGINE_CHECK(close_before == std::string::npos, "shard pattern '{}': '}}' without '{{'", pattern);
    return {pattern};
  }
  const size_t close = pattern.find('}', open);
  ENGINE_CHECK(close != std::string::npos, "shard pattern '{}': '{{' without '}}'", pattern);
  ENGINE_CHECK(close_before >= open, "shard pattern '{}': '}}' before '{{'", pattern);
  const std::string body = pattern.substr(open + 1, close - open - 1);
  ENGINE_CHECK(body.find('{') == std::string::npos, "shard pattern '{}': nested braces are not supported", pattern);
  std::vector<std::string> items;
  const size_t dots = body.find("..");
  if (dots != std::string::npos) {
    const std::string a = body.substr(0, dots), b = body.substr(dots + 2);
    ENGINE_CHECK(all_digits(a) && all_digits(b) && a.size() <= 18 && b.size() <= 18,
                 "shard pattern '{}': bad range '{{{}}}' (expected {{FIRST..LAST}} with decimal bounds)", pattern, body);
    const int64_t lo = std::stoll(a), hi = std::stoll(b);
    const bool pad = (a.size() > 1 && a[0] == '0') || (b.size() > 1 && b[0] == '0');
    const size_t width = pad ? std::max(a.size(), b.size()) : 0;
    ENGINE_CHECK(std::llabs(hi - lo) < 10000000, "shard pattern '{}': range '{{{}}}' is too large", pattern, body);
    const int64_t step = hi >= lo ? 1 : -1;
    for (int64_t v = lo;; v += step) {
      std::string s = std::to_string(v);
      if (s.size() < width) s.insert(0, width - s.size(), '0');
      items.push_back(s);
      if (v == hi) break;
    }
  } else {
    ENGINE_CHECK(body.find(',') != std::string::npos,
                 "shard pattern '{}': '{{{}}}' is neither a range {{A..B}} nor a list {{a,b}}", pattern, body);
    size_t at = 0;
    for (;;) {
      const size_t comma = body.find(',', at);
      items.push_back(body.substr(at, comma == std::string::npos ? std::string::npos : comma - at));
      if (comma == std::string::npos) break;
      at = comma + 1;
    }
  }
  const std::string head = pattern.substr(0, open);
  std::vector<std::string> out;
  // The first brace varies slowest, as in the shell.
  const std::vector<std::string> tails = expand_braces(pattern.substr(close + 1));
  for (const std::string& item : items)
    for (const std::string& tail : tails) out.push_back(head + item + tail);
  return out;
}

std::vector<std::string> resolve_shards(const std::string& pattern) {
  std::error_code ec;
  std::vector<std::string> shards;
  if (pattern.find('{') != std::string::npos) {
    shards = expand_braces(pattern);
    for (const std::string& s : shards)
      ENGINE_CHECK(fs::is_regular_file(s, ec), "wds '{}': shard '{}' does not exist", pattern, s);
  } else if (fs::is_directory(pattern, ec)) {
    for (const auto& e : fs::directory_iterator(pattern, ec))
      if (e.is_regular_file(ec) && lower(e.path().extension().string()) == ".tar") shards.push_back(e.path().string());
    std::sort(shards.begin(), shards.end());
    ENGINE_CHECK(!shards.empty(), "wds '{}': the folder holds no .tar shards", pattern);
  } else {
    ENGINE_CHECK(fs::is_regular_file(pattern, ec), "wds '{}': no such shard file or folder", pattern);
    shards.push_back(pattern);
  }
  return shards;
}

WebDataset::WebDataset(const std::string& pattern) : pattern_(pattern) {
  shards_ = resolve_shards(pattern);
  ENGINE_CHECK(shards_.size() < (1ull << 32), "wds '{}': too many shards ({})", pattern, shards_.size());
  for (size_t s = 0; s < shards_.size(); ++s) index_shard(uint32_t(s));
  if (skipped_.webp > 0)
    std::cerr << fmt::format(
        "wds '{}': skipped {} samples whose only image is WebP (first: {}): stb, this project's image decoder, "
        "cannot read WebP; re-create the shards with img2dataset --encode_format jpg (or png)\n",
        pattern_, skipped_.webp, first_webp_);
  ENGINE_CHECK(!samples_.empty(),
               "wds '{}': no usable samples in {} shard(s) (skipped: {} without .txt, {} WebP-only, {} not an "
               "image, {} without an image; {} damaged shard(s))",
               pattern, shards_.size(), skipped_.no_caption, skipped_.webp, skipped_.not_an_image, skipped_.no_image,
               skipped_.damaged_shards);
}

void WebDataset::index_shard(uint32_t shard_id) {
  const std::string& path = shards_[shard_id];
  TarReader reader(path);  // a shard that cannot be opened at all is an error, not damage
  ShardSkips skips;
  Group group;
  bool in_group = false;

  const auto note = [](uint64_t& count, std::string& first, const std::string& key) {
    if (count++ == 0) first = key;
  };
  const auto flush = [&]() {
    if (!in_group) return;
    in_group = false;
    const Group::Image* chosen = nullptr;
    bool webp = false;
    for (const Group::Image& im : group.images) {
      if (im.sig == Signature::decodable && !chosen) chosen = &im;
      if (im.sig == Signature::webp) webp = true;
    }
    if (!chosen) {
      if (webp) {
        if (skipped_.webp++ == 0) first_webp_ = fmt::format("{}: {}", path, group.key);
      } else if (!group.images.empty()) {
        note(skips.not_an_image, skips.first_not_an_image, group.key);
      } else {
        note(skips.no_image, skips.first_no_image, group.key);
      }
      return;
    }
    if (!group.text) {
      note(skips.no_caption, skips.first_no_caption, group.key);
      return;
    }
    Entry e;
    e.shard = shard_id;
    e.key = group.key;
    e.image_offset = chosen->offset;
    e.image_size = chosen->size;
    e.image_ext = chosen->ext;
    e.text_offset = group.text->first;
    e.text_size = group.text->second;
    samples_.push_back(std::move(e));
  };

  try {
    TarMember m;
    while (reader.next(m)) {
      if (!m.is_file()) continue;
      const size_t base = m.name.rfind('/') == std::string::npos ? 0 : m.name.rfind('/') + 1;
      const size_t dot = m.name.find('.', base);
      if (dot == std::string::npos || dot == base) continue;  // no KEY.EXT form: not part of a sample
      const std::string key = m.name.substr(0, dot);
      const std::string ext = lower(m.name.substr(dot + 1));
      if (!in_group || key != group.key) {
        flush();
        group = Group{};
        group.key = key;
        in_group = true;
      }
      if (is_image_ext(ext)) {
        const Signature sig = m.size == 0 ? Signature::unknown : classify(reader.read_data(16));
        group.images.push_back({ext, m.data_offset, m.size, sig});
      } else if (ext == "txt") {
        group.text = std::make_pair(m.data_offset, m.size);
      }
    }
  } catch (const Error& e) {
    // Everything returned before the damage is complete (the reader checks each member's data
    // fits in the file), so the samples so far, the one in progress included, are kept.
    ++skipped_.damaged_shards;
    std::cerr << fmt::format("wds: shard '{}' is damaged, skipping the rest of it ({} samples kept so far): {}\n",
                             path, samples_.size(), e.what());
  }
  flush();

  std::string line;
  const auto add = [&](uint64_t n, const std::string& first, const char* what) {
    if (n == 0) return;
    line += fmt::format("{}{} {} (first: {})", line.empty() ? "" : ", ", n, what, first);
  };
  add(skips.no_caption, skips.first_no_caption, "without a .txt caption");
  add(skips.not_an_image, skips.first_not_an_image, "whose image member is not an image (garbage bytes)");
  add(skips.no_image, skips.first_no_image, "without an image member");
  if (!line.empty()) std::cerr << fmt::format("wds: shard '{}': skipped {}\n", path, line);
  skipped_.no_caption += skips.no_caption;
  skipped_.not_an_image += skips.not_an_image;
  skipped_.no_image += skips.no_image;
}

const std::string& WebDataset::key(size_t i) const {
  ENGINE_CHECK(i < samples_.size(), "wds '{}': index {} out of range (size {})", pattern_, i, samples_.size());
  return samples_[i].key;
}

RawSample WebDataset::get(size_t i) const {
  ENGINE_CHECK(i < samples_.size(), "wds '{}': index {} out of range (size {})", pattern_, i, samples_.size());
  const Entry& e = samples_[i];
  const std::string& shard = shards_[e.shard];
  const std::string member = e.key + "." + e.image_ext;
  const std::string bytes = read_file_range(shard, e.image_offset, e.image_size, "member " + member);
  RawSample s;
  s.key = e.key;
  s.image = decode_rgb(bytes.data(), bytes.size(), shard + ": " + member);
  s.caption = trim(read_file_range(shard, e.text_offset, e.text_size, "member " + e.key + ".txt"));
  return s;
}

std::string WebDataset::describe() const {
  return fmt::format("wds ({} samples in {} shards, {})", samples_.size(), shards_.size(), pattern_);
}

}  // namespace engine::io

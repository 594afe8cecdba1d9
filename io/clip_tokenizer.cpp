// clip_tokenizer.cpp: the CLIP byte-level BPE tokenizer: vocabulary loading (OpenAI .txt.gz via
// zlib, Hugging Face vocab.json + merges.txt), the BPE merge loop with a word cache, and the
// SOT/EOT/padding layout. Mirrors OpenAI CLIP's simple_tokenizer.py step by step; see
// clip_tokenizer.h for the algorithm and clip_text.h for cleaning and the word split.
#include "io/clip_tokenizer.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

#include <nlohmann/json.hpp>

#include "io/clip_text.h"
#include "tensor/error.h"

namespace engine::io {
namespace {

constexpr std::string_view kStartOfText = "<|startoftext|>";
constexpr std::string_view kEndOfText = "<|endoftext|>";
constexpr std::string_view kWordEnd = "</w>";
// Word cache bound: OpenAI's is unbounded, but a training run sees millions of distinct words.
constexpr size_t kMaxCacheEntries = size_t{1} << 18;

// GPT-2's bytes_to_unicode(): printable Latin-1 bytes map to themselves, the other 68 bytes
// (controls, space, 127-160, the soft hyphen 173) to U+0100 + n in byte order, so that every byte
// is a visible, non-space character. `order` is the order of the dict: bytes 33-126, 161-172,
// 174-255, then the remapped ones; the first 256 ids follow it.
struct ByteTable {
  std::array<char32_t, 256> to_unicode{};
  std::array<uint8_t, 256> order{};
};

const ByteTable& byte_table() {
  static const ByteTable table = [] {
    ByteTable t;
    std::array<bool, 256> printable{};
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      printable[b] = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      if (printable[b]) {
        t.order[n++] = static_cast<uint8_t>(b);
        t.to_unicode[b] = static_cast<char32_t>(b);
      }
    }
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      if (printable[b]) continue;
      t.order[n++] = static_cast<uint8_t>(b);
      t.to_unicode[b] = static_cast<char32_t>(256 + extra++);
    }
    return t;
  }();
  return table;
}

// Code point of a byte symbol -> the byte (-1 for anything else); byte symbols are < U+0144.
int unicode_to_byte(char32_t cp) {
  static const std::array<int, 512> table = [] {
    std::array<int, 512> t;
    t.fill(-1);
    const ByteTable& bt = byte_table();
    for (int b = 0; b < 256; ++b) t[bt.to_unicode[b]] = b;
    return t;
  }();
  return cp < table.size() ? table[cp] : -1;
}

std::string byte_symbol(uint8_t b) {
  std::string s;
  append_utf8(byte_table().to_unicode[b], s);
  return s;
}

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// The whole (decompressed) file. gzread passes non-gzip input through unchanged, so an
// uncompressed copy of the vocabulary also loads.
std::string read_gzip_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw Error(fmt::format("clip tokenizer: vocabulary file '{}' not found", path));
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f)
    throw Error(fmt::format("clip tokenizer: cannot open vocabulary file '{}': {}", path,
                            std::strerror(errno)));
  gzbuffer(f, 1 << 17);
  std::string out;
  std::vector<char> buf(1 << 17);
  for (;;) {
    const int n = gzread(f, buf.data(), static_cast<unsigned>(buf.size()));
    if (n <= 0) break;
    out.append(buf.data(), static_cast<size_t>(n));
  }
  // A corrupt stream fails gzread; a truncated one only leaves Z_BUF_ERROR ("unexpected end of
  // file") behind, which gzclose reports.
  int errnum = Z_OK;
  std::string message = gzerror(f, &errnum);
  const int close_status = gzclose(f);
  if (errnum == Z_OK && close_status != Z_OK) {
    errnum = close_status;
    message = close_status == Z_BUF_ERROR ? "unexpected end of file" : "gzclose failed";
  }
  // zlib prefixes its message with the path, which ours already names.
  if (message.starts_with(path + ": ")) message.erase(0, path.size() + 2);
  if (errnum != Z_OK)
    throw Error(fmt::format("clip tokenizer: corrupt vocabulary file '{}' (gzip: {})", path,
                            message));
  return out;
}

std::string read_text_file(const std::string& path, const char* what) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw Error(fmt::format("clip tokenizer: {} file '{}' not found", what, path));
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error(fmt::format("clip tokenizer: cannot open {} file '{}': {}", what, path,
                            std::strerror(errno)));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string_view> split_lines(std::string_view text) {
  // Python's str.split('\n'): n newlines give n + 1 pieces.
  std::vector<std::string_view> lines;
  size_t start = 0;
  for (;;) {
    const size_t nl = text.find('\n', start);
    if (nl == std::string_view::npos) {
      lines.push_back(text.substr(start));
      return lines;
    }
    lines.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
}

bool is_ascii_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

// Python's tuple(merge.split()), which must give a pair. Vocabulary symbols never contain
// whitespace (bytes_to_unicode avoids it), so ASCII whitespace is the only separator.
std::pair<std::string, std::string> parse_merge(std::string_view line, const std::string& path,
                                                size_t line_number) {
  std::vector<std::string_view> parts;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && is_ascii_space(line[i])) ++i;
    size_t j = i;
    while (j < line.size() && !is_ascii_space(line[j])) ++j;
    if (j > i) parts.push_back(line.substr(i, j - i));
    i = j;
  }
  if (parts.size() != 2)
    throw Error(fmt::format("clip tokenizer: corrupt merges in '{}': line {} is '{}', expected two "
                            "symbols separated by a space",
                            path, line_number, line.substr(0, 80)));
  return {std::string(parts[0]), std::string(parts[1])};
}

}  // namespace

struct ClipTokenizer::Cache {
  std::mutex mutex;
  std::unordered_map<std::string, std::vector<int32_t>> words;
};

ClipTokenizer::ClipTokenizer(const std::string& bpe_vocab_path) : cache_(std::make_unique<Cache>()) {
  const std::string text = read_gzip_file(bpe_vocab_path);
  const std::vector<std::string_view> lines = split_lines(text);
  // OpenAI: merges = lines[1 : 49152 - 256 - 2 + 1]. The first line is a "#version: 0.2" header
  // (in the published file it is preceded by the gzip member name).
  if (lines[0].find("#version") == std::string_view::npos)
    throw Error(fmt::format("clip tokenizer: '{}' is not a CLIP BPE vocabulary: its first line "
                            "has no '#version' header",
                            bpe_vocab_path));
  if (lines.size() < 1 + static_cast<size_t>(kNumMerges))
    throw Error(fmt::format("clip tokenizer: corrupt vocabulary file '{}': {} lines, expected at "
                            "least {} (1 header + {} merges)",
                            bpe_vocab_path, lines.size(), 1 + kNumMerges, kNumMerges));
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(kNumMerges);
  for (size_t i = 1; i <= static_cast<size_t>(kNumMerges); ++i)
    merges.push_back(parse_merge(lines[i], bpe_vocab_path, i + 1));

  // The vocabulary, in id order: bytes, bytes + "</w>", merges, the two special tokens.
  const ByteTable& bt = byte_table();
  tokens_.reserve(512 + merges.size() + 2);
  for (uint8_t b : bt.order) tokens_.push_back(byte_symbol(b));
  for (uint8_t b : bt.order) tokens_.push_back(byte_symbol(b) + std::string(kWordEnd));
  for (const auto& [left, right] : merges) tokens_.push_back(left + right);
  tokens_.emplace_back(kStartOfText);
  tokens_.emplace_back(kEndOfText);
  // dict(zip(vocab, range(len(vocab)))): a repeated string keeps its last id.
  encoder_.reserve(tokens_.size());
  for (size_t id = 0; id < tokens_.size(); ++id) encoder_[tokens_[id]] = static_cast<int32_t>(id);

  index_merges(bpe_vocab_path, merges);
  finish_setup(bpe_vocab_path);
}

ClipTokenizer::ClipTokenizer(const std::string& vocab_json_path, const std::string& merges_txt_path)
    : cache_(std::make_unique<Cache>()) {
  const std::string vocab_text = read_text_file(vocab_json_path, "vocab.json");
  nlohmann::json vocab;
  try {
    vocab = nlohmann::json::parse(vocab_text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("clip tokenizer: corrupt vocab.json '{}': {}", vocab_json_path, e.what()));
  }
  if (!vocab.is_object() || vocab.empty())
    throw Error(fmt::format("clip tokenizer: corrupt vocab.json '{}': expected a non-empty object "
                            "of token -> id",
                            vocab_json_path));
  // Ids must be exactly 0..N-1 so that every id decodes.
  tokens_.assign(vocab.size(), std::string());
  std::vector<bool> seen(vocab.size(), false);
  for (const auto& [token, value] : vocab.items()) {
    if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
        value.get<int64_t>() >= static_cast<int64_t>(vocab.size()) || seen[value.get<size_t>()])
      throw Error(fmt::format("clip tokenizer: corrupt vocab.json '{}': token '{}' has id {}; ids "
                              "must be 0..{} without repeats",
                              vocab_json_path, token, value.dump(), vocab.size() - 1));
    const auto id = value.get<size_t>();
    seen[id] = true;
    tokens_[id] = token;
    encoder_[token] = static_cast<int32_t>(id);
  }

  // Hugging Face CLIPTokenizer: merges = read().strip().split("\n")[1 : 49152 - 256 - 2 + 1].
  const std::string merges_text = read_text_file(merges_txt_path, "merges.txt");
  std::string_view stripped(merges_text);
  while (!stripped.empty() && is_ascii_space(stripped.front())) stripped.remove_prefix(1);
  while (!stripped.empty() && is_ascii_space(stripped.back())) stripped.remove_suffix(1);
  const std::vector<std::string_view> lines = split_lines(stripped);
  if (lines[0].find("#version") == std::string_view::npos)
    throw Error(fmt::format("clip tokenizer: '{}' is not a BPE merges.txt: its first line has no "
                            "'#version' header",
                            merges_txt_path));
  std::vector<std::pair<std::string, std::string>> merges;
  const size_t count = std::min(lines.size() - 1, static_cast<size_t>(kNumMerges));
  merges.reserve(count);
  for (size_t i = 1; i <= count; ++i) merges.push_back(parse_merge(lines[i], merges_txt_path, i + 1));

  index_merges(merges_txt_path, merges);
  finish_setup(vocab_json_path);
}

ClipTokenizer::~ClipTokenizer() = default;
ClipTokenizer::ClipTokenizer(ClipTokenizer&&) noexcept = default;
ClipTokenizer& ClipTokenizer::operator=(ClipTokenizer&&) noexcept = default;

void ClipTokenizer::index_merges(const std::string& source,
                                 const std::vector<std::pair<std::string, std::string>>& merges) {
  // bpe_ranks = dict(zip(merges, range(len(merges)))): a repeated pair keeps its last rank. A
  // merge whose halves are not in the vocabulary can never apply (every symbol is a vocabulary
  // entry) and is skipped; one whose result is missing would fail in Python at encode time, so
  // such a file is rejected here.
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    const int32_t l = token_id(left), r = token_id(right);
    if (l < 0 || r < 0) continue;
    const int32_t merged = token_id(left + right);
    if (merged < 0)
      throw Error(fmt::format("clip tokenizer: corrupt merges in '{}': merge {} ('{} {}') makes a "
                              "token that is not in the vocabulary",
                              source, rank + 1, left, right));
    merges_[pair_key(l, r)] = {static_cast<int32_t>(rank), merged};
  }
}

void ClipTokenizer::finish_setup(const std::string& source) {
  for (int b = 0; b < 256; ++b) {
    const std::string sym = byte_symbol(static_cast<uint8_t>(b));
    byte_ids_[b] = token_id(sym);
    byte_end_ids_[b] = token_id(sym + std::string(kWordEnd));
    if (byte_ids_[b] < 0 || byte_end_ids_[b] < 0)
      throw Error(fmt::format("clip tokenizer: corrupt vocabulary '{}': no token for byte {} ('{}' "
                              "and '{}</w>')",
                              source, b, sym, sym));
  }
  sot_id_ = token_id(kStartOfText);
  eot_id_ = token_id(kEndOfText);
  if (sot_id_ < 0 || eot_id_ < 0)
    throw Error(fmt::format("clip tokenizer: corrupt vocabulary '{}': missing {} or {}", source,
                            kStartOfText, kEndOfText));
  // What each id decodes to: its characters mapped back through bytes_to_unicode.
  token_bytes_.resize(tokens_.size());
  for (size_t id = 0; id < tokens_.size(); ++id) {
    for (char32_t cp : utf8_to_u32(tokens_[id])) {
      const int b = unicode_to_byte(cp);
      if (b < 0)
        throw Error(fmt::format("clip tokenizer: corrupt vocabulary '{}': token {} ('{}') is not "
                                "made of byte characters",
                                source, id, tokens_[id]));
      token_bytes_[id].push_back(static_cast<char>(b));
    }
  }
}

const std::string& ClipTokenizer::token(int32_t id) const {
  if (id < 0 || id >= static_cast<int32_t>(tokens_.size()))
    throw Error(fmt::format("clip tokenizer: token id {} out of range [0, {})", id, tokens_.size()));
  return tokens_[static_cast<size_t>(id)];
}

int32_t ClipTokenizer::token_id(std::string_view token) const {
  auto it = encoder_.find(std::string(token));
  return it == encoder_.end() ? -1 : it->second;
}

std::vector<int32_t> ClipTokenizer::bpe(std::string_view word) const {
  // Symbols start as the word's bytes, the last one carrying "</w>". Each round finds the
  // adjacent pair with the lowest rank and merges all its occurrences left to right without
  // overlap (simple_tokenizer.py's bpe()), until no pair has a rank or one symbol is left.
  std::vector<int32_t> symbols(word.size());
  for (size_t i = 0; i < word.size(); ++i) symbols[i] = byte_ids_[static_cast<uint8_t>(word[i])];
  symbols.back() = byte_end_ids_[static_cast<uint8_t>(word.back())];
  while (symbols.size() > 1) {
    int32_t best_rank = INT32_MAX, merged = -1;
    int32_t first = 0, second = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      auto it = merges_.find(pair_key(symbols[i], symbols[i + 1]));
      if (it != merges_.end() && it->second.first < best_rank) {
        best_rank = it->second.first;
        merged = it->second.second;
        first = symbols[i];
        second = symbols[i + 1];
      }
    }
    if (merged < 0) break;
    size_t out = 0;
    for (size_t i = 0; i < symbols.size();) {
      if (i + 1 < symbols.size() && symbols[i] == first && symbols[i + 1] == second) {
        symbols[out++] = merged;
        i += 2;
      } else {
        symbols[out++] = symbols[i++];
      }
    }
    symbols.resize(out);
  }
  return symbols;
}

std::vector<int32_t> ClipTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  for (const std::string& word : split_words(clean_caption(text))) {
    // The special tokens are pre-seeded in OpenAI's cache, so they map to their own ids.
    if (word == kStartOfText) {
      ids.push_back(sot_id_);
      continue;
    }
    if (word == kEndOfText) {
      ids.push_back(eot_id_);
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(cache_->mutex);
      auto it = cache_->words.find(word);
      if (it != cache_->words.end()) {
        ids.insert(ids.end(), it->second.begin(), it->second.end());
        continue;
      }
    }
    std::vector<int32_t> word_ids = bpe(word);
    ids.insert(ids.end(), word_ids.begin(), word_ids.end());
    std::lock_guard<std::mutex> lock(cache_->mutex);
    if (cache_->words.size() >= kMaxCacheEntries) cache_->words.clear();
    cache_->words.emplace(word, std::move(word_ids));
  }
  return ids;
}

TokenBatch ClipTokenizer::tokenize(std::span<const std::string> texts, int context_length,
                                   bool truncate) const {
  if (context_length < 1)
    throw Error(fmt::format("clip tokenizer: context_length must be positive, got {}", context_length));
  TokenBatch batch;
  batch.rows = static_cast<int64_t>(texts.size());
  batch.cols = context_length;
  batch.ids.assign(texts.size() * static_cast<size_t>(context_length), 0);  // pad with 0
  for (size_t r = 0; r < texts.size(); ++r) {
    const std::vector<int32_t> ids = encode(texts[r]);
    const size_t len = ids.size() + 2;
    if (len > static_cast<size_t>(context_length) && !truncate) {
      const std::string_view excerpt = std::string_view(texts[r]).substr(0, 60);
      throw Error(fmt::format("clip tokenizer: caption {} ('{}{}') has {} tokens, more than the "
                              "context length {}; tokenize with truncate=true to cut it",
                              r, excerpt, texts[r].size() > excerpt.size() ? "..." : "", len,
                              context_length));
    }
    int32_t* row = batch.ids.data() + r * static_cast<size_t>(context_length);
    // [SOT] + ids + [EOT]; when too long, open_clip keeps the first context_length tokens and
    // overwrites the last with EOT.
    const size_t kept = std::min(len, static_cast<size_t>(context_length));
    row[0] = sot_id_;
    for (size_t i = 1; i + 1 < kept; ++i) row[i] = ids[i - 1];
    row[kept - 1] = eot_id_;
  }
  return batch;
}

TokenBatch ClipTokenizer::tokenize(std::string_view text, int context_length, bool truncate) const {
  const std::string one(text);
  return tokenize(std::span<const std::string>(&one, 1), context_length, truncate);
}

std::string ClipTokenizer::decode(std::span<const int32_t> ids) const {
  std::string bytes;
  for (int32_t id : ids) {
    if (id < 0 || id >= static_cast<int32_t>(token_bytes_.size()))
      throw Error(fmt::format("clip tokenizer: cannot decode token id {}: out of range [0, {})", id,
                              token_bytes_.size()));
    bytes += token_bytes_[static_cast<size_t>(id)];
  }
  // bytearray(...).decode('utf-8', errors="replace").replace('</w>', ' ')
  const std::string text = utf8_repair(bytes);
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const size_t pos = text.find(kWordEnd, i);
    if (pos == std::string::npos) {
      out.append(text, i, std::string::npos);
      break;
    }
    out.append(text, i, pos - i);
    out.push_back(' ');
    i = pos + kWordEnd.size();
  }
  return out;
}

}  // namespace engine::io

// clip_tokenizer.h: the CLIP byte-level BPE tokenizer (OpenAI CLIP simple_tokenizer.py, as used
// by open_clip and Aurora), bit-exact with the Python original up to ftfy (see io/clip_text.h).
//
// Vocabulary sources:
//   * OpenAI's bpe_simple_vocab_16e6.txt.gz: the merges after the first line, of which only the
//     first 49152-256-2 = 48,894 are used. The ids are defined by construction: the 256 byte
//     characters of bytes_to_unicode() (bytes 33-126, 161-172, 174-255, then the other 68 bytes
//     as U+0100...), the same 256 with "</w>" appended, the merges concatenated, then
//     <|startoftext|> = 49406 and <|endoftext|> = 49407.
//   * Hugging Face vocab.json (token -> id) + merges.txt ("#version" line, then the merges).
//
// Algorithm (Sennrich et al. 2016 BPE over bytes, GPT-2 style): clean and split the caption
// (clip_text.h); map each word's UTF-8 bytes to their byte symbols, the last one with "</w>";
// repeatedly merge every occurrence of the adjacent pair with the lowest merge rank; emit the ids
// of the final symbols. Symbols are held as vocabulary ids, not strings, so a merge step is a
// hash lookup per adjacent pair. Results are cached per word.
//
// tokenize() lays out [SOT] + ids + [EOT] in rows of context_length (77), zero padded like
// clip.tokenize / open_clip; too-long rows are cut to context_length with EOT forced last
// (open_clip), or rejected when truncate is false (clip.tokenize).
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace engine::io {

// Token ids of several captions, row-major [rows, cols].
struct TokenBatch {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<int32_t> ids;

  int32_t at(int64_t r, int64_t c) const { return ids[static_cast<size_t>(r * cols + c)]; }
  std::span<const int32_t> row(int64_t r) const {
    return std::span<const int32_t>(ids).subspan(static_cast<size_t>(r * cols),
                                                 static_cast<size_t>(cols));
  }
};

class ClipTokenizer {
 public:
  static constexpr int kContextLength = 77;
  // Merges used by OpenAI and Hugging Face's slow tokenizer: 49152 - 256 - 2.
  static constexpr int kNumMerges = 49152 - 256 - 2;

  // OpenAI bpe_simple_vocab_16e6.txt.gz (gzip, or the same text uncompressed).
  explicit ClipTokenizer(const std::string& bpe_vocab_path);
  // Hugging Face vocab.json + merges.txt.
  ClipTokenizer(const std::string& vocab_json_path, const std::string& merges_txt_path);
  ~ClipTokenizer();
  ClipTokenizer(ClipTokenizer&&) noexcept;
  ClipTokenizer& operator=(ClipTokenizer&&) noexcept;

  // Caption -> BPE ids, without SOT/EOT. Thread-safe.
  std::vector<int32_t> encode(std::string_view text) const;
  // Captions -> [texts.size(), context_length] ids: SOT, ids, EOT, zeros. Thread-safe.
  TokenBatch tokenize(std::span<const std::string> texts, int context_length = kContextLength,
                      bool truncate = true) const;
  TokenBatch tokenize(std::string_view text, int context_length = kContextLength,
                      bool truncate = true) const;
  // OpenAI's decode: concatenated token bytes, invalid UTF-8 replaced by U+FFFD, "</w>" -> " ".
  // Padding (0 = "!") and SOT/EOT are decoded like any token, as in Python.
  std::string decode(std::span<const int32_t> ids) const;

  int32_t sot_id() const { return sot_id_; }
  int32_t eot_id() const { return eot_id_; }
  int64_t vocab_size() const { return static_cast<int64_t>(tokens_.size()); }
  // The vocabulary string of an id (byte characters, "</w>" marks a word end).
  const std::string& token(int32_t id) const;
  // The id of a vocabulary string, or -1.
  int32_t token_id(std::string_view token) const;

 private:
  struct Cache;

  void index_merges(const std::string& source,
                    const std::vector<std::pair<std::string, std::string>>& merges);
  void finish_setup(const std::string& source);
  std::vector<int32_t> bpe(std::string_view word) const;

  std::vector<std::string> tokens_;                   // id -> vocabulary string
  std::unordered_map<std::string, int32_t> encoder_;  // vocabulary string -> id
  std::vector<std::string> token_bytes_;              // id -> raw bytes it decodes to
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (left, right) -> rank, id
  int32_t byte_ids_[256] = {};      // byte -> id of its symbol
  int32_t byte_end_ids_[256] = {};  // byte -> id of its symbol + "</w>"
  int32_t sot_id_ = -1;
  int32_t eot_id_ = -1;
  std::unique_ptr<Cache> cache_;
};

}  // namespace engine::io

// test_tokenizer.cpp: the CLIP BPE tokenizer (io/clip_tokenizer.h, io/clip_text.h) against the
// public CLIP ids and against tests/parity/ref_tokenizer.py, an independent Python implementation
// of OpenAI's simple_tokenizer.py that reads the same vocabulary file.
//
// The vocabulary is OpenAI's bpe_simple_vocab_16e6.txt.gz from ../shared/data/clip/ (or
// $CLIP_BPE_VOCAB). It is never copied into the repository. A missing vocabulary or Python is a
// test failure with a message saying so, never a silent pass.
#include <doctest/doctest.h>

#include <zlib.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include "io/clip_text.h"
#include "io/clip_tokenizer.h"
#include "io/clip_unicode_tables.h"
#include "tensor/error.h"

using engine::io::ClipTokenizer;
using engine::io::TokenBatch;
namespace fs = std::filesystem;

namespace {

std::string vocab_path() {
  if (const char* env = std::getenv("CLIP_BPE_VOCAB")) return env;
  return std::string(ENGINE_SOURCE_DIR) + "/../shared/data/clip/bpe_simple_vocab_16e6.txt.gz";
}

// A scratch directory for this process, removed at exit.
const fs::path& scratch_dir() {
  static const fs::path dir = [] {
    fs::path d = fs::temp_directory_path() / ("engine_test_tokenizer_" + std::to_string(getpid()));
    fs::create_directories(d);
    return d;
  }();
  static const struct Cleanup {
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } cleanup;
  return dir;
}

const ClipTokenizer& openai_tokenizer() {
  static std::unique_ptr<ClipTokenizer> tok;
  if (!tok) {
    const std::string path = vocab_path();
    INFO("CLIP vocabulary file missing: expected " << path
                                                   << " (set CLIP_BPE_VOCAB to its location)");
    REQUIRE(fs::exists(path));
    tok = std::make_unique<ClipTokenizer>(path);
  }
  return *tok;
}

// Runs the Python reference once; it writes ref_tokenizer.json, vocab.json and merges.txt.
const nlohmann::json& reference() {
  static nlohmann::json ref;
  if (ref.is_null()) {
    const std::string script = std::string(ENGINE_SOURCE_DIR) + "/tests/parity/ref_tokenizer.py";
    INFO("Python interpreter for the parity reference missing: " << ENGINE_PYTHON);
    REQUIRE(fs::exists(ENGINE_PYTHON));
    REQUIRE(fs::exists(script));
    const std::string vocab = vocab_path();
    INFO("CLIP vocabulary file missing: " << vocab);
    REQUIRE(fs::exists(vocab));
    const std::string cmd = std::string(ENGINE_PYTHON) + " " + script + " '" + vocab + "' '" +
                            scratch_dir().string() + "' 500";
    const int rc = std::system(cmd.c_str());
    INFO("reference command failed: " << cmd);
    REQUIRE(rc == 0);
    std::ifstream in(scratch_dir() / "ref_tokenizer.json");
    REQUIRE(in.good());
    ref = nlohmann::json::parse(in);
  }
  return ref;
}

std::vector<int32_t> to_ids(const nlohmann::json& j) { return j.get<std::vector<int32_t>>(); }

std::string show(const std::vector<int32_t>& ids) {
  std::ostringstream ss;
  ss << "[";
  for (size_t i = 0; i < ids.size(); ++i) ss << (i ? ", " : "") << ids[i];
  ss << "]";
  return ss.str();
}

std::vector<int32_t> row_of(const TokenBatch& b, int64_t r) {
  auto row = b.row(r);
  return std::vector<int32_t>(row.begin(), row.end());
}

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_gzip(const fs::path& path, const std::string& text) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, text.data(), static_cast<unsigned>(text.size())) == static_cast<int>(text.size()));
  REQUIRE(gzclose(f) == Z_OK);
}

// The engine::Error message of a constructor call, or "" when it does not throw.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const engine::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("vocabulary layout and the public CLIP ids") {
  const ClipTokenizer& tok = openai_tokenizer();
  CHECK(tok.vocab_size() == 49408);
  CHECK(tok.sot_id() == 49406);
  CHECK(tok.eot_id() == 49407);
  CHECK(tok.token(0) == "!");      // bytes_to_unicode order starts at byte 33
  CHECK(tok.token(256) == "!</w>");
  CHECK(tok.token(255) == "\xC5\x83");  // U+0143: the last remapped byte (173, soft hyphen)
  CHECK(tok.token_id("<|endoftext|>") == 49407);

  // Well-known ids of the public CLIP tokenizer.
  const std::vector<int32_t> cat = {49406, 320, 1125, 539, 320, 2368, 49407};
  TokenBatch b = tok.tokenize("a photo of a cat");
  REQUIRE(b.rows == 1);
  REQUIRE(b.cols == 77);
  std::vector<int32_t> row = row_of(b, 0);
  CHECK(std::vector<int32_t>(row.begin(), row.begin() + 7) == cat);
  for (size_t i = 7; i < row.size(); ++i) CHECK(row[i] == 0);
  CHECK(tok.encode("a photo of a cat") == std::vector<int32_t>(cat.begin() + 1, cat.end() - 1));
  CHECK(tok.encode("A   Photo\tof a CAT ") == tok.encode("a photo of a cat"));
  CHECK(tok.decode(tok.encode("a photo of a cat")) == "a photo of a cat ");
}

TEST_CASE("cleaning and split pieces") {
  using engine::io::clean_caption_utf8;
  using engine::io::split_words;
  using engine::io::utf8_to_u32;
  CHECK(clean_caption_utf8("  Fish &amp;amp; Chips\t\n ") == "fish & chips");
  CHECK(clean_caption_utf8("&lt;b&gt; &#39;x&#39; &#x1F34E; &notit; &ampx") == "<b> 'x' \xF0\x9F\x8D\x8E \xC2\xACit; &x");
  CHECK(clean_caption_utf8("ΟΔΟΣ Σ") == "οδος σ");  // final sigma only after a cased letter
  const std::vector<std::string> words = split_words(utf8_to_u32("it's 1234 café!! <|endoftext|>"));
  CHECK(words == std::vector<std::string>{"it", "'s", "1", "2", "3", "4", "café", "!!", "<|endoftext|>"});
  // Invalid UTF-8 never throws: one U+FFFD per maximal invalid subsequence.
  CHECK(engine::io::utf8_repair("a\xE2\x82" "b\xFF") == "a\xEF\xBF\xBD" "b\xEF\xBF\xBD");
}

TEST_CASE("parity with the independent Python reference") {
  const ClipTokenizer& tok = openai_tokenizer();
  const nlohmann::json& ref = reference();
  MESSAGE("reference split: " << ref["split"].get<std::string>() << ", Unicode "
                              << ref["unicode_version"].get<std::string>() << ", "
                              << ref["cases"].size() << " captions");
  if (ref["unicode_version"].get<std::string>() != engine::io::clip_tables::kUnicodeVersion)
    MESSAGE("the reference Python's Unicode differs from io/clip_unicode_tables.cpp ("
            << engine::io::clip_tables::kUnicodeVersion
            << "): if captions below differ, regenerate it with scripts/gen_clip_unicode_tables.py");
  CHECK(ref["vocab_size"].get<int64_t>() == tok.vocab_size());
  REQUIRE(ref["cases"].size() > 500);
  int failures = 0;
  for (const auto& c : ref["cases"]) {
    const std::string text = c["text"].get<std::string>();
    INFO("caption: " << nlohmann::json(text).dump());
    const std::vector<int32_t> want = to_ids(c["ids"]);
    const std::vector<int32_t> got = tok.encode(text);
    const std::string clean = engine::io::clean_caption_utf8(text);
    const auto words = engine::io::split_words(engine::io::utf8_to_u32(clean));
    CHECK(clean == c["clean"].get<std::string>());
    CHECK(words == c["words"].get<std::vector<std::string>>());
    INFO("want " << show(want) << "\n got " << show(got));
    CHECK(got == want);
    CHECK(row_of(tok.tokenize(text), 0) == to_ids(c["row"]));
    if (got != want && ++failures > 5) break;
  }
  // The whole batch at once gives the same rows.
  std::vector<std::string> texts;
  for (const auto& c : ref["cases"]) texts.push_back(c["text"].get<std::string>());
  const TokenBatch batch = tok.tokenize(texts);
  REQUIRE(batch.rows == static_cast<int64_t>(texts.size()));
  for (size_t r = 0; r < texts.size(); ++r)
    CHECK(row_of(batch, static_cast<int64_t>(r)) == to_ids(ref["cases"][r]["row"]));
}

TEST_CASE("io/clip_unicode_tables.cpp is what its generator writes") {
  const nlohmann::json& ref = reference();
  const std::string version = ref["unicode_version"].get<std::string>();
  if (version != engine::io::clip_tables::kUnicodeVersion) {
    MESSAGE("skipped: " << ENGINE_PYTHON << " has Unicode " << version << ", the tables "
                        << engine::io::clip_tables::kUnicodeVersion);
    return;
  }
  const std::string src = ENGINE_SOURCE_DIR;
  const fs::path out = scratch_dir() / "clip_unicode_tables.cpp";
  const std::string cmd = std::string(ENGINE_PYTHON) + " " + src +
                          "/scripts/gen_clip_unicode_tables.py > '" + out.string() + "'";
  INFO("generator failed: " << cmd);
  REQUIRE(std::system(cmd.c_str()) == 0);
  INFO("io/clip_unicode_tables.cpp is stale: rerun scripts/gen_clip_unicode_tables.py");
  CHECK(read_file(out) == read_file(src + "/io/clip_unicode_tables.cpp"));
}

TEST_CASE("decode matches Python, including broken UTF-8 and padding") {
  const ClipTokenizer& tok = openai_tokenizer();
  const nlohmann::json& ref = reference();
  REQUIRE(ref["decodes"].size() > 200);
  for (const auto& d : ref["decodes"]) {
    const std::vector<int32_t> ids = to_ids(d["ids"]);
    INFO("ids " << show(ids));
    CHECK(tok.decode(ids) == d["text"].get<std::string>());
  }
  CHECK_THROWS_AS(tok.decode(std::vector<int32_t>{49408}), engine::Error);
}

TEST_CASE("Hugging Face vocab.json + merges.txt give the same ids") {
  const ClipTokenizer& openai = openai_tokenizer();
  const nlohmann::json& ref = reference();  // also writes vocab.json and merges.txt
  const ClipTokenizer hf((scratch_dir() / "vocab.json").string(),
                         (scratch_dir() / "merges.txt").string());
  CHECK(hf.vocab_size() == openai.vocab_size());
  CHECK(hf.sot_id() == 49406);
  CHECK(hf.eot_id() == 49407);
  for (const auto& c : ref["cases"]) {
    const std::string text = c["text"].get<std::string>();
    INFO("caption: " << nlohmann::json(text).dump());
    CHECK(hf.encode(text) == to_ids(c["ids"]));
  }
}

TEST_CASE("truncation and context length") {
  const ClipTokenizer& tok = openai_tokenizer();
  std::string long_caption;
  for (int i = 0; i < 40; ++i) long_caption += "a photo of a cat ";
  const std::vector<int32_t> ids = tok.encode(long_caption);
  REQUIRE(ids.size() == 200);
  const TokenBatch b = tok.tokenize(long_caption);
  const std::vector<int32_t> row = row_of(b, 0);
  CHECK(row.front() == 49406);
  CHECK(row.back() == 49407);  // EOT forced last, as open_clip does
  CHECK(std::vector<int32_t>(row.begin() + 1, row.end() - 1) ==
        std::vector<int32_t>(ids.begin(), ids.begin() + 75));
  // Exactly 77 tokens fit without truncation: 75 ids.
  const std::vector<int32_t> fit = tok.encode(long_caption.substr(0, 75 / 5 * 17));
  CHECK(fit.size() == 75);
  CHECK_NOTHROW(tok.tokenize(long_caption.substr(0, 75 / 5 * 17), 77, false));
  const std::string err = error_of([&] { tok.tokenize(long_caption, 77, false); });
  CHECK(err.find("context length 77") != std::string::npos);
  const TokenBatch small = tok.tokenize("a photo of a cat", 4);
  CHECK(row_of(small, 0) == std::vector<int32_t>{49406, 320, 1125, 49407});
  const TokenBatch empty = tok.tokenize("");
  CHECK(row_of(empty, 0)[0] == 49406);
  CHECK(row_of(empty, 0)[1] == 49407);
  CHECK(row_of(empty, 0)[2] == 0);
  CHECK_THROWS_AS(tok.tokenize("x", 0), engine::Error);
}

TEST_CASE("missing or corrupt vocabulary files are clear errors") {
  const fs::path dir = scratch_dir();
  const std::string missing = (dir / "no_such_vocab.txt.gz").string();
  std::string err = error_of([&] { ClipTokenizer t(missing); });
  CHECK(err.find(missing) != std::string::npos);
  CHECK(err.find("not found") != std::string::npos);

  // Truncated gzip: the first 100 kB of the real file.
  const std::string real = read_file(vocab_path());
  REQUIRE(real.size() > 1000000);
  const fs::path truncated = dir / "truncated.txt.gz";
  write_file(truncated, real.substr(0, 100000));
  err = error_of([&] { ClipTokenizer t(truncated.string()); });
  MESSAGE(err);
  CHECK(err.find(truncated.string()) != std::string::npos);
  CHECK(err.find("corrupt") != std::string::npos);

  // Damaged gzip data: flip bytes in the middle of the stream.
  std::string damaged = real;
  for (size_t i = 500000; i < 500064; ++i) damaged[i] = static_cast<char>(damaged[i] ^ 0x5A);
  const fs::path damaged_path = dir / "damaged.txt.gz";
  write_file(damaged_path, damaged);
  err = error_of([&] { ClipTokenizer t(damaged_path.string()); });
  MESSAGE(err);
  CHECK(err.find(damaged_path.string()) != std::string::npos);
  CHECK(err.find("corrupt") != std::string::npos);

  // Valid gzip, wrong content: too few merges, and not a vocabulary at all.
  const fs::path few = dir / "few.txt.gz";
  write_gzip(few, "#version: 0.2\ni n\nt h\n");
  err = error_of([&] { ClipTokenizer t(few.string()); });
  CHECK(err.find(few.string()) != std::string::npos);
  CHECK(err.find("48895") != std::string::npos);
  const fs::path other = dir / "other.txt.gz";
  write_gzip(other, "hello world\n");
  err = error_of([&] { ClipTokenizer t(other.string()); });
  CHECK(err.find("#version") != std::string::npos);

  // Hugging Face files.
  const std::string missing_json = (dir / "missing_vocab.json").string();
  err = error_of([&] { ClipTokenizer t(missing_json, (dir / "merges.txt").string()); });
  CHECK(err.find(missing_json) != std::string::npos);
  const fs::path bad_json = dir / "bad_vocab.json";
  write_file(bad_json, "{\"a\": 0, ");
  err = error_of([&] { ClipTokenizer t(bad_json.string(), (dir / "merges.txt").string()); });
  CHECK(err.find(bad_json.string()) != std::string::npos);
}

TEST_CASE("speed: 10k captions well under a second, thread-safe") {
  const ClipTokenizer& tok = openai_tokenizer();
  // Fresh tokenizer so the word cache starts empty; captions vary so the cache is exercised
  // the way a dataset does (repeated common words, some rare ones).
  const ClipTokenizer fresh(vocab_path());
  static const char* subjects[] = {"cat", "dog", "red car", "Golden Retriever", "café table",
                                   "mountain lake", "東京タワー", "🍎 apple", "pizza", "robot"};
  static const char* scenes[] = {"at sunset", "in the snow", "on a wooden table, 35mm photo",
                                 "with dramatic lighting", "&amp; friends", "in 1984"};
  std::vector<std::string> captions;
  for (int i = 0; i < 10000; ++i)
    captions.push_back("A photo of a " + std::string(subjects[i % 10]) + " " + scenes[i % 6] +
                       " #" + std::to_string(i * 7919 % 100000));
  const auto t0 = std::chrono::steady_clock::now();
  const TokenBatch batch = fresh.tokenize(captions);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("tokenized 10000 captions in " << seconds * 1e3 << " ms");
  CHECK(batch.rows == 10000);
  CHECK(seconds < 1.0);

  // Two threads sharing one tokenizer agree with a single-threaded run.
  std::vector<std::vector<int32_t>> a(2000), b(2000);
  std::thread t1([&] {
    for (int i = 0; i < 2000; ++i) a[i] = tok.encode(captions[i * 5]);
  });
  std::thread t2([&] {
    for (int i = 1999; i >= 0; --i) b[i] = tok.encode(captions[i * 5]);
  });
  t1.join();
  t2.join();
  for (int i = 0; i < 2000; ++i) REQUIRE(a[i] == b[i]);
  CHECK(row_of(batch, 5) == row_of(tok.tokenize(captions[5]), 0));
}

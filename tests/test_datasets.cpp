// Tests of the dataset sources of io/dataset.h: the streaming tar reader (io/tar_reader.h)
// checked against Python's tarfile listing of the same archives, WebDataset shards with the damage
// img2dataset output can have (io/webdataset.h), image folders with caption sidecars
// (io/image_folder.h), the emoji adapter and open_dataset's spec strings. Every fixture is
// written here: images with io::encode_png / encode_jpeg, tar files with Python's tarfile
// (/usr/bin/python3) or with the small ustar writer below.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/dataset.h"
#include "io/emoji_dataset.h"
#include "io/image.h"
#include "io/image_folder.h"
#include "io/tar_reader.h"
#include "io/webdataset.h"
#include "tensor/error.h"
#include "tests/temp_dir.h"

#ifndef ENGINE_PYTHON
#error "ENGINE_PYTHON must be defined (tests/CMakeLists.txt does)"
#endif

using namespace engine;
using namespace engine::io;
namespace fs = std::filesystem;

namespace {

struct TempDir : test::TempDir {
  TempDir() : test::TempDir("engine_data") {}
};

void write_bytes(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  REQUIRE(f.good());
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f.is_open());
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Runs `f` with stderr redirected to a file and returns what it wrote there.
std::string capture_stderr(const std::function<void()>& f) {
  TempDir dir;
  const std::string path = dir.file("stderr.txt");
  std::fflush(stderr);
  const int saved = ::dup(2);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  REQUIRE(fd >= 0);
  ::dup2(fd, 2);
  ::close(fd);
  std::exception_ptr err;
  try {
    f();
  } catch (...) {
    err = std::current_exception();
  }
  std::fflush(stderr);
  std::cerr.flush();
  ::dup2(saved, 2);
  ::close(saved);
  if (err) std::rethrow_exception(err);
  return read_bytes(path);
}

// u8 [H, W, C] whose pixels depend on position and `salt`.
Tensor pattern(int64_t h, int64_t w, int64_t c, int salt = 0) {
  Tensor t = empty({h, w, c}, opts(DType::u8));
  uint8_t* p = t.data<uint8_t>();
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t k = 0; k < c; ++k) p[(y * w + x) * c + k] = uint8_t((y * 37 + x * 11 + k * 71 + salt * 13) % 256);
  return t;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  if (a.sizes() != b.sizes()) return false;
  const uint8_t* pa = a.data<uint8_t>();
  const uint8_t* pb = b.data<uint8_t>();
  for (int64_t i = 0; i < a.numel(); ++i)
    if (pa[i] != pb[i]) return false;
  return true;
}

// out == round(a * rgb + (1 - a) * 255), a = alpha / 255, computed in double.
bool over_white_matches(const Tensor& rgba, const Tensor& rgb) {
  if (rgb.sizes() != Dims{rgba.sizes()[0], rgba.sizes()[1], 3}) return false;
  const uint8_t* src = rgba.data<uint8_t>();
  const uint8_t* got = rgb.data<uint8_t>();
  for (int64_t p = 0; p < rgba.sizes()[0] * rgba.sizes()[1]; ++p)
    for (int k = 0; k < 3; ++k) {
      const double a = src[p * 4 + 3] / 255.0;
      const double want = std::round(a * src[p * 4 + k] + (1 - a) * 255.0);
      if (std::abs(double(got[p * 3 + k]) - want) > 0.5) return false;
    }
  return true;
}

// A minimal POSIX ustar writer for fixtures (names up to 100 bytes), independent of the reader.
class TarWriter {
 public:
  void add(const std::string& name, const std::string& data, char type = '0') {
    REQUIRE(name.size() < 100);
    std::string h(512, '\0');
    h.replace(0, name.size(), name);
    const auto octal = [&](size_t at, size_t width, uint64_t v) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%0*llo", int(width - 1), static_cast<unsigned long long>(v));
      h.replace(at, width - 1, buf);
    };
    octal(100, 8, 0644);
    octal(108, 8, 1000);
    octal(116, 8, 1000);
    octal(124, 12, data.size());
    octal(136, 12, 1700000000);
    h[156] = type;
    h.replace(257, 6, std::string("ustar\0", 6));
    h.replace(263, 2, "00");
    h.replace(148, 8, "        ");
    unsigned sum = 0;
    for (unsigned char c : h) sum += c;
    char ck[8];
    std::snprintf(ck, sizeof ck, "%06o", sum);
    h.replace(148, 6, ck);
    h[154] = '\0';
    h[155] = ' ';
    offsets_[name] = out_.size() + 512;
    out_ += h + data + std::string((512 - data.size() % 512) % 512, '\0');
  }
  std::string finish() const { return out_ + std::string(1024, '\0'); }
  uint64_t data_offset(const std::string& name) const { return offsets_.at(name); }

 private:
  std::string out_;
  std::map<std::string, uint64_t> offsets_;
};

// Python's tarfile writes archives in three formats and lists them (and any archive given) as
// JSON: name, type, header offset, data offset, size, and the data in hex for small members.
const char* kTarScript = R"PY(
import json, sys, tarfile, io
out = sys.argv[1]
def payload(name, size):
    return bytes((i * 7 + len(name) * 3) % 256 for i in range(size))
files = [("a.txt", 5), ("zero.dat", 0), ("one.bin", 1), ("d/b511.bin", 511), ("d/b512.bin", 512),
         ("d/b513.bin", 513), ("big.bin", 5000),
         ("p" * 60 + "/" + "q" * 60 + "/" + "n" * 70 + ".jpg", 700)]          # 193 bytes: ustar prefix
long_names = [("L" * 120 + "/" + "m" * 130 + ".txt", 33),                  # 255 bytes: GNU 'L' / pax
              ("caf\u00e9/\u00fcber.txt", 9)]                               # non-ASCII: pax path record
for fmt_name, fmt in [("ustar", tarfile.USTAR_FORMAT), ("gnu", tarfile.GNU_FORMAT), ("pax", tarfile.PAX_FORMAT)]:
    path = f"{out}/fmt_{fmt_name}.tar"
    with tarfile.open(path, "w", format=fmt, encoding="utf-8") as tf:
        d = tarfile.TarInfo("d"); d.type = tarfile.DIRTYPE; d.mode = 0o755; tf.addfile(d)
        entries = files + (long_names if fmt != tarfile.USTAR_FORMAT else [])
        for name, size in entries:
            ti = tarfile.TarInfo(name); ti.size = size; ti.mtime = 1700000000
            tf.addfile(ti, io.BytesIO(payload(name, size)))
        s = tarfile.TarInfo("link"); s.type = tarfile.SYMTYPE; s.linkname = "a.txt"; tf.addfile(s)
def listing(path):
    rows = []
    with tarfile.open(path, "r") as tf:
        for m in tf.getmembers():
            data = tf.extractfile(m).read().hex() if m.isfile() and m.size <= 6000 else ""
            rows.append({"name": m.name, "type": m.type.decode("latin-1"), "offset": m.offset,
                         "offset_data": m.offset_data, "size": m.size, "data": data, "isfile": m.isfile()})
    return rows
result = {}
for fmt_name in ["ustar", "gnu", "pax"]:
    result[f"fmt_{fmt_name}.tar"] = listing(f"{out}/fmt_{fmt_name}.tar")
for extra in sys.argv[2:]:
    result[extra] = listing(f"{out}/{extra}")
with open(f"{out}/listing.json", "w") as f:
    json.dump(result, f)
)PY";

nlohmann::json run_tar_script(const TempDir& dir, const std::vector<std::string>& extra) {
  write_bytes(dir.file("tars.py"), kTarScript);
  std::string cmd = std::string(ENGINE_PYTHON) + " " + dir.file("tars.py") + " " + dir.path.string();
  for (const auto& e : extra) cmd += " " + e;
  const int rc = std::system((cmd + " > " + dir.file("py.log") + " 2>&1").c_str());
  if (rc != 0) FAIL("python tarfile fixture script failed (rc " << rc << "): " << cmd << "\n" << read_bytes(dir.file("py.log")));
  return nlohmann::json::parse(read_bytes(dir.file("listing.json")));
}

std::string to_hex(const std::string& s) {
  static const char* digits = "0123456789abcdef";
  std::string h;
  for (unsigned char c : s) {
    h += digits[c >> 4];
    h += digits[c & 15];
  }
  return h;
}

std::string rstrip_slash(std::string s) {
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

}  // namespace

// ---- tar reader ---------------------------------------------------------------------------------

TEST_CASE("tar reader: members, offsets and data agree with Python's tarfile (ustar, GNU, pax, own writer)") {
  TempDir dir;
  TarWriter w;
  w.add("x/000.jpg", std::string(700, 'j'));
  w.add("x/000.txt", "a caption");
  w.add("x/001.txt", "");
  write_bytes(dir.file("own.tar"), w.finish());
  const nlohmann::json listing = run_tar_script(dir, {"own.tar"});
  REQUIRE(listing.size() == 4);
  for (const auto& [file, rows] : listing.items()) {
    CAPTURE(file);
    TarReader reader(dir.file(file));
    TarMember m;
    size_t i = 0;
    while (reader.next(m)) {
      REQUIRE(i < rows.size());
      const auto& row = rows[i];
      CAPTURE(row.dump());
      CHECK(rstrip_slash(m.name) == row["name"].get<std::string>());
      CHECK(std::string(1, m.type == '\0' ? '0' : m.type) == row["type"].get<std::string>());
      CHECK(m.is_file() == row["isfile"].get<bool>());
      CHECK(m.data_offset == row["offset_data"].get<uint64_t>());
      if (m.is_file()) {
        CHECK(m.size == row["size"].get<uint64_t>());
        CHECK(to_hex(reader.read_data()) == row["data"].get<std::string>());
      }
      ++i;
    }
    CHECK(i == rows.size());
  }
  // A few members of the formats must have exercised the extensions.
  const auto names = [&](const std::string& file) {
    std::vector<std::string> v;
    for (const auto& m : list_tar(dir.file(file))) v.push_back(m.name);
    return v;
  };
  const std::string long_name = std::string(120, 'L') + "/" + std::string(130, 'm') + ".txt";
  for (const char* f : {"fmt_gnu.tar", "fmt_pax.tar"}) {
    const auto v = names(f);
    CHECK(std::find(v.begin(), v.end(), long_name) != v.end());
    CHECK(std::find(v.begin(), v.end(), "caf\xc3\xa9/\xc3\xbc" "ber.txt") != v.end());
  }
  CHECK(w.data_offset("x/000.txt") == listing["own.tar"][1]["offset_data"].get<uint64_t>());
}

TEST_CASE("tar reader: truncated and corrupt archives are errors naming the file, after the good members") {
  TempDir dir;
  TarWriter w;
  w.add("a.txt", "first");
  w.add("b.bin", std::string(2000, 'b'));
  w.add("c.txt", "third");
  const std::string full = w.finish();
  const uint64_t b_data = w.data_offset("b.bin");

  // Cut inside b.bin's data: a.txt comes back, then the error.
  write_bytes(dir.file("cut_data.tar"), full.substr(0, b_data + 1000));
  {
    TarReader r(dir.file("cut_data.tar"));
    TarMember m;
    REQUIRE(r.next(m));
    CHECK(m.name == "a.txt");
    CHECK(r.read_data() == "first");
    const std::string err = error_of([&] { r.next(m); });
    CHECK(contains(err, "cut_data.tar"));
    CHECK(contains(err, "truncated member 'b.bin'"));
  }
  // Cut inside c.txt's header.
  write_bytes(dir.file("cut_header.tar"), full.substr(0, w.data_offset("c.txt") - 300));
  {
    TarReader r(dir.file("cut_header.tar"));
    TarMember m;
    REQUIRE(r.next(m));
    REQUIRE(r.next(m));
    CHECK(m.name == "b.bin");
    const std::string err = error_of([&] { r.next(m); });
    CHECK(contains(err, "truncated header"));
    CHECK(contains(err, "cut_header.tar"));
  }
  // Damage in b.bin's header: the checksum catches it.
  std::string bad = full;
  bad[b_data - 512 + 3] = 'Z';
  write_bytes(dir.file("corrupt.tar"), bad);
  {
    TarReader r(dir.file("corrupt.tar"));
    TarMember m;
    REQUIRE(r.next(m));
    const std::string err = error_of([&] { r.next(m); });
    CHECK(contains(err, "corrupt header"));
    CHECK(contains(err, "offset 1024"));
  }
  // The end of the file right after a member (no closing zero blocks) ends the archive quietly.
  write_bytes(dir.file("no_end.tar"), full.substr(0, full.size() - 1024));
  CHECK(list_tar(dir.file("no_end.tar")).size() == 3);
  CHECK(contains(error_of([&] { list_tar(dir.file("missing.tar")); }), "missing.tar"));
  // read_file_range reports a short file.
  CHECK(contains(error_of([&] { read_file_range(dir.file("no_end.tar"), 100, 1u << 20, "member x"); }),
                 "truncated"));
}

// ---- WebDataset ---------------------------------------------------------------------------------

TEST_CASE("expand_braces and resolve_shards") {
  CHECK(expand_braces("s-{000..002}.tar") == std::vector<std::string>{"s-000.tar", "s-001.tar", "s-002.tar"});
  CHECK(expand_braces("s-{8..11}.tar") == std::vector<std::string>{"s-8.tar", "s-9.tar", "s-10.tar", "s-11.tar"});
  CHECK(expand_braces("{a,b}/{0..1}") == std::vector<std::string>{"a/0", "a/1", "b/0", "b/1"});
  CHECK(expand_braces("plain.tar") == std::vector<std::string>{"plain.tar"});
  CHECK(contains(error_of([] { expand_braces("s-{000..x}.tar"); }), "bad range"));
  CHECK(contains(error_of([] { expand_braces("s-{000..002.tar"); }), "without"));
  TempDir dir;
  TarWriter w;
  w.add("k.txt", "x");
  write_bytes(dir.file("s-001.tar"), w.finish());
  write_bytes(dir.file("s-000.tar"), w.finish());
  write_bytes(dir.file("other.txt"), "x");
  CHECK(resolve_shards(dir.path.string()) == std::vector<std::string>{dir.file("s-000.tar"), dir.file("s-001.tar")});
  CHECK(contains(error_of([&] { resolve_shards(dir.file("s-{000..002}.tar")); }), "s-002.tar"));
}

TEST_CASE("wds: img2dataset-style shards with damage: truncated shard, garbage member, WebP, missing caption") {
  TempDir dir;
  const Tensor img0 = pattern(24, 32, 3, 0);
  const std::string jpg0 = encode_jpeg(img0, 90);
  Tensor rgba1 = pattern(20, 20, 4, 1);
  rgba1.data<uint8_t>()[3] = 0;     // pixel (0, 0) fully transparent
  rgba1.data<uint8_t>()[7] = 128;   // pixel (0, 1) half transparent
  const std::string png1 = encode_png(rgba1);
  const std::string png6 = encode_png(pattern(16, 16, 3, 6));
  const std::string webp = std::string("RIFF\x20\x00\x00\x00WEBPVP8 ", 16) + std::string(24, '\x11');
  const std::string bad_jpeg = std::string("\xff\xd8\xff\xe0", 4) + std::string(300, '\x5a');
  std::string garbage;
  for (int i = 0; i < 400; ++i) garbage += char((i * 97 + 13) % 251);
  const auto json = [](const std::string& key) { return "{\"key\": \"" + key + "\", \"status\": \"success\"}"; };

  TarWriter s0;
  s0.add("000000000.jpg", jpg0);
  s0.add("000000000.txt", "a striped card\n");
  s0.add("000000000.json", json("000000000"));
  s0.add("000000001.json", json("000000001"));  // members of a key in any order
  s0.add("000000001.png", png1);
  s0.add("000000001.txt", "half see-through");
  s0.add("000000002.jpg", garbage);
  s0.add("000000002.txt", "garbage");
  s0.add("000000003.webp", webp);
  s0.add("000000003.txt", "only webp");
  s0.add("000000004.png", png6);
  s0.add("000000004.json", json("000000004"));  // no caption
  s0.add("000000005.jpg", bad_jpeg);
  s0.add("000000005.txt", "jpeg signature, broken body");
  s0.add("000000006.webp", webp);
  s0.add("000000006.PNG", png6);
  s0.add("000000006.txt", "webp and png");
  s0.add("sub/000000007.jpg", jpg0);
  s0.add("sub/000000007.txt", "in a folder");
  write_bytes(dir.file("shard-000.tar"), s0.finish());

  TarWriter s1;
  std::vector<std::string> jpgs1;
  for (int i = 0; i < 5; ++i) {
    const std::string key = "00001000" + std::to_string(i);
    jpgs1.push_back(encode_jpeg(pattern(12, 12, 3, 10 + i), 95));
    s1.add(key + ".jpg", jpgs1.back());
    s1.add(key + ".txt", "caption " + std::to_string(i));
    s1.add(key + ".json", json(key));
  }
  // Cut in the middle of 000010003.jpg's data.
  write_bytes(dir.file("shard-001.tar"), s1.finish().substr(0, s1.data_offset("000010003.jpg") + 100));

  std::shared_ptr<Dataset> ds;
  const std::string log = capture_stderr([&] { ds = open_dataset("wds:" + dir.file("shard-{000..001}.tar")); });
  CAPTURE(log);
  const auto* wds = dynamic_cast<const WebDataset*>(ds.get());
  REQUIRE(wds != nullptr);
  const std::vector<std::string> keys = {"000000000", "000000001",     "000000005", "000000006",
                                         "sub/000000007", "000010000", "000010001", "000010002"};
  REQUIRE(ds->size() == keys.size());
  for (size_t i = 0; i < keys.size(); ++i) CHECK(wds->key(i) == keys[i]);
  CHECK(wds->skipped().no_caption == 1);
  CHECK(wds->skipped().webp == 1);
  CHECK(wds->skipped().not_an_image == 1);
  CHECK(wds->skipped().damaged_shards == 1);
  CHECK(ds->describe() == "wds (8 samples in 2 shards, " + dir.file("shard-{000..001}.tar") + ")");
  // One line each, naming shard and key.
  CHECK(contains(log, "shard-001.tar' is damaged"));
  CHECK(contains(log, "truncated member '000010003.jpg'"));
  CHECK(contains(log, "1 without a .txt caption (first: 000000004)"));
  CHECK(contains(log, "not an image (garbage bytes) (first: 000000002)"));
  CHECK(contains(log, "WebP (first: " + dir.file("shard-000.tar") + ": 000000003)"));
  CHECK(contains(log, "--encode_format jpg"));

  // Pixels: JPEG members decode exactly as stb decodes the bytes written; PNG with alpha is
  // composited over white, computed here in floating point.
  RawSample s = ds->get(0);
  CHECK(s.caption == "a striped card");
  CHECK(s.key == "000000000");
  CHECK(same_bytes(s.image, decode_image(jpg0.data(), jpg0.size(), "jpg0", 3)));
  s = ds->get(1);
  CHECK(s.caption == "half see-through");
  CHECK(over_white_matches(rgba1, s.image));
  CHECK(s.image.data<uint8_t>()[0] == 255);
  const std::string err = error_of([&] { ds->get(2); });
  CHECK(contains(err, "shard-000.tar"));
  CHECK(contains(err, "000000005.jpg"));
  s = ds->get(3);
  CHECK(same_bytes(s.image, pattern(16, 16, 3, 6)));
  CHECK(ds->get(4).caption == "in a folder");
  for (int i = 0; i < 3; ++i) {
    s = ds->get(size_t(5 + i));
    CHECK(s.caption == "caption " + std::to_string(i));
    CHECK(same_bytes(s.image, decode_image(jpgs1[size_t(i)].data(), jpgs1[size_t(i)].size(), "jpg", 3)));
  }

  // Other ways to name the shards.
  capture_stderr([&] {
    CHECK(open_dataset("wds:" + dir.path.string())->size() == 8);
    CHECK(open_dataset(dir.file("shard-000.tar"))->size() == 5);
    CHECK(open_dataset(dir.file("shard-{000..000}.tar"))->size() == 5);
  });
}

TEST_CASE("wds: errors for missing shards and shards without usable samples") {
  TempDir dir;
  CHECK(contains(error_of([&] { open_dataset("wds:" + dir.file("none-{0..1}.tar")); }), "none-0.tar' does not exist"));
  CHECK(contains(error_of([&] { open_dataset("wds:" + dir.path.string()); }), "no .tar shards"));
  TarWriter w;
  w.add("000.txt", "caption without image");
  write_bytes(dir.file("s.tar"), w.finish());
  std::string err;
  capture_stderr([&] { err = error_of([&] { open_dataset(dir.file("s.tar")); }); });
  CHECK(contains(err, "no usable samples"));
  CHECK(contains(err, "s.tar"));
  write_bytes(dir.file("junk.tar"), std::string(700, 'x'));
  capture_stderr([&] { err = error_of([&] { open_dataset(dir.file("junk.tar")); }); });
  CHECK(contains(err, "no usable samples"));
  CHECK(contains(err, "1 damaged shard"));
}

// ---- image folder ---------------------------------------------------------------------------------

namespace {
// A 24-bit bottom-up BMP, written by hand (stb has no BMP writer here).
std::string make_bmp(const Tensor& rgb) {
  const int h = int(rgb.sizes()[0]), w = int(rgb.sizes()[1]);
  const int row = (w * 3 + 3) / 4 * 4;
  const uint32_t size = 54 + uint32_t(row * h);
  std::string b(size, '\0');
  const auto put32 = [&](size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) b[at + size_t(i)] = char((v >> (8 * i)) & 255);
  };
  b[0] = 'B';
  b[1] = 'M';
  put32(2, size);
  put32(10, 54);
  put32(14, 40);
  put32(18, uint32_t(w));
  put32(22, uint32_t(h));
  b[26] = 1;
  b[28] = 24;
  put32(34, uint32_t(row * h));
  const uint8_t* p = rgb.data<uint8_t>();
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int k = 0; k < 3; ++k)  // BGR, last row first
        b[54 + size_t((h - 1 - y) * row + x * 3 + k)] = char(p[(y * w + x) * 3 + (2 - k)]);
  return b;
}
}  // namespace

TEST_CASE("image folder: recursive, sorted, jpg/jpeg/png/bmp, caption sidecars, alpha over white") {
  TempDir dir;
  const Tensor a = pattern(10, 14, 3, 1), b = pattern(9, 9, 3, 2), c = pattern(7, 5, 3, 3);
  const std::string jpg = encode_jpeg(pattern(16, 12, 3, 4), 90);
  Tensor rgba = pattern(6, 6, 4, 5);
  rgba.data<uint8_t>()[3] = 0;
  write_bytes(dir.file("b/z.png"), encode_png(a));
  write_bytes(dir.file("a/y.jpeg"), jpg);
  write_bytes(dir.file("a/x.PNG"), encode_png(b));
  write_bytes(dir.file("a/x.txt"), "  a grey square \n");
  write_bytes(dir.file("c.bmp"), make_bmp(c));
  write_bytes(dir.file("c.txt"), "bitmap");
  write_bytes(dir.file("d/alpha.png"), encode_png(rgba));
  write_bytes(dir.file(".hidden/q.png"), encode_png(a));
  write_bytes(dir.file("notes.md"), "not an image");
  write_bytes(dir.file("b/z.json"), "{}");

  auto ds = open_dataset(dir.path.string());
  const auto* folder = dynamic_cast<const ImageFolderDataset*>(ds.get());
  REQUIRE(folder != nullptr);
  REQUIRE(ds->size() == 5);
  const std::vector<std::string> order = {"a/x.PNG", "a/y.jpeg", "b/z.png", "c.bmp", "d/alpha.png"};
  for (size_t i = 0; i < order.size(); ++i) CHECK(folder->relative_path(i) == order[i]);
  CHECK(ds->describe() == "folder (5 images, " + dir.path.string() + ")");

  RawSample s = ds->get(0);
  CHECK(s.caption == "a grey square");
  CHECK(s.key == "a/x.PNG");
  CHECK(same_bytes(s.image, b));
  s = ds->get(1);
  CHECK(s.caption == "");
  CHECK(same_bytes(s.image, decode_image(jpg.data(), jpg.size(), "jpg", 3)));
  CHECK(same_bytes(ds->get(2).image, a));
  s = ds->get(3);
  CHECK(s.caption == "bitmap");
  CHECK(same_bytes(s.image, c));
  s = ds->get(4);
  CHECK(s.image.data<uint8_t>()[0] == 255);  // the transparent pixel is white
  CHECK(over_white_matches(rgba, s.image));

  // The same via folder:, and the errors.
  CHECK(open_dataset("folder:" + dir.path.string())->size() == 5);
  TempDir empty_dir;
  write_bytes(empty_dir.file("readme.txt"), "no images");
  CHECK(contains(error_of([&] { open_dataset("folder:" + empty_dir.path.string()); }), "holds no images"));
  CHECK(contains(error_of([&] { open_dataset("folder:" + dir.file("nope")); }), "does not exist"));
  CHECK(contains(error_of([&] { open_dataset(dir.file("nope")); }), "not a folder or a .tar"));
  CHECK(contains(error_of([&] { open_dataset("folder:"); }), "nothing after"));
}

// ---- emoji and specs -----------------------------------------------------------------------------

TEST_CASE("emoji adapter: the built-in set as RawSamples (third_party/emoji, installed by scripts/setup.sh)") {
  const std::string root = std::string(ENGINE_SOURCE_DIR) + "/third_party/emoji";
  if (!fs::exists(root)) {
    FAIL("third_party/emoji is missing: run `bash scripts/setup.sh` (installs emoji-datasource-google)");
    return;
  }
  auto ds = open_dataset("emoji:" + root);
  const EmojiDataset emoji = EmojiDataset::open(root);
  REQUIRE(ds->size() == emoji.size());
  CHECK(ds->describe() == "emoji (" + std::to_string(emoji.size()) + " images, " + root + ")");
  for (size_t i : {size_t(0), emoji.size() / 2, emoji.size() - 1}) {
    const RawSample s = ds->get(i);
    CHECK(s.caption == emoji.caption(i));
    CHECK(s.key == fs::path(emoji.image_path(i)).filename().string());
    // EmojiDataset::load composites over white on its own; u8 -> f32 -> u8 is exact.
    CHECK(same_bytes(s.image, to_u8(emoji.load(i))));
  }
  CHECK(contains(error_of([] { open_dataset("emoji:/nonexistent/emoji"); }), "npm install"));
  CHECK(contains(error_of([] { open_dataset(""); }), "empty spec"));
}

// Tests of io/image (decode, encode, crop, resize, grid, corrupt input) and io/emoji_dataset
// (the built-in default dataset installed by scripts/setup.sh into third_party/emoji).
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "io/emoji_dataset.h"
#include "io/image.h"
#include "tensor/error.h"
#include "tests/temp_dir.h"

using namespace engine;
using namespace engine::io;
namespace fs = std::filesystem;

namespace {

using test::no_temporaries_of;

struct TempDir : test::TempDir {
  TempDir() : test::TempDir("engine_img") {}
};

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  REQUIRE(f.good());
}

// u8 [H, W, C] whose pixels are a deterministic function of position, so every byte matters.
Tensor pattern(int64_t h, int64_t w, int64_t c) {
  Tensor t = empty({h, w, c}, opts(DType::u8));
  uint8_t* p = t.data<uint8_t>();
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t k = 0; k < c; ++k) p[(y * w + x) * c + k] = uint8_t((y * 37 + x * 11 + k * 71) % 256);
  return t;
}

uint8_t px(const Tensor& t, int64_t y, int64_t x, int64_t k) {
  return t.data<uint8_t>()[(y * t.sizes()[1] + x) * t.sizes()[2] + k];
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  if (a.sizes() != b.sizes()) return false;
  const uint8_t* pa = a.data<uint8_t>();
  const uint8_t* pb = b.data<uint8_t>();
  for (int64_t i = 0; i < a.numel(); ++i)
    if (pa[i] != pb[i]) return false;
  return true;
}

// The message of the engine::Error that `f` throws ("" when it throws none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("PNG round trip is exact for 1 to 4 channels, in memory and through a file") {
  TempDir dir;
  for (int64_t c = 1; c <= 4; ++c) {
    CAPTURE(c);
    const Tensor img = pattern(13, 17, c);
    const std::string png = encode_png(img);
    CHECK(png.substr(1, 3) == "PNG");
    const Tensor back = decode_image(png.data(), png.size(), "<mem>", 0);
    CHECK(same_bytes(img, back));
    const std::string path = dir.file("img" + std::to_string(c) + ".png");
    write_png(path, img);
    CHECK(no_temporaries_of(path));
    CHECK(same_bytes(read_image(path, 0), img));
  }
  // Forced channel counts: grey -> RGB replicates, RGB -> RGBA adds opaque alpha.
  const Tensor grey = pattern(4, 5, 1);
  const std::string png = encode_png(grey);
  const Tensor rgb = decode_image(png.data(), png.size(), "<mem>", 3);
  REQUIRE(rgb.sizes() == Dims({4, 5, 3}));
  CHECK(px(rgb, 2, 3, 0) == px(grey, 2, 3, 0));
  CHECK(px(rgb, 2, 3, 2) == px(grey, 2, 3, 0));
  const std::string png3 = encode_png(pattern(4, 5, 3));
  const Tensor rgba = decode_image(png3.data(), png3.size(), "<mem>", 4);
  CHECK(px(rgba, 1, 1, 3) == 255);
}

TEST_CASE("JPEG written by stb decodes close to the original") {
  // A smooth gradient: JPEG at quality 95 reproduces it within a few levels.
  Tensor img = empty({32, 48, 3}, opts(DType::u8));
  uint8_t* p = img.data<uint8_t>();
  for (int64_t y = 0; y < 32; ++y)
    for (int64_t x = 0; x < 48; ++x) {
      p[(y * 48 + x) * 3 + 0] = uint8_t(x * 5);
      p[(y * 48 + x) * 3 + 1] = uint8_t(y * 7);
      p[(y * 48 + x) * 3 + 2] = 128;
    }
  const std::string jpg = encode_jpeg(img, 95);
  CHECK(uint8_t(jpg[0]) == 0xFF);
  CHECK(uint8_t(jpg[1]) == 0xD8);
  const Tensor back = decode_image(jpg.data(), jpg.size(), "<jpeg>", 3);
  REQUIRE(back.sizes() == img.sizes());
  double err = 0;
  int max_err = 0;
  for (int64_t i = 0; i < img.numel(); ++i) {
    const int d = std::abs(int(back.data<uint8_t>()[i]) - int(p[i]));
    err += d;
    max_err = std::max(max_err, d);
  }
  CHECK(err / double(img.numel()) < 2.0);
  CHECK(max_err < 16);
}

TEST_CASE("to_float / to_u8: [-1, 1] CHW layout, exact round trip, clamping") {
  const Tensor img = pattern(3, 4, 3);
  const Tensor f = to_float(img);
  REQUIRE(f.sizes() == Dims({3, 3, 4}));
  CHECK(f.dtype() == DType::f32);
  // channel 1, row 2, column 3 of CHW is pixel (2, 3) channel 1 of HWC.
  CHECK(f.data<float>()[(1 * 3 + 2) * 4 + 3] == doctest::Approx(px(img, 2, 3, 1) / 127.5 - 1.0));
  CHECK(same_bytes(to_u8(f), img));
  const Tensor extremes = from_vector({-5.0, -1.0, 0.0, 1.0, 7.0, std::nan("")}, {1, 1, 6});
  const Tensor b = to_u8(extremes);
  const uint8_t* q = b.data<uint8_t>();
  CHECK(q[0] == 0);
  CHECK(q[1] == 0);
  CHECK(q[2] == 128);  // 127.5 rounds half away from zero
  CHECK(q[3] == 255);
  CHECK(q[4] == 255);
  CHECK(q[5] == 0);
}

TEST_CASE("center_crop_square geometry") {
  const Tensor wide = pattern(4, 10, 3);
  const Tensor a = center_crop_square(wide);
  REQUIRE(a.sizes() == Dims({4, 4, 3}));
  CHECK(px(a, 0, 0, 0) == px(wide, 0, 3, 0));
  CHECK(px(a, 3, 3, 2) == px(wide, 3, 6, 2));
  const Tensor tall = pattern(9, 4, 1);  // odd difference: offset floor(5 / 2) = 2
  const Tensor b = center_crop_square(tall);
  REQUIRE(b.sizes() == Dims({4, 4, 1}));
  CHECK(px(b, 0, 0, 0) == px(tall, 2, 0, 0));
  CHECK(px(b, 3, 1, 0) == px(tall, 5, 1, 0));
  const Tensor sq = pattern(5, 5, 2);
  CHECK(same_bytes(center_crop_square(sq), sq));
}

TEST_CASE("resize: constant stays constant, box downscale averages blocks, checkerboard averages") {
  for (auto filter : {ResizeFilter::automatic, ResizeFilter::box, ResizeFilter::triangle, ResizeFilter::catmull_rom,
                      ResizeFilter::mitchell, ResizeFilter::cubic_bspline}) {
    const Tensor c = full({10, 14, 3}, 77.0, opts(DType::u8));
    for (auto [oh, ow] : {std::pair<int64_t, int64_t>{5, 7}, {23, 31}, {10, 3}}) {
      const Tensor r = resize_image(c, oh, ow, filter);
      REQUIRE(r.sizes() == Dims({oh, ow, 3}));
      for (int64_t i = 0; i < r.numel(); ++i) REQUIRE(r.data<uint8_t>()[i] == 77);
    }
  }
  // 2x2 blocks with distinct values: box filtering to half size gives each block's mean.
  Tensor img = empty({4, 4, 1}, opts(DType::u8));
  uint8_t* p = img.data<uint8_t>();
  const int vals[2][2][4] = {{{0, 40, 80, 120}, {200, 0, 100, 100}}, {{10, 20, 30, 40}, {255, 255, 255, 251}}};
  for (int by = 0; by < 2; ++by)
    for (int bx = 0; bx < 2; ++bx)
      for (int k = 0; k < 4; ++k) p[(by * 2 + k / 2) * 4 + bx * 2 + k % 2] = uint8_t(vals[by][bx][k]);
  const Tensor half = resize_image(img, 2, 2, ResizeFilter::box);
  CHECK(int(px(half, 0, 0, 0)) == 60);
  CHECK(int(px(half, 0, 1, 0)) == 100);
  CHECK(int(px(half, 1, 0, 0)) == 25);
  CHECK(int(px(half, 1, 1, 0)) == 254);
  // A one-pixel black/white checkerboard shrunk 2x with the default (Mitchell) filter is flat
  // mid-grey: the filter is symmetric and the reflected border keeps the pattern at the top and
  // left. (stb reflects the far edges with the edge pixel repeated, which breaks the pattern
  // there, so the last row and column are not checked.)
  Tensor cb = empty({16, 16, 1}, opts(DType::u8));
  for (int64_t y = 0; y < 16; ++y)
    for (int64_t x = 0; x < 16; ++x) cb.data<uint8_t>()[y * 16 + x] = ((x + y) % 2) ? 255 : 0;
  const Tensor g = resize_image(cb, 8, 8);
  for (int64_t y = 0; y < 7; ++y)
    for (int64_t x = 0; x < 7; ++x) {
      CAPTURE(y);
      CAPTURE(x);
      CHECK(std::abs(int(px(g, y, x, 0)) - 128) <= 1);
    }
  // Upscaling keeps the shape and the range of a gradient.
  const Tensor up = resize_image(pattern(8, 8, 4), 32, 20);
  CHECK(up.sizes() == Dims({32, 20, 4}));
  CHECK_THROWS_AS(resize_image(img, 0, 4), Error);
}

TEST_CASE("make_grid layout") {
  // 5 images of 2x3, each constant with value (i - 2) / 2 in [-1, 1]; 3 per row, padding 1.
  const int64_t n = 5, c = 3, h = 2, w = 3;
  std::vector<double> v;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < c * h * w; ++j) v.push_back(double(i - 2) / 2.0);
  const Tensor imgs = from_vector(v, {n, c, h, w});
  const Tensor g = make_grid(imgs, 3, 1, 9);
  // 2 rows x 3 columns: height 2 * (2 + 1) + 1 = 7, width 3 * (3 + 1) + 1 = 13.
  REQUIRE(g.sizes() == Dims({7, 13, 3}));
  CHECK(px(g, 0, 0, 0) == 9);                                  // top-left padding
  CHECK(px(g, 1, 1, 0) == 0);                                  // image 0: -1 -> 0
  CHECK(px(g, 2, 3, 2) == 0);                                  // image 0, last pixel
  CHECK(px(g, 1, 4, 0) == 9);                                  // padding column between images
  CHECK(px(g, 1, 5, 1) == 64);                                 // image 1: -0.5 -> 63.75 -> 64
  CHECK(px(g, 1, 9, 0) == 128);                                // image 2: 0 -> 127.5 -> 128
  CHECK(px(g, 4, 1, 0) == 191);                                // image 3: 0.5 -> 191.25 -> 191
  CHECK(px(g, 5, 7, 0) == 255);                                // image 4: 1 -> 255
  CHECK(px(g, 4, 9, 0) == 9);                                  // empty sixth cell stays padding
  CHECK(px(g, 3, 6, 0) == 9);                                  // padding row between rows
  // nrow larger than N: one row of N.
  CHECK(make_grid(imgs, 8, 0).sizes() == Dims({2, 15, 3}));
  // A grid encodes to a PNG.
  const std::string png = encode_png(g);
  CHECK(same_bytes(decode_image(png.data(), png.size(), "<grid>", 0), g));
  CHECK_THROWS_AS(make_grid(from_vector({0.0}, {1, 1, 1}), 1, 0), Error);
}

TEST_CASE("corrupt, truncated and missing input raise engine::Error naming the source") {
  TempDir dir;
  const std::string png = encode_png(pattern(20, 20, 3));
  // Truncated at several points, including inside the header and the pixel data.
  for (size_t cut : {size_t(4), size_t(8), size_t(20), size_t(40), png.size() / 2, png.size() - 13}) {
    CAPTURE(cut);
    const std::string path = dir.file("cut.png");
    write_bytes(path, png.substr(0, cut));
    const std::string msg = error_of([&] { read_image(path); });
    CHECK(msg.find(path) != std::string::npos);
    CHECK(msg.find("cannot decode") != std::string::npos);
  }
  // Garbage and a damaged signature.
  std::string bad = png;
  bad[1] = 'X';
  CHECK(error_of([&] { decode_image(bad.data(), bad.size(), "damaged.png"); }).find("damaged.png") !=
        std::string::npos);
  const std::string junk(100, '\x5a');
  CHECK(error_of([&] { decode_image(junk.data(), junk.size(), "junk.bin"); }).find("junk.bin") != std::string::npos);
  // Corrupted compressed data (bytes flipped inside IDAT) must fail cleanly, not crash.
  std::string flipped = png;
  const size_t idat = flipped.find("IDAT");
  REQUIRE(idat != std::string::npos);
  for (size_t i = idat + 6; i < idat + 30 && i < flipped.size(); ++i) flipped[i] = char(~flipped[i]);
  CHECK_THROWS_AS(decode_image(flipped.data(), flipped.size(), "flipped.png"), Error);
  CHECK_THROWS_AS(decode_image(png.data(), 0, "empty"), Error);
  const std::string missing = dir.file("nope.png");
  CHECK(error_of([&] { read_image(missing); }).find(missing) != std::string::npos);
  CHECK_THROWS_AS(decode_image(png.data(), png.size(), "x", 5), Error);
  CHECK_THROWS_AS(encode_png(from_vector({0.0}, {1, 1, 1})), Error);  // f32 is not an image
  CHECK_THROWS_AS(write_png(dir.file("no/such/dir/x.png"), pattern(2, 2, 3)), Error);
}

// ---- emoji dataset ------------------------------------------------------------------------------

TEST_CASE("emoji dataset from third_party/emoji (installed by scripts/setup.sh)") {
  const std::string root = std::string(ENGINE_SOURCE_DIR) + "/third_party/emoji";
  if (!fs::exists(root)) {
    FAIL("third_party/emoji is missing: run `bash scripts/setup.sh`, which installs the npm package "
         "emoji-datasource-google there (CI runs setup.sh before the tests)");
  }
  const EmojiDataset ds = EmojiDataset::open(root);
  CHECK(ds.size() > 1000);
  bool apple = false, grin = false;
  for (const auto& s : ds.samples()) {
    apple = apple || s.caption == "red apple";
    grin = grin || s.caption == "grinning face";
  }
  CHECK(apple);
  CHECK(grin);
  // Sorted by image file name, hence deterministic.
  for (size_t i = 1; i < ds.size(); ++i) REQUIRE(ds.image_path(i - 1) < ds.image_path(i));
  // The package folder itself works as root too.
  CHECK(EmojiDataset::open(ds.package_dir()).size() == ds.size());

  for (size_t i : {size_t(0), ds.size() / 2, ds.size() - 1}) {
    CAPTURE(i);
    const Tensor x = ds.load(i);
    REQUIRE(x.sizes() == Dims({3, 64, 64}));
    CHECK(x.dtype() == DType::f32);
    const float* p = x.data<float>();
    float lo = 2, hi = -2;
    for (int64_t j = 0; j < x.numel(); ++j) {
      lo = std::min(lo, p[j]);
      hi = std::max(hi, p[j]);
    }
    CHECK(lo >= -1.0f);
    CHECK(hi <= 1.0f);
    CHECK(lo < hi);        // not blank
    CHECK(p[0] == 1.0f);   // corner: transparent background composited on white
  }
  CHECK_THROWS_AS(ds.load(ds.size()), Error);
  // Every image of the pinned package version decodes (well under a second), so a bad file would show
  // here rather than in the middle of a training run.
  for (size_t i = 0; i < ds.size(); ++i) {
    const Tensor rgba = read_image(ds.image_path(i), 4);
    REQUIRE(rgba.sizes() == Dims({64, 64, 4}));
  }
}

TEST_CASE("emoji dataset: a missing package says how to install it; a tiny fake package loads") {
  TempDir dir;
  const std::string msg = error_of([&] { EmojiDataset::open(dir.file("absent")); });
  CHECK(msg.find("scripts/setup.sh") != std::string::npos);
  CHECK(msg.find("npm install") != std::string::npos);

  // A fake package: 3 entries, one without an image file, one with has_img_google false.
  fs::create_directories(dir.path / "img" / "google" / "64");
  write_bytes(dir.file("emoji.json"),
              R"([{"name":"ZEBRA FACE","image":"b.png","has_img_google":true},)"
              R"({"name":"MISSING","image":"c.png","has_img_google":true},)"
              R"({"name":"HIDDEN","image":"d.png","has_img_google":false},)"
              R"({"name":"Andorra Flag","image":"a.png","has_img_google":true}])");
  Tensor half_alpha = full({64, 64, 4}, 0.0, opts(DType::u8));  // black at alpha 128
  for (int64_t p = 0; p < 64 * 64; ++p) half_alpha.data<uint8_t>()[p * 4 + 3] = 128;
  write_png(dir.file("img/google/64/a.png"), half_alpha);
  write_png(dir.file("img/google/64/b.png"), pattern(32, 48, 4));  // other size: resized
  write_png(dir.file("img/google/64/d.png"), half_alpha);
  const EmojiDataset ds = EmojiDataset::open(dir.path.string());
  REQUIRE(ds.size() == 2);
  CHECK(ds.caption(0) == "andorra flag");
  CHECK(ds.caption(1) == "zebra face");
  const Tensor a = ds.load(0);
  // 255 * (1 - 128/255) = 127 -> 127 / 127.5 - 1.
  CHECK(a.data<float>()[0] == doctest::Approx(127 / 127.5 - 1.0));
  CHECK(ds.load(1).sizes() == Dims({3, 64, 64}));
  write_bytes(dir.file("emoji.json"), "[{\"name\": ");
  CHECK(error_of([&] { EmojiDataset::open(dir.path.string()); }).find("emoji.json") != std::string::npos);
}

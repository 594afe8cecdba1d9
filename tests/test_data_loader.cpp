// Tests of io::DataLoader (io/dataset.h, io/data_loader.cpp): Note [data order] (every epoch a
// permutation, epochs differ, ranks partition the single-process batch row for row, resume is
// exact), flips, preprocessing, set_resolution, failure handling in the background thread, clean
// shutdown, and the loader's throughput on the emoji set.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "io/dataset.h"
#include "io/image.h"
#include "tensor/error.h"

using namespace engine;
using namespace engine::io;

namespace {

// Sample i is a 4x4 image whose red/green channels spell i (i % 256, i / 256) and whose blue
// channel grows left to right (x * 60), so the loader's output tells the index and the flip.
class Synthetic : public Dataset {
 public:
  explicit Synthetic(size_t n, int64_t h = 4, int64_t w = 4) : n_(n), h_(h), w_(w) {}
  size_t size() const override { return n_; }
  RawSample get(size_t i) const override {
    REQUIRE(i < n_);
    {
      std::lock_guard<std::mutex> lock(mu);
      ++calls[i];
    }
    if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    if (bad.count(i) || all_bad) throw Error("synthetic: sample " + std::to_string(i) + " is broken");
    if (i == logic_error_at) throw std::logic_error("synthetic: a bug, not bad data");
    RawSample s;
    s.image = empty({h_, w_, 3}, opts(DType::u8));
    uint8_t* p = s.image.data<uint8_t>();
    for (int64_t y = 0; y < h_; ++y)
      for (int64_t x = 0; x < w_; ++x) {
        p[(y * w_ + x) * 3 + 0] = uint8_t(i % 256);
        p[(y * w_ + x) * 3 + 1] = uint8_t(i / 256);
        p[(y * w_ + x) * 3 + 2] = uint8_t(x * 60);
      }
    s.caption = "sample " + std::to_string(i);
    s.key = std::to_string(i);
    return s;
  }
  std::string describe() const override { return "synthetic (" + std::to_string(n_) + ")"; }

  std::set<size_t> bad;
  bool all_bad = false;
  size_t logic_error_at = SIZE_MAX;
  int delay_ms = 0;
  mutable std::mutex mu;
  mutable std::map<size_t, int> calls;  // get() calls per index

 private:
  size_t n_;
  int64_t h_, w_;
};

uint8_t to_byte(float v) { return uint8_t(std::lround((double(v) + 1.0) * 127.5)); }

// Index and flip of row j of a batch from Synthetic (images as large as the output).
std::pair<uint64_t, bool> decode_row(const Batch& b, int64_t j) {
  const int64_t plane = b.images.sizes()[2] * b.images.sizes()[3];
  const float* p = b.images.data<float>() + j * 3 * plane;
  const uint64_t idx = uint64_t(to_byte(p[0])) + 256 * uint64_t(to_byte(p[plane]));
  const bool flipped = to_byte(p[2 * plane]) != 0;  // blue at x = 0
  return {idx, flipped};
}

bool same_floats(const Tensor& a, const Tensor& b) {
  if (a.sizes() != b.sizes()) return false;
  return std::equal(a.data<float>(), a.data<float>() + a.numel(), b.data<float>());
}

LoaderOptions small_options(int64_t batch, uint64_t seed = 7) {
  LoaderOptions o;
  o.batch_size = batch;
  o.resolution = 4;
  o.seed = seed;
  o.prefetch = 3;
  return o;
}

}  // namespace

TEST_CASE("data order: every epoch is a permutation, epochs and seeds differ, rows match the images") {
  for (size_t n : {size_t(1), size_t(2), size_t(3), size_t(7), size_t(64), size_t(65), size_t(1000)}) {
    CAPTURE(n);
    auto ds = std::make_shared<Synthetic>(n);
    const int64_t b = 6;
    DataLoader loader(ds, small_options(b));
    std::vector<uint64_t> order;
    const size_t epochs = 3;
    while (order.size() < epochs * n) {
      const Batch batch = loader.next();
      REQUIRE(batch.images.sizes() == Dims{b, 3, 4, 4});
      for (int64_t j = 0; j < b; ++j) {
        CHECK(decode_row(batch, j).first == batch.indices[size_t(j)]);
        CHECK(batch.captions[size_t(j)] == "sample " + std::to_string(batch.indices[size_t(j)]));
        order.push_back(batch.indices[size_t(j)]);
      }
    }
    std::vector<std::vector<uint64_t>> per_epoch;
    for (size_t e = 0; e < epochs; ++e) {
      std::vector<uint64_t> ep(order.begin() + long(e * n), order.begin() + long((e + 1) * n));
      std::vector<uint64_t> sorted = ep;
      std::sort(sorted.begin(), sorted.end());
      for (size_t i = 0; i < n; ++i) REQUIRE(sorted[i] == i);
      per_epoch.push_back(ep);
    }
    if (n >= 7) {
      CHECK(per_epoch[0] != per_epoch[1]);
      CHECK(per_epoch[1] != per_epoch[2]);
      std::vector<uint64_t> identity(n);
      for (size_t i = 0; i < n; ++i) identity[i] = i;
      CHECK(per_epoch[0] != identity);
    }
  }
  // Another seed gives another order; the same seed the same one.
  auto ds = std::make_shared<Synthetic>(500);
  DataLoader a(ds, small_options(50, 1)), b(ds, small_options(50, 1)), c(ds, small_options(50, 2));
  const Batch ba = a.next(), bb = b.next(), bc = c.next();
  CHECK(ba.indices == bb.indices);
  CHECK(same_floats(ba.images, bb.images));
  CHECK(ba.indices != bc.indices);
}

TEST_CASE("data order: ranks 0..W-1 together give the single-process batch of size W*B, row for row") {
  auto ds = std::make_shared<Synthetic>(37);
  const int world = 3;
  const int64_t b = 4;
  LoaderOptions single = small_options(b * world);
  DataLoader whole(ds, single);
  std::vector<std::unique_ptr<DataLoader>> ranks;
  for (int r = 0; r < world; ++r) {
    LoaderOptions o = small_options(b);
    o.rank = r;
    o.world_size = world;
    ranks.push_back(std::make_unique<DataLoader>(ds, o));
  }
  int flips = 0, rows = 0;
  for (uint64_t step = 0; step < 12; ++step) {  // 12 * 12 = 144 samples: several epochs
    const Batch w = whole.next();
    CHECK(w.step == step);
    for (int r = 0; r < world; ++r) {
      const Batch p = ranks[size_t(r)]->next();
      CHECK(p.step == step);
      for (int64_t j = 0; j < b; ++j) {
        const int64_t row = r * b + j;
        CHECK(p.indices[size_t(j)] == w.indices[size_t(row)]);
        CHECK(p.captions[size_t(j)] == w.captions[size_t(row)]);
        CHECK(std::equal(p.images.data<float>() + j * 48, p.images.data<float>() + (j + 1) * 48,
                         w.images.data<float>() + row * 48));
      }
    }
    for (int64_t j = 0; j < b * world; ++j) {
      flips += decode_row(w, j).second ? 1 : 0;
      ++rows;
    }
  }
  // Flips are a fair coin: 144 draws, expect 72 +- 6 (3 sigma ~ 18).
  CHECK(flips > 72 - 24);
  CHECK(flips < 72 + 24);
}

TEST_CASE("data order: start_step resumes exactly; flips depend on the global sample, not the step size") {
  auto ds = std::make_shared<Synthetic>(50);
  DataLoader full(ds, small_options(8));
  std::vector<Batch> all;
  for (int s = 0; s < 12; ++s) all.push_back(full.next());
  LoaderOptions o = small_options(8);
  o.start_step = 5;
  DataLoader resumed(ds, o);
  for (int s = 5; s < 12; ++s) {
    const Batch b = resumed.next();
    CHECK(b.step == uint64_t(s));
    CHECK(b.indices == all[size_t(s)].indices);
    CHECK(same_floats(b.images, all[size_t(s)].images));
  }
  // No flips without the option; the order stays the same.
  LoaderOptions nf = small_options(8);
  nf.flip = false;
  DataLoader noflip(ds, nf);
  for (int s = 0; s < 3; ++s) {
    const Batch b = noflip.next();
    CHECK(b.indices == all[size_t(s)].indices);
    for (int64_t j = 0; j < 8; ++j) CHECK_FALSE(decode_row(b, j).second);
  }
}

TEST_CASE("preprocessing: center crop, resize, [-1, 1], flip mirrors columns") {
  // A 6x10 image: the crop keeps columns 2..7; at resolution 6 no resize happens, so the output
  // is exactly the cropped pixels.
  class Wide : public Dataset {
   public:
    size_t size() const override { return 1; }
    RawSample get(size_t) const override {
      RawSample s;
      s.image = empty({6, 10, 3}, opts(DType::u8));
      uint8_t* p = s.image.data<uint8_t>();
      for (int y = 0; y < 6; ++y)
        for (int x = 0; x < 10; ++x)
          for (int k = 0; k < 3; ++k) p[(y * 10 + x) * 3 + k] = uint8_t(y * 40 + x * 7 + k);
      return s;
    }
    std::string describe() const override { return "wide"; }
  };
  auto ds = std::make_shared<Wide>();
  LoaderOptions o;
  o.batch_size = 8;
  o.resolution = 6;
  o.flip = true;
  DataLoader loader(ds, o);
  const Batch b = loader.next();
  int flipped = 0;
  for (int64_t j = 0; j < 8; ++j) {
    const float* img = b.images.data<float>() + j * 3 * 36;
    // Row j is flipped when its top-left pixel is the crop's top-right one (x = 7).
    const bool flip = to_byte(img[0]) == 7 * 7;
    flipped += flip;
    for (int k = 0; k < 3; ++k)
      for (int y = 0; y < 6; ++y)
        for (int x = 0; x < 6; ++x) {
          const int src_x = 2 + (flip ? 5 - x : x);
          const float want = float(y * 40 + src_x * 7 + k) / 127.5f - 1.0f;
          REQUIRE(img[(k * 6 + y) * 6 + x] == want);
        }
  }
  CHECK(flipped > 0);
  CHECK(flipped < 8);
  // At another resolution the rows are resize_image of the crop (flip off for a direct compare).
  LoaderOptions r = o;
  r.resolution = 3;
  r.flip = false;
  DataLoader small(ds, r);
  const Batch bs = small.next();
  const Tensor want = to_float(resize_image(center_crop_square(ds->get(0).image), 3, 3));
  CHECK(std::equal(want.data<float>(), want.data<float>() + 27, bs.images.data<float>()));
}

TEST_CASE("set_resolution: later batches at the new size, the same samples as a fresh loader") {
  auto ds = std::make_shared<Synthetic>(40, 8, 8);
  LoaderOptions o = small_options(5);
  o.resolution = 8;
  DataLoader loader(ds, o);
  for (int s = 0; s < 3; ++s) CHECK(loader.next().images.sizes() == Dims{5, 3, 8, 8});
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // let the queue fill at size 8
  loader.set_resolution(4);
  CHECK(loader.options().resolution == 4);
  LoaderOptions fresh_o = small_options(5);
  fresh_o.start_step = 3;
  DataLoader fresh(ds, fresh_o);
  for (int s = 3; s < 7; ++s) {
    const Batch b = loader.next(), f = fresh.next();
    CHECK(b.step == uint64_t(s));
    CHECK(b.images.sizes() == Dims{5, 3, 4, 4});
    CHECK(b.indices == f.indices);
    CHECK(same_floats(b.images, f.images));
  }
  loader.set_resolution(4);  // no change: nothing discarded
  CHECK(loader.next().step == 7);
}

TEST_CASE("failures: a broken sample is logged once and replaced by the next index; all broken is an error") {
  auto ds = std::make_shared<Synthetic>(10);
  ds->bad = {3, 4};
  LoaderOptions o = small_options(10);
  o.flip = false;
  DataLoader loader(ds, o);
  for (int s = 0; s < 4; ++s) {
    const Batch b = loader.next();
    std::vector<uint64_t> counts(10, 0);
    for (uint64_t i : b.indices) ++counts[i];
    CHECK(counts[3] == 0);
    CHECK(counts[4] == 0);
    CHECK(counts[5] == 3);  // itself, and standing in for 3 and 4
    for (int64_t j = 0; j < 10; ++j) CHECK(decode_row(b, j).first == b.indices[size_t(j)]);
  }
  {
    // Known-bad samples are tried once (and logged once), not in every epoch.
    std::lock_guard<std::mutex> lock(ds->mu);
    CHECK(ds->calls[3] == 1);
    CHECK(ds->calls[4] == 1);
    CHECK(ds->calls[5] == 1);  // decoded once: later epochs use the prepared-sample cache
  }

  auto none = std::make_shared<Synthetic>(5);
  none->all_bad = true;
  DataLoader broken(none, small_options(2));
  std::string msg;
  try {
    broken.next();
  } catch (const Error& e) {
    msg = e.what();
  }
  CHECK(msg.find("none of the 5 samples of synthetic (5) can be decoded") != std::string::npos);
  CHECK(msg.find("is broken") != std::string::npos);
  CHECK_THROWS_AS(broken.next(), Error);  // stays failed

  // Exceptions that are not bad data reach next() as they are.
  auto buggy = std::make_shared<Synthetic>(3);
  buggy->logic_error_at = 0;
  buggy->bad = {1, 2};
  DataLoader bug(buggy, small_options(3));
  CHECK_THROWS_AS(bug.next(), std::logic_error);
}

TEST_CASE("a set too large for the prepared-sample cache decodes every time, with the same results") {
  // 2^21 samples of 8x8 at 8 px would be 384 MiB prepared: over the 256 MiB cache budget.
  auto ds = std::make_shared<Synthetic>(size_t(1) << 21, 8, 8);
  ds->bad = {};
  LoaderOptions o = small_options(64);
  o.resolution = 8;
  DataLoader loader(ds, o);
  std::set<uint64_t> seen;
  for (int s = 0; s < 3; ++s) {
    const Batch b = loader.next();
    for (int64_t j = 0; j < 64; ++j) {
      const uint64_t idx = b.indices[size_t(j)];
      CHECK(decode_row(b, j).first == idx % 65536);  // the pixels spell the low 16 bits
      CHECK(b.captions[size_t(j)] == "sample " + std::to_string(idx));
      seen.insert(idx);
    }
  }
  CHECK(seen.size() == 3 * 64);  // one epoch: no repeats
  // The same samples again (another loader, resumed at step 1): decoded again, not cached.
  LoaderOptions r = o;
  r.start_step = 1;
  DataLoader again(ds, r);
  const Batch b = again.next();
  std::lock_guard<std::mutex> lock(ds->mu);
  for (int64_t j = 0; j < 64; ++j) CHECK(ds->calls[b.indices[size_t(j)]] == 2);
}

TEST_CASE("shutdown: destroying a loader with a slow dataset and a full queue does not hang") {
  auto ds = std::make_shared<Synthetic>(100);
  ds->delay_ms = 20;
  const auto t0 = std::chrono::steady_clock::now();
  {
    LoaderOptions o = small_options(16);
    o.prefetch = 4;
    DataLoader loader(ds, o);
    loader.next();  // 16 samples, 0.3 s; then the worker is inside the next batch
  }
  {
    DataLoader untouched(ds, small_options(16));  // never asked for a batch
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(secs < 2.0);  // one batch is 0.32 s; an unstoppable worker would need > 2.5 s more
  CHECK_THROWS_AS(DataLoader(ds, [] { LoaderOptions o; o.rank = 2; o.world_size = 2; return o; }()), Error);
  CHECK_THROWS_AS(DataLoader(nullptr, LoaderOptions{}), Error);
}

TEST_CASE("throughput on the emoji set (1 background thread) at 16 and 32 px") {
  const std::string root = std::string(ENGINE_SOURCE_DIR) + "/third_party/emoji";
  if (!std::filesystem::exists(root)) {
    FAIL("third_party/emoji is missing: run `bash scripts/setup.sh` (installs emoji-datasource-google)");
    return;
  }
  auto ds = open_dataset("emoji:" + root);
  const int64_t batch = 32;
  const int steps = int((ds->size() + batch - 1) / batch);  // one epoch
  for (int64_t res : {16, 32}) {
    LoaderOptions o;
    o.batch_size = batch;
    o.resolution = res;
    DataLoader loader(ds, o);
    // The first epoch decodes every PNG; later ones come from the loader's prepared-sample cache.
    double rate[2];
    for (int epoch = 0; epoch < 2; ++epoch) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int s = 0; s < steps; ++s) {
        const Batch b = loader.next();
        REQUIRE(b.images.sizes() == Dims{batch, 3, res, res});
      }
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      rate[epoch] = steps * batch / secs;
    }
    MESSAGE("emoji loader at " << res << " px, 1 background thread: " << int(rate[0])
                               << " images/s decoding (first epoch), " << int(rate[1]) << " images/s cached (second)");
    CHECK(rate[0] > 300);  // a tiny preset trains at a few hundred images/s on 2 cores
    CHECK(rate[1] > rate[0]);
  }
}

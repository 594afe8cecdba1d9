// data_loader.cpp: the DataLoader of io/dataset.h: sample order (Note [data order]),
// preprocessing (center crop, stb resize, [-1, 1], flip) and the background prefetch thread
// (DESIGN.md sections 10 and 11).
//
// Note [data order], implementation. The permutation of epoch e is a balanced Feistel network
// on 2h bits (4^h >= N, the smallest such h) with six rounds whose round function is Philox4x32-10
// keyed by the seed, counter (round << 32 | right half, purpose "order" << 56 | e); a Feistel
// network is a bijection of [0, 4^h) whatever its round function, and cycle-walking (apply it
// again while the result is >= N) restricts it to a bijection of [0, N) (Black and Rogaway,
// "Ciphers with arbitrary finite domains", 2002). Since 4^h < 4N, a walk takes fewer than four
// steps on average. The flip of global sample g is bit 0 of Philox(seed; g, purpose "flip" << 56).
// The purpose byte keeps these streams apart from tensor draws (tensor/kernels/philox.h uses
// counter_hi = 0). Everything is a pure function of (seed, epoch, g): no state to checkpoint
// besides the step.
//
// Threading: one worker produces batches for consecutive steps into a bounded queue
// (options.prefetch). set_resolution bumps a generation number and rewinds the worker to the
// consumer's step; a batch finished under an old generation is dropped. The destructor raises
// `stop`, which the worker checks between samples, so it never waits for more than one decode.
// Small sets are prepared (decoded, cropped, resized) once per resolution and cached by the
// worker; the cache changes nothing in the output, only how often get() runs.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <iostream>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_set>

#include "io/dataset.h"
#include "io/image.h"
#include "tensor/error.h"
#include "tensor/kernels/philox.h"

namespace engine::io {
namespace {

constexpr uint64_t kPurposeOrder = 0x4f;  // 'O'
constexpr uint64_t kPurposeFlip = 0x46;   // 'F'
constexpr int kFeistelRounds = 6;

// The bijection of [0, n) for one (seed, epoch).
class EpochPermutation {
 public:
  EpochPermutation(uint64_t n, uint64_t seed, uint64_t epoch) : n_(n), seed_(seed) {
    ENGINE_CHECK(epoch < (1ull << 56), "DataLoader: epoch {} is beyond the order stream's range", epoch);
    counter_hi_ = (kPurposeOrder << 56) | epoch;
    half_ = 1;
    while (half_ < 32 && (uint64_t(1) << (2 * half_)) < n) ++half_;
    mask_ = (uint64_t(1) << half_) - 1;
  }
  uint64_t operator()(uint64_t p) const {
    if (n_ <= 1) return 0;
    uint64_t x = p;
    do x = feistel(x);
    while (x >= n_);
    return x;
  }

 private:
  uint64_t feistel(uint64_t x) const {
    uint64_t left = x >> half_, right = x & mask_;
    for (int r = 0; r < kFeistelRounds; ++r) {
      const uint64_t f = kernels::philox4x32_10((uint64_t(r) << 32) | right, counter_hi_, seed_).v[0] & mask_;
      const uint64_t next_right = left ^ f;
      left = right;
      right = next_right;
    }
    return (left << half_) | right;
  }
  uint64_t n_, seed_, counter_hi_ = 0, mask_ = 0;
  int half_ = 1;
};

bool flip_of(uint64_t seed, uint64_t g) {
  return (kernels::philox4x32_10(g, kPurposeFlip << 56, seed).v[0] & 1u) != 0;
}

struct Stopped {};  // thrown inside the worker to abandon a batch at shutdown

}  // namespace

struct DataLoader::State {
  std::shared_ptr<Dataset> dataset;
  LoaderOptions options;
  uint64_t n = 0;

  std::mutex mu;
  std::condition_variable producer_cv, consumer_cv;
  std::deque<Batch> ready;  // batches for consume_step, consume_step + 1, ...
  uint64_t produce_step = 0, consume_step = 0;
  int64_t resolution = 0;
  uint64_t generation = 0;
  std::exception_ptr error;  // the failure of batch consume_step + ready.size(), if any
  std::atomic<bool> stop{false};
  std::thread worker;

  // Worker-only: indices whose decoding failed (logged once, then skipped without retrying),
  // and the preprocessed (cropped, resized, unflipped) samples at cache_res, kept when all of
  // them fit in kCacheBytes: a small set like the emoji one is then decoded once per resolution,
  // and later epochs cost only the flip and the conversion to float.
  std::unordered_set<uint64_t> bad;
  struct Prepared {
    Tensor image;  // u8 [R, R, 3]
    std::string caption;
  };
  std::vector<Prepared> cache;
  int64_t cache_res = 0;
  Prepared scratch;

  void run();
  Batch make_batch(uint64_t step, int64_t res);
  // Sample `index` prepared at `res`, or the first decodable one after it (cyclically); `used`
  // is the index actually used.
  const Prepared& prepared(uint64_t index, int64_t res, uint64_t& used);
};

// Cache budget: 1911 emoji at 64 px are 23 MB.
constexpr uint64_t kCacheBytes = 256ull << 20;

const DataLoader::State::Prepared& DataLoader::State::prepared(uint64_t index, int64_t res, uint64_t& used) {
  const bool caching = n * uint64_t(res) * uint64_t(res) * 3 <= kCacheBytes;
  if (caching && cache_res != res) {
    cache.assign(size_t(n), Prepared{});
    cache_res = res;
  } else if (!caching && cache_res != 0) {
    cache = {};  // grown past the budget: free the smaller resolution's samples
    cache_res = 0;
  }
  std::string first_error;
  for (uint64_t attempt = 0; attempt < n; ++attempt) {
    const uint64_t i = (index + attempt) % n;
    if (bad.count(i)) continue;
    if (caching && cache[size_t(i)].image.defined()) {
      used = i;
      return cache[size_t(i)];
    }
    try {
      RawSample s = dataset->get(size_t(i));
      ENGINE_CHECK(s.image.defined() && s.image.dim() == 3 && s.image.sizes()[2] == 3 &&
                       s.image.dtype() == DType::u8 && s.image.sizes()[0] > 0 && s.image.sizes()[1] > 0,
                   "DataLoader: sample {} of {} is not a u8 [H, W, 3] image", i, dataset->describe());
      Tensor img = center_crop_square(s.image);
      if (img.sizes()[0] != res) img = resize_image(img, res, res);
      Prepared& slot = caching ? cache[size_t(i)] : scratch;
      slot.image = img;
      slot.caption = std::move(s.caption);
      used = i;
      return slot;
    } catch (const Error& e) {
      bad.insert(i);
      if (first_error.empty()) first_error = e.what();
      std::cerr << fmt::format("DataLoader: skipping sample {} of {}: {} (the next index replaces it)\n", i,
                               dataset->describe(), e.what());
    }
    if (stop.load(std::memory_order_relaxed)) throw Stopped{};
  }
  throw Error(fmt::format("DataLoader: none of the {} samples of {} can be decoded{}{}", n, dataset->describe(),
                          first_error.empty() ? "" : "; first error: ", first_error));
}

Batch DataLoader::State::make_batch(uint64_t step, int64_t res) {
  const int64_t b = options.batch_size;
  const uint64_t world = uint64_t(options.world_size), rank = uint64_t(options.rank);
  Batch batch;
  batch.step = step;
  batch.images = empty({b, 3, res, res}, opts(DType::f32));
  batch.captions.resize(size_t(b));
  batch.indices.resize(size_t(b));
  float* out = batch.images.data<float>();
  const uint64_t first = step * world * uint64_t(b) + rank * uint64_t(b);
  uint64_t perm_epoch = UINT64_MAX;
  std::optional<EpochPermutation> perm;
  for (int64_t j = 0; j < b; ++j) {
    if (stop.load(std::memory_order_relaxed)) throw Stopped{};
    const uint64_t g = first + uint64_t(j);
    const uint64_t epoch = g / n, pos = g % n;
    if (epoch != perm_epoch) {
      perm.emplace(n, options.seed, epoch);
      perm_epoch = epoch;
    }
    uint64_t used = 0;
    const Prepared& s = prepared((*perm)(pos), res, used);
    const bool flip = options.flip && flip_of(options.seed, g);
    const uint8_t* in = s.image.data<uint8_t>();
    float* o = out + j * 3 * res * res;
    for (int64_t y = 0; y < res; ++y)
      for (int64_t x = 0; x < res; ++x) {
        const uint8_t* px = in + (y * res + (flip ? res - 1 - x : x)) * 3;
        for (int64_t k = 0; k < 3; ++k) o[(k * res + y) * res + x] = float(px[k]) / 127.5f - 1.0f;
      }
    batch.captions[size_t(j)] = s.caption;
    batch.indices[size_t(j)] = used;
  }
  return batch;
}

void DataLoader::State::run() {
  std::unique_lock<std::mutex> lock(mu);
  for (;;) {
    producer_cv.wait(lock, [&] {
      return stop.load() || (!error && int64_t(ready.size()) < options.prefetch);
    });
    if (stop.load()) return;
    const uint64_t step = produce_step++;
    const int64_t res = resolution;
    const uint64_t gen = generation;
    lock.unlock();
    Batch batch;
    std::exception_ptr failure;
    try {
      batch = make_batch(step, res);
    } catch (const Stopped&) {
      return;
    } catch (...) {
      failure = std::current_exception();
    }
    lock.lock();
    if (stop.load()) return;
    if (gen != generation) continue;  // set_resolution rewound produce_step meanwhile
    if (failure)
      error = failure;
    else
      ready.push_back(std::move(batch));
    consumer_cv.notify_all();
  }
}

DataLoader::DataLoader(std::shared_ptr<Dataset> dataset, LoaderOptions options)
    : dataset_(std::move(dataset)), options_(options), state_(std::make_unique<State>()) {
  ENGINE_CHECK(dataset_ != nullptr, "DataLoader: no dataset");
  ENGINE_CHECK(dataset_->size() > 0, "DataLoader: dataset {} is empty", dataset_->describe());
  ENGINE_CHECK(options_.batch_size >= 1, "DataLoader: batch_size must be >= 1, got {}", options_.batch_size);
  ENGINE_CHECK(options_.resolution >= 1, "DataLoader: resolution must be >= 1, got {}", options_.resolution);
  ENGINE_CHECK(options_.world_size >= 1 && options_.rank >= 0 && options_.rank < options_.world_size,
               "DataLoader: rank {} is not in [0, world_size {})", options_.rank, options_.world_size);
  ENGINE_CHECK(options_.prefetch >= 1, "DataLoader: prefetch must be >= 1, got {}", options_.prefetch);
  State& s = *state_;
  s.dataset = dataset_;
  s.options = options_;
  s.n = dataset_->size();
  s.produce_step = s.consume_step = options_.start_step;
  s.resolution = options_.resolution;
  s.worker = std::thread([&s] { s.run(); });
}

DataLoader::~DataLoader() {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->stop.store(true);
  }
  state_->producer_cv.notify_all();
  if (state_->worker.joinable()) state_->worker.join();
}

Batch DataLoader::next() {
  State& s = *state_;
  std::unique_lock<std::mutex> lock(s.mu);
  s.consumer_cv.wait(lock, [&] { return !s.ready.empty() || s.error; });
  if (s.ready.empty()) std::rethrow_exception(s.error);  // stays set: later calls fail the same way
  Batch batch = std::move(s.ready.front());
  s.ready.pop_front();
  ++s.consume_step;
  s.producer_cv.notify_all();
  return batch;
}

void DataLoader::set_resolution(int64_t resolution) {
  ENGINE_CHECK(resolution >= 1, "DataLoader: resolution must be >= 1, got {}", resolution);
  State& s = *state_;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (resolution == s.resolution) return;
    s.resolution = resolution;
    ++s.generation;
    s.ready.clear();
    s.produce_step = s.consume_step;
    s.error = nullptr;  // a failure at the old size is retried at the new one
  }
  options_.resolution = resolution;
  s.producer_cv.notify_all();
}

}  // namespace engine::io

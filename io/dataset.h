// dataset.h: training data as (image, caption) pairs, and the loader that turns them into batches
// (DESIGN.md section 11; docs/eval-data-formats.md sections 4 and 5).
//
// Three sources, one interface (map-style: size() and get(i), so the sample order is a pure
// function of (seed, epoch, global sample index) and a resumed or re-sharded run sees the same
// data):
//   emoji            the built-in default: io/emoji_dataset.h (npm emoji-datasource-google)
//   folder:PATH      an image folder; each image may have a caption sidecar with the same stem
//                    (photo.jpg + photo.txt); images without one get an empty caption
//   wds:PATTERN      WebDataset tar shards as img2dataset writes them (KEY.jpg|png|webp +
//                    KEY.txt + KEY.json), PATTERN a path, a brace range "shard-{000..009}.tar" or
//                    a folder of *.tar. The shards are read once by a streaming tar reader that
//                    indexes member offsets; corrupt or truncated members are logged and skipped.
// open_dataset() takes one of these specs (a bare directory means folder:, a *.tar path wds:).
//
// Sample order (Note [data order]): global sample g (0, 1, 2, ... over the whole run) is
//   epoch e = g / N, position p = g % N, index = permute(p; seed, e)
// where permute is a counter-based bijection of [0, N) (no stored permutation), and the flip of
// sample g is a Philox draw keyed by (seed, g). With W ranks and per-rank batch B, step s of rank
// r uses g = s*W*B + r*B + [0, B): the union over ranks is the single-process batch of size W*B,
// so results do not depend on the rank count (DESIGN.md section 10).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace engine::io {

struct RawSample {
  Tensor image;         // u8 [H, W, 3] (RGB; alpha composited over white)
  std::string caption;  // may be empty
  std::string key;      // file name or WebDataset key, for messages
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual size_t size() const = 0;
  // Decode sample i. Throws engine::Error naming the file/member when it cannot be decoded
  // (the loader logs it and substitutes the next sample).
  virtual RawSample get(size_t i) const = 0;
  virtual std::string describe() const = 0;  // "emoji (1911 images, third_party/emoji)"
};

// "emoji", "emoji:ROOT", "folder:PATH", "wds:PATTERN", or a directory / *.tar path. Throws
// engine::Error naming the spec when it is malformed, missing or empty.
std::shared_ptr<Dataset> open_dataset(const std::string& spec);

struct LoaderOptions {
  int64_t batch_size = 16;   // per rank
  int64_t resolution = 64;   // output side; center crop to square, then resize (stb, high quality)
  bool flip = true;          // random horizontal flip (Philox keyed by the global sample index)
  uint64_t seed = 0;
  int rank = 0, world_size = 1;
  uint64_t start_step = 0;   // resume: the first batch produced is this step's
  int64_t prefetch = 4;      // batches decoded ahead by the background thread
};

struct Batch {
  Tensor images;                      // f32 [B, 3, R, R] in [-1, 1], CPU
  std::vector<std::string> captions;  // B
  std::vector<uint64_t> indices;      // dataset index of each row
  uint64_t step = 0;                  // which step this batch is for
};

// A background thread decodes and resizes batches ahead of the training step, so the step never
// waits on decoding (unless decoding is slower than training). Destruction stops the thread.
class DataLoader {
 public:
  DataLoader(std::shared_ptr<Dataset> dataset, LoaderOptions options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  Batch next();  // the next step's batch
  // Progressive growing: batches for steps >= the next one produced are at `resolution`
  // (prefetched batches at the old resolution are discarded and redone).
  void set_resolution(int64_t resolution);
  const LoaderOptions& options() const { return options_; }
  const Dataset& dataset() const { return *dataset_; }

 private:
  struct State;
  std::shared_ptr<Dataset> dataset_;
  LoaderOptions options_;
  std::unique_ptr<State> state_;
};

}  // namespace engine::io

// chunks.h (cuda): how the two-launch reductions (reduce.cu, softmax.cu, norm.cu) cut their units
// into chunks, and the index arithmetic of both launches, in one place.
//
// A chunked reduction has n_units independent units (outputs, softmax lines, normalised rows) of
// len elements each. The first launch runs one thread per (unit, chunk); thread i folds the
// elements chunk_span(ch, i) of its unit and writes its partial to part[i]. The second launch
// runs one thread per unit, which folds that unit's partials in chunk order (combine_chunks):
// the result depends only on the shapes and the chunking, never on the launch configuration.
//
// Two layouts (plan_chunks picks one from the shapes and strides only):
// - interleaved, for units whose elements are adjacent in memory (a reduction over the innermost,
//   contiguous dim): chunk c of a unit folds its elements c, c + C, c + 2C, ... (C = n_chunks) and
//   thread i = u * C + c, chunks fastest. At every step of the fold, neighbouring threads read
//   neighbouring addresses: a warp's loads coalesce (with C = 32 one warp reads 32 consecutive
//   elements of one row per step; with smaller C it reads runs of C consecutive elements, 32 / C
//   rows at a time). The partials of a unit are adjacent: part[u * C + c].
// - blocked, for strided units: chunk c holds the elements [c * chunk_len, (c + 1) * chunk_len)
//   and thread i = c * n_units + u, units fastest, so neighbouring threads work on neighbouring
//   units (coalesced when the kept dims are the contiguous ones). part[c * n_units + u].
//
// Plain types only (nvcc-safe): the *_launch.h headers carry Chunks to the host side.
#pragma once
#include <cstdint>

#include "tensor/kernels/common.h"

namespace engine::cuda {

struct Chunks {
  int64_t n_units = 0;       // independent reductions
  int64_t len = 0;           // elements per unit
  int64_t n_chunks = 1;      // chunks per unit (1: one thread folds a whole unit, no second launch)
  int64_t chunk_len = 0;     // blocked: elements per chunk (the last may be shorter)
  bool interleaved = false;  // the layout (see above)
};

// Interleaved chunking: at least kMinPerChunk elements per chunk (shorter units take fewer
// chunks, so the partials never outweigh the data: with fewer than 2 * kMinPerChunk elements one
// thread folds the unit), at most kChunkLen (long units take a multiple of 32 chunks).
// Blocked chunking (strided units): units longer than kChunkLen, fewer than kFewUnits of them
// (many units already give many threads).
constexpr int64_t kChunkWarp = 32;
constexpr int64_t kMinPerChunk = 4;
constexpr int64_t kChunkLen = 4096;
constexpr int64_t kFewUnits = 16384;

// The chunking of n_units reductions of len elements; contiguous: each unit's elements are
// adjacent in memory (stride 1). A function of these three values only.
inline Chunks plan_chunks(int64_t n_units, int64_t len, bool contiguous) {
  Chunks ch{n_units, len, 1, len, false};
  if (contiguous) {
    int64_t c = kChunkWarp;
    if (len > kChunkWarp * kChunkLen)
      c = kChunkWarp * ((len + kChunkWarp * kChunkLen - 1) / (kChunkWarp * kChunkLen));
    else
      while (c > 1 && c * kMinPerChunk > len) c /= 2;
    if (c > 1) {
      ch.n_chunks = c;
      ch.chunk_len = (len + c - 1) / c;  // informational: the longest chunk
      ch.interleaved = true;
    }
  } else if (len > kChunkLen && n_units < kFewUnits) {
    ch.n_chunks = (len + kChunkLen - 1) / kChunkLen;
    ch.chunk_len = kChunkLen;
  }
  return ch;
}

// The elements begin, begin + step, ... (< end) of unit `unit` that thread i of the first launch
// folds.
struct ChunkSpan {
  int64_t unit, begin, end, step;
};

ENGINE_HD ChunkSpan chunk_span(const Chunks& ch, int64_t i) {
  if (ch.interleaved) return {i / ch.n_chunks, i % ch.n_chunks, ch.len, ch.n_chunks};
  const int64_t c = i / ch.n_units, u = i % ch.n_units;
  const int64_t begin = c * ch.chunk_len;
  return {u, begin, begin + ch.chunk_len < ch.len ? begin + ch.chunk_len : ch.len, 1};
}

// Where the first launch left the partial of chunk c of unit u.
ENGINE_HD int64_t chunk_slot(const Chunks& ch, int64_t u, int64_t c) {
  return ch.interleaved ? u * ch.n_chunks + c : c * ch.n_units + u;
}

// Unit u's partials folded by op in chunk order, starting from the first chunk's partial
// (n_chunks >= 1).
template <typename A, typename Op>
ENGINE_HD A combine_chunks(const Chunks& ch, const A* part, int64_t u, const Op& op) {
  A acc = part[chunk_slot(ch, u, 0)];
  for (int64_t c = 1; c < ch.n_chunks; ++c) acc = op(acc, part[chunk_slot(ch, u, c)]);
  return acc;
}

}  // namespace engine::cuda

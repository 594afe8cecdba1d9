// chunks.h (cuda): the index arithmetic of the chunked two-launch reductions (reduce.cu,
// softmax.cu, norm.cu), in one place.
//
// A chunked reduction has n_units independent units (outputs, softmax lines, normalised rows) of
// len elements each. The first launch runs one thread per (chunk, unit); thread i folds the
// elements chunk_span(ch, i) of its unit and writes its partial to part[i]. The second launch
// runs one thread per unit, which folds that unit's partials in chunk order (combine_chunks):
// the result depends only on the shapes and the chunking, never on the launch configuration.
//
// Blocked layout: chunk c of a unit holds its elements [c * chunk_len, (c + 1) * chunk_len);
// thread i = c * n_units + u (units fastest), so neighbouring threads work on neighbouring units.
//
// Plain types only (nvcc-safe): the *_launch.h headers carry Chunks to the host side.
#pragma once
#include <cstdint>

#include "tensor/kernels/common.h"

namespace engine::cuda {

struct Chunks {
  int64_t n_units = 0;    // independent reductions
  int64_t len = 0;        // elements per unit
  int64_t n_chunks = 1;   // chunks per unit
  int64_t chunk_len = 0;  // elements per chunk (the last may be shorter)
};

// The elements [begin, end) of unit `unit` that thread i of the first launch folds.
struct ChunkSpan {
  int64_t unit, begin, end;
};

ENGINE_HD ChunkSpan chunk_span(const Chunks& ch, int64_t i) {
  const int64_t c = i / ch.n_units, u = i % ch.n_units;
  const int64_t begin = c * ch.chunk_len;
  return {u, begin, begin + ch.chunk_len < ch.len ? begin + ch.chunk_len : ch.len};
}

// Unit u's partials (part[i] of the first launch) folded by op in chunk order, starting from
// the first chunk's partial (n_chunks >= 1).
template <typename A, typename Op>
ENGINE_HD A combine_chunks(const Chunks& ch, const A* part, int64_t u, const Op& op) {
  A acc = part[u];
  for (int64_t c = 1; c < ch.n_chunks; ++c) acc = op(acc, part[c * ch.n_units + u]);
  return acc;
}

}  // namespace engine::cuda

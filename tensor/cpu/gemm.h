// gemm.h (cpu): the one place the CPU backend calls BLAS (OpenBLAS cblas_sgemm / cblas_dgemm).
//
//   C[m, n] = alpha * op(A)[m, k] op(B)[k, n] + beta * C        (row-major, leading dimensions)
//
// op(A) = A when A is stored [m, k] with row stride lda, or A^T when A is stored [k, m] (trans_a):
// a transposed view reaches BLAS as a transpose flag, never as a copy.
//
// Threading: one pool. The engine parallelises with OpenMP everywhere (elementwise loops, im2col,
// ...). If OpenBLAS also ran its own pthread pool, the two pools would alternate on the same cores
// and each would spin while the other works (on 2 cores this costs more than the GEMM itself). So
// every BLAS call here runs on the calling thread (OpenBLAS is set to one thread on first use),
// and GEMMs are spread over OpenMP threads by the engine: a batch of independent GEMMs (batched
// matmul, conv per sample and group) runs as tasks, and a large GEMM is cut into tiles of C.
// The tiling depends only on the sizes, never on the thread count, and every element of C is
// produced by exactly one BLAS call over the full k, so results do not depend on the thread count.
#pragma once
#include <omp.h>

#include <cstdint>

namespace engine::cpu {

// One BLAS call on the calling thread (safe inside OpenMP loops for shapes the caller checked).
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
          int64_t ldb, T beta, T* c, int64_t ldc);

// Keep OpenBLAS on one thread per call (see above). Idempotent and cheap (one read when already
// set); gemm() and the launchers below call it.
void blas_single_thread();

// The arguments of one GEMM, so that a batch of them can be tiled and scheduled together.
template <typename T>
struct GemmCall {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  T alpha = T(1);
  const T* a = nullptr;
  int64_t lda = 0;
  const T* b = nullptr;
  int64_t ldb = 0;
  T beta = T(0);
  T* c = nullptr;
  int64_t ldc = 0;
};

// Tiles of C for `items` GEMMs of one size: tile_m x tile_n blocks (edge tiles smaller).
struct GemmTiling {
  int64_t tile_m = 0, tile_n = 0, tiles_m = 1, tiles_n = 1;
  int64_t count() const { return tiles_m * tiles_n; }
};
// Halve the longer side of the tile while there are fewer than 16 tasks in total and a tile keeps
// at least ~1M multiply-adds and 32 rows/columns: enough tasks to balance up to 16 threads,
// tiles large enough that BLAS's packing stays cheap. Depends only on the sizes.
GemmTiling plan_gemm_tiles(int64_t m, int64_t n, int64_t k, int64_t items);

// Whether `tasks` independent GEMMs of one size should run as whole tasks (one per thread at a
// time) rather than one after another with each GEMM tiled: when there are enough of them to
// fill the threads, or when each is too small to tile. Depends only on the sizes.
inline bool run_as_tasks(int64_t tasks, int64_t m, int64_t n, int64_t k) {
  return tasks >= 8 || plan_gemm_tiles(m, n, k, tasks).count() == 1;
}

// Rows [r0, r0 + rm) x columns [c0, c0 + cn) of C of one call.
template <typename T>
void gemm_tile(const GemmCall<T>& g, int64_t r0, int64_t rm, int64_t c0, int64_t cn) {
  // Row r of op(A) is row r of A, or column r of a transposed A; column c of op(B) likewise.
  const T* a = g.trans_a ? g.a + r0 : g.a + r0 * g.lda;
  const T* b = g.trans_b ? g.b + c0 * g.ldb : g.b + c0;
  gemm<T>(g.trans_a, g.trans_b, rm, cn, g.k, g.alpha, a, g.lda, b, g.ldb, g.beta, g.c + r0 * g.ldc + c0, g.ldc);
}

// Below this many multiply-adds in total a parallel region costs more than it saves.
constexpr double kGemmParallelMacs = 131072.0;

// Run `count` GEMMs of the same m, n, k: call_of(i) gives the i-th. All (GEMM, tile) tasks run in
// one OpenMP loop, handed out one at a time (dynamic schedule: a thread that finishes early, or
// that the OS did not preempt, takes the next task; which thread runs a task never changes its
// result). Call outside parallel regions.
template <typename T, typename CallOf>
void gemm_batch(int64_t count, int64_t m, int64_t n, int64_t k, CallOf&& call_of) {
  if (count <= 0 || m <= 0 || n <= 0) return;
  blas_single_thread();
  const GemmTiling t = plan_gemm_tiles(m, n, k, count);
  const int64_t per = t.count(), tasks = count * per;
  const bool parallel = tasks > 1 && double(count) * double(m) * double(n) * double(k) >= kGemmParallelMacs;
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
  for (int64_t task = 0; task < tasks; ++task) {
    const GemmCall<T> g = call_of(task / per);
    const int64_t tile = task % per, bm = tile / t.tiles_n, bn = tile % t.tiles_n;
    const int64_t r0 = bm * t.tile_m, c0 = bn * t.tile_n;
    const int64_t rm = r0 + t.tile_m < m ? t.tile_m : m - r0, cn = c0 + t.tile_n < n ? t.tile_n : n - c0;
    gemm_tile(g, r0, rm, c0, cn);
  }
}
template <typename T>
void gemm_parallel(const GemmCall<T>& g) {
  gemm_batch<T>(1, g.m, g.n, g.k, [&](int64_t) { return g; });
}

// Run item(i, slot) for i in [0, count): in parallel over OpenMP threads when `parallel` (slot is
// the thread number, in [0, max_slots()), for per-thread scratch buffers; items are handed out
// one at a time as above), else in order with slot 0. Each item must write a disjoint part of
// the output.
inline int max_slots() { return omp_get_max_threads(); }
template <typename F>
void for_each_item(int64_t count, bool parallel, F&& item) {
  if (parallel && count > 1 && omp_get_max_threads() > 1) {
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < count; ++i) item(i, omp_get_thread_num());
  } else {
    for (int64_t i = 0; i < count; ++i) item(i, 0);
  }
}
// Whether `count` items of m*n*k multiply-adds each are worth a parallel region.
inline bool items_parallel(int64_t count, int64_t m, int64_t n, int64_t k) {
  return count > 1 && double(count) * double(m) * double(n) * double(k) >= kGemmParallelMacs;
}

}  // namespace engine::cpu

// gemm.h (cpu): the one place the CPU backend calls BLAS (OpenBLAS cblas_sgemm / cblas_dgemm).
//
//   C[m, n] = alpha * op(A)[m, k] op(B)[k, n] + beta * C        (row-major, leading dimensions)
//
// op(A) = A when A is stored [m, k] with row stride lda, or A^T when A is stored [k, m] (trans_a):
// a transposed view reaches BLAS as a transpose flag, never as a copy.
//
// Threading. OpenBLAS (the pthread build Debian ships) runs a GEMM on one thread when
// m*n*k <= 65536 * 4, and on its own thread pool above that; concurrent multi-threaded calls are
// serialised inside OpenBLAS. So for many independent GEMMs (batched matmul, conv per sample and
// group) we parallelise over the GEMMs with OpenMP when each one is small, and run them one after
// another (each using BLAS's threads) when they are large: for_each_gemm below. Either way every
// output element is produced by exactly one GEMM call, so results do not depend on the thread count.
#pragma once
#include <omp.h>

#include <cstdint>

namespace engine::cpu {

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
          int64_t ldb, T beta, T* c, int64_t ldc);

// True when OpenBLAS would run a GEMM of this size on a single thread.
inline bool gemm_is_small(int64_t m, int64_t n, int64_t k) {
  return double(m) * double(n) * double(k) <= 65536.0 * 4.0;
}

// Whether `count` independent GEMMs of this size should be spread over OpenMP threads: each one
// small enough that BLAS keeps it on one thread, and enough work in total (multiply-adds) to pay
// for a parallel region (a few microseconds, far more on a loaded machine).
constexpr double kGemmParallelMacs = 131072.0;
inline bool gemm_items_parallel(int64_t count, int64_t m, int64_t n, int64_t k) {
  return count > 1 && gemm_is_small(m, n, k) && double(count) * double(m) * double(n) * double(k) >= kGemmParallelMacs;
}

// Run item(i, slot) for i in [0, count): in parallel over OpenMP threads when `parallel` (slot is
// the thread number, in [0, max_slots()), for per-thread scratch buffers), else in order with
// slot 0. Each item must write a disjoint part of the output.
inline int max_slots() { return omp_get_max_threads(); }
template <typename F>
void for_each_item(int64_t count, bool parallel, F&& item) {
  if (parallel && count > 1 && omp_get_max_threads() > 1) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < count; ++i) item(i, omp_get_thread_num());
  } else {
    for (int64_t i = 0; i < count; ++i) item(i, 0);
  }
}

}  // namespace engine::cpu

// gemm.cpp (cpu): the OpenBLAS wrapper and the GEMM tiling declared in gemm.h. OpenBLAS takes
// 32-bit sizes (blasint), so larger problems are rejected with an error naming the sizes instead
// of overflowing.
#include "tensor/cpu/gemm.h"

#include <cblas.h>

#include <algorithm>
#include <limits>

#include "tensor/error.h"

namespace engine::cpu {

namespace {

void check_sizes(int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc) {
  const int64_t lim = std::numeric_limits<blasint>::max();
  ENGINE_CHECK(m <= lim && n <= lim && k <= lim && lda <= lim && ldb <= lim && ldc <= lim,
               "gemm: sizes m={} n={} k={} (lda={} ldb={} ldc={}) exceed OpenBLAS's 32-bit limit", m, n, k, lda, ldb,
               ldc);
}

// Row-major BLAS requires ld >= max(1, columns of the stored matrix). When the matrix has one row
// the stride is never used, and views may carry any value there (a size-1 dim's stride is free):
// normalise it so BLAS accepts the call. It may throw, so callers inside OpenMP loops pass only
// shapes they have checked.
int64_t fix_ld(int64_t ld, int64_t rows, int64_t cols) {
  if (rows <= 1) return std::max<int64_t>(cols, 1);
  ENGINE_CHECK(ld >= cols, "gemm: leading dimension {} below the row length {} (a broadcast operand must be "
               "materialised first)", ld, cols);
  return ld;
}

// k == 0: the product is empty and C = beta C (with beta = 0 meaning "overwrite", as in BLAS).
template <typename T>
bool empty_product(int64_t m, int64_t n, int64_t k, T beta, T* c, int64_t ldc) {
  if (k != 0) return false;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == T(0) ? T(0) : beta * c[i * ldc + j];
  return true;
}

}  // namespace

void blas_single_thread() {
  // openblas_get_num_threads reads a variable; set only when someone (or the environment) changed it.
  if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}

GemmTiling plan_gemm_tiles(int64_t m, int64_t n, int64_t k, int64_t items) {
  constexpr int64_t kTargetTasks = 16, kMinSide = 32;
  constexpr double kMinTileMacs = 1 << 20;
  GemmTiling t;
  t.tile_m = std::max<int64_t>(m, 1);
  t.tile_n = std::max<int64_t>(n, 1);
  auto tiles = [](int64_t len, int64_t tile) { return (len + tile - 1) / tile; };
  while (items * tiles(m, t.tile_m) * tiles(n, t.tile_n) < kTargetTasks) {
    const bool split_n = t.tile_n >= t.tile_m;
    const int64_t side = split_n ? t.tile_n : t.tile_m;
    // half the side, rounded up to a multiple of 16 (whole SIMD/micro-kernel panels)
    const int64_t half = ((side + 1) / 2 + 15) / 16 * 16;
    if (half < kMinSide || half >= side) break;
    const double macs = double(split_n ? t.tile_m : half) * double(split_n ? half : t.tile_n) * double(k);
    if (macs < kMinTileMacs) break;
    (split_n ? t.tile_n : t.tile_m) = half;
  }
  t.tiles_m = tiles(m, t.tile_m);
  t.tiles_n = tiles(n, t.tile_n);
  return t;
}

template <>
void gemm<float>(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                 int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0 || empty_product(m, n, k, beta, c, ldc)) return;
  blas_single_thread();  // also for callers that skipped the launchers (a benign race if two set it)
  lda = trans_a ? fix_ld(lda, k, m) : fix_ld(lda, m, k);
  ldb = trans_b ? fix_ld(ldb, n, k) : fix_ld(ldb, k, n);
  ldc = fix_ld(ldc, m, n);
  check_sizes(m, n, k, lda, ldb, ldc);
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, blasint(m),
              blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc));
}

template <>
void gemm<double>(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
                  int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  if (m == 0 || n == 0 || empty_product(m, n, k, beta, c, ldc)) return;
  blas_single_thread();  // also for callers that skipped the launchers (a benign race if two set it)
  lda = trans_a ? fix_ld(lda, k, m) : fix_ld(lda, m, k);
  ldb = trans_b ? fix_ld(ldb, n, k) : fix_ld(ldb, k, n);
  ldc = fix_ld(ldc, m, n);
  check_sizes(m, n, k, lda, ldb, ldc);
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, blasint(m),
              blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc));
}

}  // namespace engine::cpu

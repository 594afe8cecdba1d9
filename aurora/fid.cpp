// fid.cpp: FID preprocessing, statistics, the Frechet distance and the evaluator (aurora/fid.h
// has the formulas and conventions).
#include "aurora/fid.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>

#include <fmt/format.h>

#include "autograd/grad_mode.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "tensor/cpu/gemm.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace engine::aurora {

// ---- Preprocessing ----------------------------------------------------------------------------

FidResize parse_fid_resize(const std::string& name) {
  if (name == "pytorch-fid" || name == "pytorch_fid") return FidResize::pytorch_fid;
  if (name == "tf1") return FidResize::tf1;
  throw Error(fmt::format("FID resize: unknown convention '{}' (expected pytorch-fid or tf1)", name));
}

const char* fid_resize_name(FidResize r) { return r == FidResize::tf1 ? "tf1" : "pytorch-fid"; }

namespace {

// One axis of a bilinear resize: for each output index, the two source indices and weights.
struct Axis {
  std::vector<int64_t> i0, i1;
  std::vector<float> w0, w1;
};

// PyTorch's upsample_bilinear2d with align_corners=False on f32 input: the scale in/out is an
// f32, the source position src = max(scale (dst + 0.5) - 0.5, 0) is computed in f64 from it and
// the weight lambda = src - floor(src) rounded to f32 (measured on torch 1.13 with delta images:
// these weights match it exactly, the all-f32 or all-f64 variants do not).
Axis axis_half_pixel(int64_t in, int64_t out) {
  Axis a;
  const float scale = float(in) / float(out);
  for (int64_t d = 0; d < out; ++d) {
    const double src = std::max(double(scale) * (double(d) + 0.5) - 0.5, 0.0);
    const int64_t lo = std::min<int64_t>(int64_t(std::floor(src)), in - 1);
    const float lambda = float(std::min(std::max(src - double(lo), 0.0), 1.0));
    a.i0.push_back(lo);
    a.i1.push_back(lo + (lo < in - 1 ? 1 : 0));
    a.w0.push_back(1.0f - lambda);
    a.w1.push_back(lambda);
  }
  return a;
}

// TF1 resize_bilinear (half_pixel_centers=False, align_corners=False): src = dst in/out, in f32
// as TF computes it.
Axis axis_tf1(int64_t in, int64_t out) {
  Axis a;
  const float scale = float(in) / float(out);
  for (int64_t d = 0; d < out; ++d) {
    const float src = float(d) * scale;
    const int64_t lo = std::min<int64_t>(int64_t(std::floor(src)), in - 1);
    a.i0.push_back(lo);
    a.i1.push_back(std::min<int64_t>(lo + 1, in - 1));
    a.w1.push_back(src - float(lo));  // the lerp fraction
    a.w0.push_back(1.0f - (src - float(lo)));
  }
  return a;
}

}  // namespace

Tensor inception_input(const Tensor& images_u8, FidResize resize, int64_t size) {
  ENGINE_CHECK(images_u8.defined() && images_u8.dtype() == DType::u8 && images_u8.dim() == 4 &&
                   images_u8.size(1) == 3,
               "inception_input: expected u8 images [N, 3, H, W], got {} {}",
               images_u8.defined() ? dtype_name(images_u8.dtype()) : "undefined",
               images_u8.defined() ? images_u8.sizes().str() : "");
  ENGINE_CHECK(size >= 1, "inception_input: bad output size {}", size);
  const Tensor src = contiguous(images_u8);
  const int64_t planes = src.size(0) * 3, h = src.size(2), w = src.size(3);
  const Axis ay = resize == FidResize::tf1 ? axis_tf1(h, size) : axis_half_pixel(h, size);
  const Axis ax = resize == FidResize::tf1 ? axis_tf1(w, size) : axis_half_pixel(w, size);
  Tensor out = empty({src.size(0), 3, size, size}, opts(DType::f32));
  const uint8_t* in = src.data<uint8_t>();
  float* o = out.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    const uint8_t* pl = in + p * h * w;
    float* op = o + p * size * size;
    for (int64_t y = 0; y < size; ++y) {
      const uint8_t* r0 = pl + ay.i0[y] * w;
      const uint8_t* r1 = pl + ay.i1[y] * w;
      for (int64_t x = 0; x < size; ++x) {
        const int64_t c0 = ax.i0[x], c1 = ax.i1[x];
        float v;
        if (resize == FidResize::pytorch_fid) {
          // v = u8 / 255 first (pytorch-fid's ToTensor), then the interpolation, then 2v - 1.
          const float a = float(r0[c0]) / 255.0f, b = float(r0[c1]) / 255.0f;
          const float c = float(r1[c0]) / 255.0f, d = float(r1[c1]) / 255.0f;
          const float top = a * ax.w0[x] + b * ax.w1[x];
          const float bottom = c * ax.w0[x] + d * ax.w1[x];
          v = 2.0f * (top * ay.w0[y] + bottom * ay.w1[y]) - 1.0f;
        } else {
          // TF1: lerps on the 0..255 values, then (v - 128) / 128.
          const float a = r0[c0], b = r0[c1], c = r1[c0], d = r1[c1];
          const float top = a + (b - a) * ax.w1[x];
          const float bottom = c + (d - c) * ax.w1[x];
          v = (top + (bottom - top) * ay.w1[y] - 128.0f) / 128.0f;
        }
        op[y * size + x] = v;
      }
    }
  }
  return out;
}

Tensor quantize_images(const Tensor& images) {
  ENGINE_CHECK(images.defined() && images.dim() == 4 && images.size(1) == 3,
               "quantize_images: expected generator output [N, 3, H, W], got {}",
               images.defined() ? images.sizes().str() : "undefined");
  autograd::NoGradGuard no_grad;
  const Tensor x = contiguous(to_dtype(images.to(Device::cpu()), DType::f32));
  Tensor out = empty(x.sizes(), opts(DType::u8));
  const float* in = x.data<float>();
  uint8_t* o = out.data<uint8_t>();
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; ++i) {
    float v = in[i] * 127.5f + 128.0f;
    v = std::isnan(v) ? 0.0f : std::min(std::max(v, 0.0f), 255.0f);
    o[i] = uint8_t(v);  // truncation, as torch's .to(torch.uint8)
  }
  return out;
}

Tensor prepare_real_image(const Tensor& image_hwc, int64_t resolution) {
  ENGINE_CHECK(image_hwc.defined() && image_hwc.dtype() == DType::u8 && image_hwc.dim() == 3 &&
                   image_hwc.size(2) == 3,
               "prepare_real_image: expected u8 RGB [H, W, 3], got {}",
               image_hwc.defined() ? image_hwc.sizes().str() : "undefined");
  Tensor sq = io::center_crop_square(image_hwc);
  if (sq.size(0) != resolution) sq = io::resize_image(sq, resolution, resolution);
  return contiguous(permute(sq, {2, 0, 1}));
}

// ---- Statistics -------------------------------------------------------------------------------

FidAccumulator::FidAccumulator(int64_t dim) : dim_(dim) {
  ENGINE_CHECK(dim >= 1, "FidAccumulator: bad feature dimension {}", dim);
}

void FidAccumulator::add(const Tensor& features) {
  ENGINE_CHECK(features.defined() && features.dim() == 2 && features.size(1) == dim_,
               "FidAccumulator: expected features [B, {}], got {}", dim_,
               features.defined() ? features.sizes().str() : "undefined");
  autograd::NoGradGuard no_grad;
  const int64_t b = features.size(0), d = dim_;
  if (b == 0) return;
  const Tensor f = contiguous(to_dtype(features.to(Device::cpu()), DType::f64));
  const double* x = f.data<double>();
  if (n_ == 0) {
    // Shift by the first batch's mean: sums of (x - shift) stay near zero, so the covariance
    // (outer - n m m^T) does not lose digits to cancellation when |mu| >> the spread.
    shift_.assign(size_t(d), 0.0);
    sum_.assign(size_t(d), 0.0);
    outer_.assign(size_t(d * d), 0.0);
    for (int64_t i = 0; i < b; ++i)
      for (int64_t j = 0; j < d; ++j) shift_[size_t(j)] += x[i * d + j];
    for (double& s : shift_) s /= double(b);
  }
  std::vector<double> c(static_cast<size_t>(b * d));
  for (int64_t i = 0; i < b; ++i)
    for (int64_t j = 0; j < d; ++j) {
      const double v = x[i * d + j];
      ENGINE_CHECK(std::isfinite(v), "FidAccumulator: feature {} of row {} is not finite ({})", j, i, v);
      c[size_t(i * d + j)] = v - shift_[size_t(j)];
      sum_[size_t(j)] += c[size_t(i * d + j)];
    }
  // outer += C^T C (C stored [b, d]).
  cpu::gemm<double>(true, false, d, d, b, 1.0, c.data(), d, c.data(), d, 1.0, outer_.data(), d);
  n_ += b;
}

FidStatistics FidAccumulator::finish() const {
  ENGINE_CHECK(n_ >= 2, "FidAccumulator: need at least 2 feature vectors for a covariance, got {}", n_);
  const int64_t d = dim_;
  FidStatistics s;
  s.n = n_;
  s.mu = empty({d}, opts(DType::f64));
  s.sigma = empty({d, d}, opts(DType::f64));
  double* mu = s.mu.data<double>();
  double* sg = s.sigma.data<double>();
  std::vector<double> m(static_cast<size_t>(d));
  for (int64_t j = 0; j < d; ++j) {
    m[size_t(j)] = sum_[size_t(j)] / double(n_);
    mu[j] = shift_[size_t(j)] + m[size_t(j)];
  }
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = 0; j < d; ++j) {
      // Symmetric by construction up to the GEMM's rounding: average the two triangles.
      const double o = 0.5 * (outer_[size_t(i * d + j)] + outer_[size_t(j * d + i)]);
      sg[i * d + j] = (o - double(n_) * m[size_t(i)] * m[size_t(j)]) / double(n_ - 1);
    }
  return s;
}

// ---- Linear algebra ---------------------------------------------------------------------------

namespace {

// Householder reduction of symmetric `a` (row-major n x n; only the lower triangle is read and
// written; destroyed) to tridiagonal T = Q^T A Q: diagonal d[0..n), off-diagonal e[0..n-1).
// Step k zeroes column k below k+1 with H = I - beta v v^T, v = x - alpha e1 (x = column k below
// the diagonal, alpha = -sign(x0) |x|), applied from both sides to the trailing block A22:
//   p = beta A22 v,  K = beta (v . p) / 2,  q = p - K v,  A22 <- A22 - v q^T - q v^T.
// Memory traffic decides the speed (the matrix does not fit in cache), so each step makes ONE pass
// over the lower triangle of its block: it applies step k's rank-2 update to a row and, in the
// same pass, adds that row's share of step k+1's product A22' v' (whose v' comes from the block's
// first column, updated beforehand). A symmetric product from the lower triangle reads row i once:
// p'[i] += A[i][j] v'[j] (j < i) and p'[j] += A[i][j] v'[i].
// It runs on one thread: a parallel region per step (n of them) costs more than it saves on a
// shared 2-core machine, where a waiting OpenMP barrier is expensive (measured: 3.5 s serial vs
// 17 s with per-step regions for n = 2048 under load).
// The reflector of step k from column k below the diagonal (rows k+1..n-1): fills v, beta and
// returns alpha (the new sub-diagonal entry). A zero column gives beta = 0 (H = I) and alpha = 0.
double make_reflector(const std::vector<double>& a, int64_t n, int64_t k, std::vector<double>& v, double& beta) {
  const int64_t m = n - k - 1;
  v.resize(size_t(m));
  double norm2 = 0;
  for (int64_t i = 0; i < m; ++i) {
    v[size_t(i)] = a[size_t((k + 1 + i) * n + k)];
    norm2 += v[size_t(i)] * v[size_t(i)];
  }
  if (norm2 == 0) {
    beta = 0;
    return 0;
  }
  const double norm = std::sqrt(norm2);
  const double alpha = v[0] > 0 ? -norm : norm;
  // |v|^2 = |x|^2 - 2 alpha x0 + alpha^2 = 2 (|x|^2 - alpha x0), without cancellation.
  const double vv = 2 * (norm2 - alpha * v[0]);
  v[0] -= alpha;
  beta = 2.0 / vv;
  return alpha;
}

// One pass over the rows `first..m-1` (block-local) of the block whose top-left corner is
// (base, base): optionally applies A -= v q^T + q v^T to the row's lower-triangle entries
// (columns `first..i`), then accumulates the lower-triangle product with `w` over the sub-block
// starting at local index `first` into `out` (size m - first), scaled later by the caller.
void sweep(std::vector<double>& a, int64_t n, int64_t base, int64_t m, int64_t first, const std::vector<double>* v,
           const std::vector<double>* q, const std::vector<double>& w, std::vector<double>& out) {
  const int64_t len = m - first;
  out.assign(size_t(len), 0.0);
  double* op = out.data() - first;  // op[j] = out[j - first]
  const double* wp = w.data() - first;
  for (int64_t i = first; i < m; ++i) {
    double* row = &a[size_t((base + i) * n + base)];
    if (v != nullptr) {
      const double vi = (*v)[size_t(i)], qi = (*q)[size_t(i)];
      const double* vp = v->data();
      const double* qp = q->data();
#pragma omp simd
      for (int64_t j = first; j <= i; ++j) row[j] -= vi * qp[j] + qi * vp[j];
    }
    const double wi = wp[i];
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = first; j < i; ++j) {
      s += row[j] * wp[j];
      op[j] += row[j] * wi;
    }
    op[i] += s + row[i] * wi;
  }
}

void tridiagonalize(std::vector<double>& a, int64_t n, std::vector<double>& d, std::vector<double>& e) {
  d.assign(size_t(n), 0.0);
  e.assign(size_t(std::max<int64_t>(n - 1, 0)), 0.0);
  if (n == 0) return;
  if (n == 1) {
    d[0] = a[0];
    return;
  }
  std::vector<double> v, p, q, vn, pn;
  double beta = 0, beta_next = 0;
  double alpha = n >= 3 ? make_reflector(a, n, 0, v, beta) : 0;
  if (n >= 3) {
    sweep(a, n, 1, n - 1, 0, nullptr, nullptr, v, p);  // p = A22 v (step 0's block, no update)
    for (double& x : p) x *= beta;
  }
  for (int64_t k = 0; k + 2 < n; ++k) {
    const int64_t m = n - k - 1, base = k + 1;
    d[size_t(k)] = a[size_t(k * n + k)];
    e[size_t(k)] = alpha;
    double vp = 0;
    for (int64_t i = 0; i < m; ++i) vp += v[size_t(i)] * p[size_t(i)];
    const double kk = 0.5 * beta * vp;
    q.resize(size_t(m));
    for (int64_t i = 0; i < m; ++i) q[size_t(i)] = p[size_t(i)] - kk * v[size_t(i)];
    // The block's first column first: the next reflector is built from it.
    for (int64_t i = 0; i < m; ++i)
      a[size_t((base + i) * n + base)] -= v[size_t(i)] * q[0] + q[size_t(i)] * v[0];
    if (k + 3 < n) {
      alpha = make_reflector(a, n, k + 1, vn, beta_next);
      // Update rows 1..m-1 (columns 1..i) and accumulate A22' vn over the next block in one pass.
      sweep(a, n, base, m, 1, &v, &q, vn, pn);
      for (double& x : pn) x *= beta_next;
      std::swap(v, vn);
      std::swap(p, pn);
      beta = beta_next;
    } else {
      for (int64_t i = 1; i < m; ++i) {
        double* row = &a[size_t((base + i) * n + base)];
        for (int64_t j = 1; j <= i; ++j) row[j] -= v[size_t(i)] * q[size_t(j)] + q[size_t(i)] * v[size_t(j)];
      }
    }
  }
  d[size_t(n - 2)] = a[size_t((n - 2) * n + n - 2)];
  d[size_t(n - 1)] = a[size_t((n - 1) * n + n - 1)];
  e[size_t(n - 2)] = a[size_t((n - 1) * n + n - 2)];
}

// Number of eigenvalues of the tridiagonal (d, e) below x (Sturm sequence of the LDL^T pivots).
int64_t count_below(const std::vector<double>& d, const std::vector<double>& e2, double x, double pivmin) {
  int64_t count = 0;
  double q = d[0] - x;
  if (std::fabs(q) < pivmin) q = -pivmin;
  if (q < 0) ++count;
  for (size_t i = 1; i < d.size(); ++i) {
    q = d[i] - x - e2[i - 1] / q;
    if (std::fabs(q) < pivmin) q = -pivmin;
    if (q < 0) ++count;
  }
  return count;
}

// Eigenvalues of the tridiagonal (d, e), ascending, each by bisection to eps * ||T|| (the
// accuracy the trace term can use: sqrt(eps ||T||) is far below 1e-6 of any FID).
std::vector<double> tridiagonal_eigenvalues(const std::vector<double>& d, const std::vector<double>& e) {
  const int64_t n = int64_t(d.size());
  std::vector<double> w(static_cast<size_t>(n));
  if (n == 0) return w;
  std::vector<double> e2(e.size());
  double lo = std::numeric_limits<double>::infinity(), hi = -lo, emax2 = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double r = (i > 0 ? std::fabs(e[size_t(i - 1)]) : 0.0) + (i + 1 < n ? std::fabs(e[size_t(i)]) : 0.0);
    lo = std::min(lo, d[size_t(i)] - r);
    hi = std::max(hi, d[size_t(i)] + r);
  }
  for (size_t i = 0; i < e.size(); ++i) {
    e2[i] = e[i] * e[i];
    emax2 = std::max(emax2, e2[i]);
  }
  const double eps = std::numeric_limits<double>::epsilon();
  const double norm = std::max(std::fabs(lo), std::fabs(hi));
  const double pivmin = std::numeric_limits<double>::min() * std::max(1.0, emax2);
  const double abs_tol = 2 * eps * norm;
  lo -= abs_tol + pivmin;
  hi += abs_tol + pivmin;
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t k = 0; k < n; ++k) {
    double a = lo, b = hi;
    for (int it = 0; it < 200; ++it) {
      const double mid = 0.5 * (a + b);
      if (b - a <= abs_tol + 2 * eps * std::max(std::fabs(a), std::fabs(b)) || mid <= a || mid >= b) break;
      if (count_below(d, e2, mid, pivmin) > k)
        b = mid;
      else
        a = mid;
    }
    w[size_t(k)] = 0.5 * (a + b);
  }
  return w;
}

// Pivoted (semidefinite) Cholesky: P^T S P ~= L L^T, returned as F = P L ([n, r] row-major, r the
// numerical rank) so that S ~= F F^T. It stops when every remaining Schur-complement diagonal is
// <= eps * max diag(S): the rest is rounding noise of a PSD matrix. Blocked like LAPACK's dpstrf:
// inside a panel of nb columns the Schur complement is updated lazily (each new column subtracts
// the panel's earlier columns, `work` holds the panel's share of every diagonal), and after the
// panel the trailing matrix gets one GEMM update, so most flops run in BLAS.
std::vector<double> pivoted_cholesky(const std::vector<double>& s, int64_t n, int64_t& rank) {
  std::vector<double> a = s;  // full symmetric storage; L grows in its lower triangle
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::vector<double> work(static_cast<size_t>(n), 0.0);
  double maxd = 0;
  for (int64_t i = 0; i < n; ++i) {
    perm[size_t(i)] = i;
    maxd = std::max(maxd, a[size_t(i * n + i)]);
  }
  const double tol = std::numeric_limits<double>::epsilon() * maxd;
  const int64_t nb = 64;
  rank = 0;
  bool done = !(maxd > 0);
  for (int64_t j0 = 0; j0 < n && !done; j0 += nb) {
    const int64_t jb = std::min(nb, n - j0);
    std::fill(work.begin() + j0, work.end(), 0.0);
    int64_t jend = j0 + jb;
    for (int64_t j = j0; j < j0 + jb; ++j) {
      int64_t piv = j;
      double dmax = a[size_t(j * n + j)] - work[size_t(j)];
      for (int64_t i = j + 1; i < n; ++i) {
        const double di = a[size_t(i * n + i)] - work[size_t(i)];
        if (di > dmax) {
          dmax = di;
          piv = i;
        }
      }
      if (!(dmax > tol)) {
        done = true;
        jend = j;
        break;
      }
      if (piv != j) {  // symmetric swap of rows and columns j, piv (and their bookkeeping)
        std::swap_ranges(&a[size_t(j * n)], &a[size_t(j * n + n)], &a[size_t(piv * n)]);
        for (int64_t i = 0; i < n; ++i) std::swap(a[size_t(i * n + j)], a[size_t(i * n + piv)]);
        std::swap(work[size_t(j)], work[size_t(piv)]);
        std::swap(perm[size_t(j)], perm[size_t(piv)]);
      }
      const double ajj = std::sqrt(dmax);
      a[size_t(j * n + j)] = ajj;
      const double* lj = &a[size_t(j * n + j0)];
      // Serial: a parallel region per column costs more than it saves (see tridiagonalize).
      for (int64_t i = j + 1; i < n; ++i) {
        double* ri = &a[size_t(i * n)];
        const double* li = ri + j0;
        double dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t k = 0; k < j - j0; ++k) dot += li[k] * lj[k];
        const double v = (ri[j] - dot) / ajj;
        ri[j] = v;
        work[size_t(i)] += v * v;
      }
      rank = j + 1;
    }
    if (done || jend >= n) break;
    // Trailing update: A22 -= P P^T with P = the panel's rows below it, [m, kb].
    const int64_t m = n - jend, kb = jend - j0;
    const double* panel = &a[size_t(jend * n + j0)];
    double* c = &a[size_t(jend * n + jend)];
    const int64_t tile = 128, tiles = (m + tile - 1) / tile;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t r0 = t * tile, rows = std::min(tile, m - r0);
      cpu::gemm<double>(false, true, rows, m, kb, -1.0, panel + r0 * n, n, panel, n, 1.0, c + r0 * n, n);
    }
  }
  // F[perm[i], k] = L[i, k] for k <= i, k < rank.
  std::vector<double> f(static_cast<size_t>(n * std::max<int64_t>(rank, 1)), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < std::min(i + 1, rank); ++k) f[size_t(perm[size_t(i)] * rank + k)] = a[size_t(i * n + k)];
  return f;
}

}  // namespace

std::vector<double> symmetric_eigenvalues(std::vector<double> a, int64_t n) {
  ENGINE_CHECK(n >= 0 && int64_t(a.size()) == n * n, "symmetric_eigenvalues: {} values for an {}x{} matrix",
               a.size(), n, n);
  std::vector<double> d, e;
  tridiagonalize(a, n, d, e);
  return tridiagonal_eigenvalues(d, e);
}

double trace_sqrt_product(const std::vector<double>& s1, const std::vector<double>& s2, int64_t n) {
  ENGINE_CHECK(int64_t(s1.size()) == n * n && int64_t(s2.size()) == n * n,
               "trace_sqrt_product: expected two {}x{} matrices, got {} and {} values", n, n, s1.size(), s2.size());
  int64_t r = 0;
  const std::vector<double> f = pivoted_cholesky(s1, n, r);  // S1 = F F^T, F [n, r]
  if (r == 0) return 0.0;
  // M = F^T S2 F (r x r, symmetric PSD): T = S2 F, M = F^T T.
  std::vector<double> t(static_cast<size_t>(n * r)), m(size_t(r * r));
  const int64_t tile = 256;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t r0 = 0; r0 < n; r0 += tile)
    cpu::gemm<double>(false, false, std::min(tile, n - r0), r, n, 1.0, s2.data() + r0 * n, n, f.data(), r, 0.0,
                      t.data() + r0 * r, r);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t r0 = 0; r0 < r; r0 += tile)
    cpu::gemm<double>(true, false, std::min(tile, r - r0), r, n, 1.0, f.data() + r0, r, t.data(), r, 0.0,
                      m.data() + r0 * r, r);
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = i + 1; j < r; ++j) {
      const double avg = 0.5 * (m[size_t(i * r + j)] + m[size_t(j * r + i)]);
      m[size_t(i * r + j)] = m[size_t(j * r + i)] = avg;
    }
  const std::vector<double> w = symmetric_eigenvalues(std::move(m), r);
  double trace = 0;
  for (double lambda : w) trace += std::sqrt(std::max(lambda, 0.0));  // clamp rounding negatives
  return trace;
}

FrechetTerms frechet_terms(const FidStatistics& a, const FidStatistics& b) {
  ENGINE_CHECK(a.mu.defined() && b.mu.defined() && a.sigma.defined() && b.sigma.defined(),
               "frechet_distance: undefined statistics");
  const int64_t d = a.mu.numel();
  ENGINE_CHECK(b.mu.numel() == d && a.sigma.sizes() == (Dims{d, d}) && b.sigma.sizes() == (Dims{d, d}),
               "frechet_distance: statistics of different dimensions (mu {} vs {}, sigma {} vs {})",
               a.mu.sizes().str(), b.mu.sizes().str(), a.sigma.sizes().str(), b.sigma.sizes().str());
  const std::vector<double> mu1 = a.mu.to_vector(), mu2 = b.mu.to_vector();
  const std::vector<double> s1 = a.sigma.to_vector(), s2 = b.sigma.to_vector();
  FrechetTerms t;
  for (int64_t i = 0; i < d; ++i) {
    const double diff = mu1[size_t(i)] - mu2[size_t(i)];
    t.mean_term += diff * diff;
    t.trace1 += s1[size_t(i * d + i)];
    t.trace2 += s2[size_t(i * d + i)];
  }
  t.cross_trace = trace_sqrt_product(s1, s2, d);
  return t;
}

double frechet_distance(const FidStatistics& a, const FidStatistics& b) { return frechet_terms(a, b).fid(); }

// ---- Files ------------------------------------------------------------------------------------

void save_fid_statistics(const std::string& path, const FidStatistics& s,
                         const std::map<std::string, std::string>& metadata) {
  std::map<std::string, std::string> meta = metadata;
  meta["n"] = std::to_string(s.n);
  meta["dim"] = std::to_string(s.mu.numel());
  meta["kind"] = "fid_statistics";
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  io::save_safetensors(path, {{"mu", s.mu}, {"sigma", s.sigma}}, meta);
}

FidStatistics load_fid_statistics(const std::string& path, const std::map<std::string, std::string>& expected) {
  const io::SafetensorsFile f = io::read_safetensors(path);
  for (const auto& [key, value] : expected) {
    auto it = f.metadata.find(key);
    ENGINE_CHECK(it != f.metadata.end() && it->second == value,
                 "FID statistics {}: metadata '{}' is '{}', expected '{}'", path,
                 key, it == f.metadata.end() ? "(absent)" : it->second, value);
  }
  FidStatistics s;
  s.mu = contiguous(to_dtype(f.at("mu"), DType::f64));
  s.sigma = contiguous(to_dtype(f.at("sigma"), DType::f64));
  const int64_t d = s.mu.numel();
  ENGINE_CHECK(s.mu.dim() == 1 && s.sigma.sizes() == (Dims{d, d}), "FID statistics {}: mu {} and sigma {} do not match",
               path, s.mu.sizes().str(), s.sigma.sizes().str());
  auto n = f.metadata.find("n");
  ENGINE_CHECK(n != f.metadata.end(), "FID statistics {}: metadata 'n' is missing", path);
  s.n = std::stoll(n->second);
  return s;
}

std::string file_hash(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  ENGINE_CHECK(in.good(), "file_hash: cannot open {}", path);
  uint64_t h = 1469598103934665603ull;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), std::streamsize(buf.size()));
    const std::streamsize got = in.gcount();
    for (std::streamsize i = 0; i < got; ++i) {
      h ^= uint8_t(buf[size_t(i)]);
      h *= 1099511628211ull;
    }
  }
  return fmt::format("{:016x}", h);
}

// ---- Evaluator --------------------------------------------------------------------------------

FidEvaluator::FidEvaluator(FidOptions options) : options_(std::move(options)) {
  ENGINE_CHECK(options_.batch_size >= 1, "FID: batch size must be >= 1, got {}", options_.batch_size);
  net_ = std::make_unique<FidInception>(FidInception::load(options_.weights));
  weights_hash_ = file_hash(options_.weights);
}

Tensor FidEvaluator::features_u8(const Tensor& images_u8) const {
  return net_->features(inception_input(images_u8, options_.resize));
}

void FidEvaluator::progress(const char* what, int64_t done, int64_t total, double seconds) const {
  if (!options_.verbose) return;
  std::fprintf(stderr, "fid: %s %lld/%lld images (%.1f img/s)\n", what, (long long)done, (long long)total,
               seconds > 0 ? double(done) / seconds : 0.0);
  std::fflush(stderr);
}

FidStatistics FidEvaluator::generator_statistics(const SampleFn& sample, int64_t n) {
  ENGINE_CHECK(n >= 2, "FID: need at least 2 generated images, got n = {}", n);
  FidAccumulator acc;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t first = 0; first < n; first += options_.batch_size) {
    const int64_t count = std::min(options_.batch_size, n - first);
    Tensor images;
    {
      autograd::NoGradGuard no_grad;
      images = sample(first, count);
    }
    ENGINE_CHECK(images.defined() && images.dim() == 4 && images.size(0) == count && images.size(1) == 3,
                 "FID: the generator sample function returned {} for {} images (expected [{}, 3, R, R])",
                 images.defined() ? images.sizes().str() : "undefined", count, count);
    acc.add(features_u8(quantize_images(images)));
    progress("generated", first + count, n,
             std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return acc.finish();
}

namespace {
std::string sanitize(const std::string& s) {
  std::string out;
  for (char c : s) out += std::isalnum(uint8_t(c)) ? c : '_';
  if (out.size() > 48) out = out.substr(out.size() - 48);
  return out;
}
uint64_t fnv(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (char c : s) {
    h ^= uint8_t(c);
    h *= 1099511628211ull;
  }
  return h;
}
}  // namespace

FidStatistics FidEvaluator::dataset_statistics(const io::Dataset& data, const std::string& spec, int64_t resolution,
                                               const std::vector<int64_t>& indices, const std::string& subset) {
  const int64_t n = int64_t(indices.size());
  ENGINE_CHECK(n >= 2, "FID: need at least 2 real images from '{}', got {}", spec, n);
  ENGINE_CHECK(resolution >= 1, "FID: bad resolution {}", resolution);
  const std::map<std::string, std::string> key = {
      {"dataset", spec},          {"resolution", std::to_string(resolution)}, {"subset", subset},
      {"n", std::to_string(n)},   {"resize", fid_resize_name(options_.resize)}, {"weights", weights_hash_},
      {"feature", "pool3"}};
  std::string cache_path;
  if (!options_.cache_dir.empty()) {
    std::string all;
    for (const auto& [k, v] : key) all += k + "=" + v + ";";
    cache_path = fmt::format("{}/{}-r{}-{}-n{}-{:016x}.safetensors", options_.cache_dir, sanitize(spec), resolution,
                             subset, n, fnv(all));
    if (std::filesystem::is_regular_file(cache_path)) {
      if (options_.verbose) std::fprintf(stderr, "fid: cached statistics %s\n", cache_path.c_str());
      return load_fid_statistics(cache_path, key);
    }
  }
  FidAccumulator acc;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t first = 0; first < n; first += options_.batch_size) {
    const int64_t count = std::min(options_.batch_size, n - first);
    TensorList images;
    for (int64_t i = first; i < first + count; ++i) {
      const int64_t idx = indices[size_t(i)];
      ENGINE_CHECK(idx >= 0 && size_t(idx) < data.size(), "FID: index {} outside dataset '{}' of {} images", idx,
                   spec, data.size());
      images.push_back(prepare_real_image(data.get(size_t(idx)).image, resolution));
    }
    acc.add(features_u8(stack(images, 0)));
    progress(spec.c_str(), first + count, n,
             std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  FidStatistics s = acc.finish();
  if (!cache_path.empty()) save_fid_statistics(cache_path, s, key);
  return s;
}

FidStatistics FidEvaluator::dataset_statistics(const io::Dataset& data, const std::string& spec, int64_t resolution,
                                               int64_t n) {
  ENGINE_CHECK(n >= 2 && size_t(n) <= data.size(), "FID: asked for {} images of '{}', which has {}", n, spec,
               data.size());
  std::vector<int64_t> idx(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) idx[size_t(i)] = i;
  return dataset_statistics(data, spec, resolution, idx, "first");
}

double FidEvaluator::fid_of_generator(const SampleFn& sample, const io::Dataset& real, const std::string& spec,
                                      int64_t resolution, int64_t n) {
  const FidStatistics r = dataset_statistics(real, spec, resolution, n);
  const FidStatistics g = generator_statistics(sample, n);
  return frechet_distance(g, r);
}

double FidEvaluator::reference_fid(const io::Dataset& data, const std::string& spec, int64_t resolution, int64_t n) {
  ENGINE_CHECK(n >= 2 && size_t(2 * n) <= data.size(),
               "reference FID: two disjoint sets of {} images need {} images, but '{}' has {} (use --n {} or less)",
               n, 2 * n, spec, data.size(), data.size() / 2);
  std::vector<int64_t> even(static_cast<size_t>(n)), odd(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    even[size_t(i)] = 2 * i;
    odd[size_t(i)] = 2 * i + 1;
  }
  const FidStatistics a = dataset_statistics(data, spec, resolution, even, "even");
  const FidStatistics b = dataset_statistics(data, spec, resolution, odd, "odd");
  return frechet_distance(a, b);
}

double FidEvaluator::reference_fid(const io::Dataset& a, const std::string& spec_a, const io::Dataset& b,
                                   const std::string& spec_b, int64_t resolution, int64_t n) {
  return frechet_distance(dataset_statistics(a, spec_a, resolution, n), dataset_statistics(b, spec_b, resolution, n));
}

// ---- The two FIDs of the stage switch ---------------------------------------------------------

std::string StageFid::Record::to_json() const {
  return fmt::format("{{\"fid_kind\":\"{}\",\"resolution\":{},\"n\":{},\"fid\":{}}}", kind, resolution, n,
                     fid);
}

StageFid::StageFid(FidEvaluator& evaluator, std::shared_ptr<const io::Dataset> data, std::string spec, int64_t n)
    : evaluator_(evaluator), data_(std::move(data)), spec_(std::move(spec)), n_(n) {
  ENGINE_CHECK(data_ != nullptr, "StageFid: no dataset");
  ENGINE_CHECK(n_ >= 2 && size_t(2 * n_) <= data_->size(),
               "StageFid: two disjoint sets of {} images need {}, but '{}' has {}", n_, 2 * n_, spec_, data_->size());
}

std::vector<int64_t> StageFid::even_indices() const {
  std::vector<int64_t> even(static_cast<size_t>(n_));
  for (int64_t i = 0; i < n_; ++i) even[size_t(i)] = 2 * i;
  return even;
}

double StageFid::reference(int64_t resolution) {
  auto it = reference_.find(resolution);
  if (it != reference_.end()) return it->second;
  const double r = evaluator_.reference_fid(*data_, spec_, resolution, n_);
  reference_[resolution] = r;
  history_.push_back({"reference", resolution, n_, r});
  return r;
}

double StageFid::generator(const FidEvaluator::SampleFn& sample, int64_t resolution) {
  const FidStatistics real = evaluator_.dataset_statistics(*data_, spec_, resolution, even_indices(), "even");
  const FidStatistics gen = evaluator_.generator_statistics(sample, n_);
  const double f = frechet_distance(gen, real);
  history_.push_back({"generator", resolution, n_, f});
  return f;
}

std::vector<std::string> StageFid::captions(int64_t first, int64_t count) const {
  std::vector<std::string> out;
  for (int64_t i = first; i < first + count; ++i) out.push_back(data_->get(size_t(2 * (i % n_))).caption);
  return out;
}

}  // namespace engine::aurora

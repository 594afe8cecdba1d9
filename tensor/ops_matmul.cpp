// ops_matmul.cpp: matmul (NumPy semantics), bmm and linear, on OpenBLAS (tensor/cpu/gemm.h).
//
//   matmul(a, b):   a [.., n, k] x b [.., k, m] -> [broadcast(..), n, m]; a 1-D `a` is a row vector
//                   [1, k] and a 1-D `b` a column vector [k, 1], whose added dim is removed again.
//   bmm(a, b):      [B, n, k] x [B, k, m] -> [B, n, m] (no broadcasting).
//   linear(x,W,b):  y = x W^T + b, x [.., in], W [out, in], b [out].
//
// Every matrix operand reaches BLAS as it lies in memory when its strides allow: row-major with
// a leading dimension, or column-major (a transposed view) passed with the transpose flag. Only
// operands with no such layout (a broadcast row, a sliced last dim) are copied first. When `b` has
// no batch dims, the batch dims of `a` fold into the rows of one GEMM. Backward formulas are in
// autograd/formulas/matmul.cpp.
#include <algorithm>

#include "autograd/formulas/matmul.h"
#include "autograd/grad_mode.h"
#include "tensor/cpu/gemm.h"
#include "tensor/cpu/loops.h"
#include "tensor/dispatch.h"
#include "tensor/op_helpers.h"
#include "tensor/ops.h"

namespace engine {

namespace F = autograd::formulas;

namespace {

// How BLAS can read a [rows, cols] matrix with strides (rs, cs), if it can.
struct BlasView {
  bool ok = false;
  bool trans = false;  // stored column-major: pass the transpose flag
  int64_t ld = 1;
};
BlasView blas_view(int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
  BlasView v;
  // Row-major: unit column stride (irrelevant for one column), row stride >= row length (irrelevant
  // for one row).
  if ((cs == 1 || cols <= 1) && (rows <= 1 || rs >= std::max<int64_t>(cols, 1))) {
    v.ok = true;
    v.ld = rows <= 1 ? std::max<int64_t>(cols, 1) : rs;
    return v;
  }
  // Column-major, i.e. a transposed row-major matrix.
  if ((rs == 1 || rows <= 1) && (cols <= 1 || cs >= std::max<int64_t>(rows, 1))) {
    v.ok = true;
    v.trans = true;
    v.ld = cols <= 1 ? std::max<int64_t>(rows, 1) : cs;
  }
  return v;
}

BlasView matrix_view(const Tensor& t) {
  const int d = t.dim();
  return blas_view(t.size(d - 2), t.size(d - 1), t.stride(d - 2), t.stride(d - 1));
}

// The same tensor, copied to contiguous memory (without recording autograd: the caller records
// the op on the original tensor) when BLAS cannot read its matrices as they are.
Tensor blas_ready(const Tensor& t) {
  if (matrix_view(t).ok) return t;
  autograd::NoGradGuard no_grad;
  return clone(t);
}

// Can the dims [0, d) of t (batch dims and rows) merge into one row dim with a single stride?
// Returns that stride in `row_stride` (size-1 dims are free).
bool rows_mergeable(const Tensor& t, int d_end, int64_t& row_stride) {
  int64_t expected = -1;
  for (int d = d_end - 1; d >= 0; --d) {
    if (t.size(d) == 1) continue;
    if (expected == -1) {
      row_stride = t.stride(d);
      expected = t.stride(d) * t.size(d);
    } else {
      if (t.stride(d) != expected) return false;
      expected *= t.size(d);
    }
  }
  if (expected == -1) row_stride = t.size(t.dim() - 1);
  return true;
}

// The GEMMs of a matmul core: a [.., n, k] and b [.., k, m] (both >= 2-D), out contiguous.
template <typename T>
void run_matmul(const Tensor& a, const Tensor& b, const Tensor& out) {
  const int da = a.dim(), db = b.dim(), dout = out.dim();
  const int64_t n = a.size(da - 2), k = a.size(da - 1), m = b.size(db - 1);
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  T* pc = out.data<T>();
  const BlasView va = matrix_view(a), vb = matrix_view(b);

  int64_t b_batch = 1;
  for (int d = 0; d < db - 2; ++d) b_batch *= b.size(d);
  int64_t row_stride = 0;
  // b has no batch: fold a's batch dims into the rows of one GEMM when they merge with n.
  if (b_batch == 1 && !va.trans && (a.stride(da - 1) == 1 || k <= 1) && rows_mergeable(a, da - 1, row_stride) &&
      row_stride >= k && a.numel() / std::max<int64_t>(k, 1) == out.numel() / std::max<int64_t>(m, 1)) {
    const int64_t rows = out.numel() / std::max<int64_t>(m, 1);
    cpu::GemmCall<T> c;
    c.trans_b = vb.trans;
    c.m = rows, c.n = m, c.k = k;
    c.a = pa, c.lda = rows <= 1 ? k : row_stride;
    c.b = pb, c.ldb = vb.ld;
    c.c = pc, c.ldc = m;
    cpu::gemm_parallel(c);
    return;
  }

  // One GEMM per broadcast batch index.
  const int nb = dout - 2;
  Dims batch;
  for (int d = 0; d < nb; ++d) batch.push_back(out.size(d));
  const int64_t count = batch.product();
  // Batch strides of a and b against the broadcast batch shape (0 where broadcast).
  Dims sa, sb;
  for (int d = 0; d < nb; ++d) {
    const int ia = d - (nb - (da - 2)), ib = d - (nb - (db - 2));
    sa.push_back(ia >= 0 && a.size(ia) != 1 ? a.stride(ia) : 0);
    sb.push_back(ib >= 0 && b.size(ib) != 1 ? b.stride(ib) : 0);
  }
  cpu::gemm_batch<T>(count, n, m, k, [&](int64_t i) {
    int64_t oa = 0, ob = 0, rem = i;
    for (int d = nb - 1; d >= 0; --d) {
      const int64_t idx = rem % batch[d];
      rem /= batch[d];
      oa += idx * sa[d];
      ob += idx * sb[d];
    }
    cpu::GemmCall<T> c;
    c.trans_a = va.trans, c.trans_b = vb.trans;
    c.m = n, c.n = m, c.k = k;
    c.a = pa + oa, c.lda = va.ld;
    c.b = pb + ob, c.ldb = vb.ld;
    c.c = pc + i * n * m, c.ldc = m;
    return c;
  });
}

// matmul of two operands with at least 2 dims each; records MatmulBackward.
Tensor matmul_nd(const Tensor& a, const Tensor& b, const char* op) {
  const int da = a.dim(), db = b.dim();
  Dims ba, bb;
  for (int d = 0; d < da - 2; ++d) ba.push_back(a.size(d));
  for (int d = 0; d < db - 2; ++d) bb.push_back(b.size(d));
  Dims shape = broadcast_shapes(ba, bb, op);
  shape.push_back(a.size(da - 2));
  shape.push_back(b.size(db - 1));
  Tensor out = empty(shape, opts(a.dtype(), a.device()));
  const Tensor ac = blas_ready(a), bc = blas_ready(b);
  dispatch_floating(a.dtype(), op, [&](auto zero) {
    using T = decltype(zero);
    run_matmul<T>(ac, bc, out);
  });
  F::matmul(a, b, out);
  return out;
}

void check_operands(const char* op, const Tensor& a, const Tensor& b) {
  ENGINE_CHECK(a.defined() && b.defined(), "{}: undefined operand", op);
  check_same(op, a, b);
  check_floating(op, a);
  check_cpu(op, a);
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  ENGINE_OP("matmul", a, b);
  check_operands("matmul", a, b);
  ENGINE_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul: both operands must be at least 1-D, got shapes {} and {}",
               a.sizes().str(), b.sizes().str());
  const int64_t ka = a.size(a.dim() - 1), kb = b.dim() == 1 ? b.size(0) : b.size(b.dim() - 2);
  ENGINE_CHECK(ka == kb, "matmul: shapes {} and {} do not match (inner sizes {} vs {})", a.sizes().str(),
               b.sizes().str(), ka, kb);
  // 1-D operands become a row (a) or a column (b) and lose that dim again afterwards.
  const Tensor a2 = a.dim() == 1 ? unsqueeze(a, 0) : a;
  const Tensor b2 = b.dim() == 1 ? unsqueeze(b, 1) : b;
  Tensor out = matmul_nd(a2, b2, "matmul");
  if (b.dim() == 1) out = squeeze(out, -1);
  if (a.dim() == 1) out = squeeze(out, out.dim() - (b.dim() == 1 ? 1 : 2));
  return out;
}

Tensor bmm(const Tensor& a, const Tensor& b) {
  ENGINE_OP("bmm", a, b);
  check_operands("bmm", a, b);
  ENGINE_CHECK(a.dim() == 3 && b.dim() == 3, "bmm: expected 3-D operands, got shapes {} and {}", a.sizes().str(),
               b.sizes().str());
  ENGINE_CHECK(a.size(0) == b.size(0), "bmm: batch sizes differ: {} vs {}", a.size(0), b.size(0));
  ENGINE_CHECK(a.size(2) == b.size(1), "bmm: shapes {} and {} do not match (inner sizes {} vs {})", a.sizes().str(),
               b.sizes().str(), a.size(2), b.size(1));
  return matmul_nd(a, b, "bmm");
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  ENGINE_OP("linear", x, weight, bias);
  check_operands("linear", x, weight);
  ENGINE_CHECK(weight.dim() == 2, "linear: weight must be 2-D [out, in], got shape {}", weight.sizes().str());
  ENGINE_CHECK(x.dim() >= 1, "linear: input must be at least 1-D, got a scalar");
  const int64_t in = weight.size(1), out_features = weight.size(0);
  ENGINE_CHECK(x.size(x.dim() - 1) == in, "linear: input shape {} does not match weight shape {} (in features {} vs {})",
               x.sizes().str(), weight.sizes().str(), x.size(x.dim() - 1), in);
  if (bias.defined()) {
    check_same("linear", x, bias);
    ENGINE_CHECK(bias.dim() == 1 && bias.size(0) == out_features,
                 "linear: bias shape {} does not match {} output features", bias.sizes().str(), out_features);
  }
  Dims shape = x.sizes();
  shape[shape.size() - 1] = out_features;
  Tensor out = empty(shape, opts(x.dtype(), x.device()));
  const int64_t rows = x.numel() / std::max<int64_t>(in, 1);

  // x as a [rows, in] row-major matrix: its leading dims must merge, else copy it.
  Tensor xc = x;
  int64_t row_stride = 0;
  if (!(x.stride(x.dim() - 1) == 1 || in <= 1) || !rows_mergeable(x, x.dim() - 1, row_stride) ||
      (rows > 1 && row_stride < in)) {
    autograd::NoGradGuard no_grad;
    xc = clone(x);
    row_stride = in;
  }
  if (rows <= 1) row_stride = in;
  // W^T [in, out] is W read with the transpose flag; a W that is itself a transposed view needs none.
  Tensor wc = weight;
  BlasView vw = blas_view(in, out_features, weight.stride(1), weight.stride(0));
  if (!vw.ok) {
    autograd::NoGradGuard no_grad;
    wc = clone(weight);
    vw = blas_view(in, out_features, wc.stride(1), wc.stride(0));
  }
  const Tensor bc = bias.defined() ? contiguous(bias.detach()) : Tensor();
  dispatch_floating(x.dtype(), "linear", [&](auto zero) {
    using T = decltype(zero);
    T* po = out.data<T>();
    if (bc.defined()) {
      // Start from the bias in every row, then accumulate the product (beta = 1).
      const T* pb = bc.data<T>();
#pragma omp parallel for schedule(static) if (rows * out_features >= cpu::kParallelGrain)
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < out_features; ++j) po[r * out_features + j] = pb[j];
    }
    cpu::GemmCall<T> c;
    c.trans_b = vw.trans;
    c.m = rows, c.n = out_features, c.k = in;
    c.a = xc.data<T>(), c.lda = row_stride;
    c.b = wc.data<T>(), c.ldb = vw.ld;
    c.beta = T(bc.defined() ? 1 : 0), c.c = po, c.ldc = out_features;
    cpu::gemm_parallel(c);
  });
  F::linear(x, weight, bias, out);
  return out;
}

}  // namespace engine

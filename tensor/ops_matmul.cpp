// ops_matmul.cpp: matmul (NumPy semantics), bmm and linear, on OpenBLAS (tensor/cpu/gemm.h) or,
// for CUDA tensors, cuBLASLt (tensor/cuda/gemm.h).
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
#include <vector>

#include "autograd/formulas/matmul.h"
#include "autograd/grad_mode.h"
#include "tensor/cpu/gemm.h"
#include "tensor/cpu/loops.h"
#include "tensor/dispatch.h"
#include "tensor/op_helpers.h"
#include "tensor/ops.h"
#include "tensor/precision.h"

#if ENGINE_WITH_CUDA
#include "tensor/cuda/conv.h"
#include "tensor/cuda/gemm.h"
#endif

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

#if ENGINE_WITH_CUDA
const char* elements(const Tensor& t, int64_t offset) {
  return static_cast<const char*>(t.raw_data()) + offset * int64_t(dtype_size(t.dtype()));
}

// The matmul core on CUDA: a [.., n, k] and b [.., k, m] (both >= 2-D, BLAS-readable), out contiguous.
void run_matmul_cuda(const Tensor& a, const Tensor& b, const Tensor& out, cuda::GemmMode mode, const char* op) {
  const int da = a.dim(), db = b.dim(), dout = out.dim();
  const int64_t n = a.size(da - 2), k = a.size(da - 1), m = b.size(db - 1);
  const BlasView va = matrix_view(a), vb = matrix_view(b);
  cuda::GemmDesc d;
  d.mode = mode;
  d.trans_a = va.trans, d.trans_b = vb.trans;
  d.m = n, d.n = m, d.k = k;
  d.lda = va.ld, d.ldb = vb.ld, d.ldc = m;

  int64_t b_batch = 1;
  for (int dd = 0; dd < db - 2; ++dd) b_batch *= b.size(dd);
  int64_t row_stride = 0;
  if (b_batch == 1 && !va.trans && (a.stride(da - 1) == 1 || k <= 1) && rows_mergeable(a, da - 1, row_stride) &&
      row_stride >= k && a.numel() / std::max<int64_t>(k, 1) == out.numel() / std::max<int64_t>(m, 1)) {
    // b has no batch: a's batch dims fold into the rows of one GEMM.
    const int64_t rows = out.numel() / std::max<int64_t>(m, 1);
    d.m = rows;
    d.lda = rows <= 1 ? std::max<int64_t>(k, 1) : row_stride;
    d.a = a.raw_data(), d.b = b.raw_data(), d.c = out.raw_data();
    cuda::gemm(out.device(), d, op);
    return;
  }
  // Broadcast batch dims with the strides of a, b and out (0 where broadcast); size-1 dims dropped,
  // neighbours merged when all three strides chain, so most batches become one strided call.
  struct BatchDim {
    int64_t size, sa, sb, sc;
  };
  std::vector<BatchDim> dims;
  const int nb = dout - 2;
  int64_t sc = n * m;
  std::vector<BatchDim> rev;
  for (int dd = nb - 1; dd >= 0; --dd) {
    const int ia = dd - (nb - (da - 2)), ib = dd - (nb - (db - 2));
    const BatchDim bd{out.size(dd), ia >= 0 && a.size(ia) != 1 ? a.stride(ia) : 0,
                      ib >= 0 && b.size(ib) != 1 ? b.stride(ib) : 0, sc};
    sc *= out.size(dd);
    if (bd.size == 1) continue;
    if (!rev.empty()) {
      BatchDim& in = rev.back();
      if (bd.sa == in.sa * in.size && bd.sb == in.sb * in.size && bd.sc == in.sc * in.size) {
        in.size *= bd.size;
        continue;
      }
    }
    rev.push_back(bd);
  }
  dims.assign(rev.rbegin(), rev.rend());
  const BatchDim inner = dims.empty() ? BatchDim{1, 0, 0, 0} : dims.back();
  if (!dims.empty()) dims.pop_back();
  int64_t outer = 1;
  for (const BatchDim& bd : dims) outer *= bd.size;
  d.batch = inner.size;
  d.stride_a = inner.sa, d.stride_b = inner.sb, d.stride_c = inner.sc;
  for (int64_t i = 0; i < outer; ++i) {
    int64_t oa = 0, ob = 0, oc = 0, rem = i;
    for (int dd = int(dims.size()) - 1; dd >= 0; --dd) {
      const int64_t idx = rem % dims[dd].size;
      rem /= dims[dd].size;
      oa += idx * dims[dd].sa, ob += idx * dims[dd].sb, oc += idx * dims[dd].sc;
    }
    d.a = elements(a, oa), d.b = elements(b, ob);
    d.c = const_cast<char*>(elements(out, oc));
    cuda::gemm(out.device(), d, op);
  }
}
#endif

// The CPU GEMMs read f32 copies of bf16 operands: widening is exact, so an sgemm on them is
// "bf16 inputs, f32 accumulation".
Tensor widened(const Tensor& t) {
  if (t.dtype() != DType::bf16) return t;
  autograd::NoGradGuard no_grad;
  return to_dtype(t, DType::f32);
}

// matmul of two operands with at least 2 dims each; records MatmulBackward.
Tensor matmul_nd(Tensor a, Tensor b, const char* op) {
  const GemmArith arith = gemm_arith(op, a.dtype(), b.dtype());
  if (arith == GemmArith::bf16) {
    a = to_dtype(a, DType::bf16);
    b = to_dtype(b, DType::bf16);
  }
  const DType out_dtype = arith == GemmArith::f64 ? DType::f64 : DType::f32;
  const int da = a.dim(), db = b.dim();
  Dims ba, bb;
  for (int d = 0; d < da - 2; ++d) ba.push_back(a.size(d));
  for (int d = 0; d < db - 2; ++d) bb.push_back(b.size(d));
  Dims shape = broadcast_shapes(ba, bb, op);
  shape.push_back(a.size(da - 2));
  shape.push_back(b.size(db - 1));
  Tensor out = empty(shape, opts(out_dtype, a.device()));
  if (use_cuda(op, a)) {
#if ENGINE_WITH_CUDA
    run_matmul_cuda(blas_ready(a), blas_ready(b), out, cuda::GemmMode(arith), op);
#endif
  } else {
    const Tensor ac = blas_ready(widened(a)), bc = blas_ready(widened(b));
    dispatch_floating(out_dtype, op, [&](auto zero) {
      using T = decltype(zero);
      run_matmul<T>(ac, bc, out);
    });
  }
  F::matmul(a, b, out);
  return out;
}

void check_operands(const char* op, const Tensor& a, const Tensor& b) {
  ENGINE_CHECK(a.defined() && b.defined(), "{}: undefined operand", op);
  ENGINE_CHECK(a.device() == b.device(), "{}: device mismatch, {} vs {}", op, a.device().str(), b.device().str());
  gemm_arith(op, a.dtype(), b.dtype());
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
    ENGINE_CHECK(bias.device() == x.device(), "linear: device mismatch, {} vs {} (bias)", x.device().str(),
                 bias.device().str());
    ENGINE_CHECK(bias.dim() == 1 && bias.size(0) == out_features,
                 "linear: bias shape {} does not match {} output features", bias.sizes().str(), out_features);
  }
  const GemmArith arith = gemm_arith("linear", x.dtype(), weight.dtype());
  const DType out_dtype = arith == GemmArith::f64 ? DType::f64 : DType::f32;
  if (bias.defined())
    ENGINE_CHECK(bias.dtype() == out_dtype, "linear: bias dtype {} does not match the output dtype {}",
                 dtype_name(bias.dtype()), dtype_name(out_dtype));
  // bf16 arithmetic: the Node records (and saves) the bf16 copies; the bias stays f32.
  const Tensor xin = arith == GemmArith::bf16 ? to_dtype(x, DType::bf16) : x;
  const Tensor win = arith == GemmArith::bf16 ? to_dtype(weight, DType::bf16) : weight;
  Dims shape = x.sizes();
  shape[shape.size() - 1] = out_features;
  Tensor out = empty(shape, opts(out_dtype, x.device()));
  const int64_t rows = x.numel() / std::max<int64_t>(in, 1);

  // What the GEMM reads: on the CPU, f32 widenings of bf16 operands (exact).
  const bool on_cuda = use_cuda("linear", x);
  const Tensor xg = on_cuda ? xin : widened(xin), wg = on_cuda ? win : widened(win);
  // x as a [rows, in] row-major matrix: its leading dims must merge, else copy it.
  Tensor xc = xg;
  int64_t row_stride = 0;
  if (!(xg.stride(xg.dim() - 1) == 1 || in <= 1) || !rows_mergeable(xg, xg.dim() - 1, row_stride) ||
      (rows > 1 && row_stride < in)) {
    autograd::NoGradGuard no_grad;
    xc = clone(xg);
    row_stride = in;
  }
  if (rows <= 1) row_stride = in;
  // W^T [in, out] is W read with the transpose flag; a W that is itself a transposed view needs none.
  Tensor wc = wg;
  BlasView vw = blas_view(in, out_features, wg.stride(1), wg.stride(0));
  if (!vw.ok) {
    autograd::NoGradGuard no_grad;
    wc = clone(wg);
    vw = blas_view(in, out_features, wc.stride(1), wc.stride(0));
  }
  const Tensor bc = bias.defined() ? contiguous(bias.detach()) : Tensor();
  if (on_cuda) {
#if ENGINE_WITH_CUDA
    // Start from the bias in every row, then accumulate the product (beta = 1).
    if (bc.defined()) cuda::bias_fill(out, bc, out_features, 1);
    cuda::GemmDesc d;
    d.mode = cuda::GemmMode(arith);
    d.trans_b = vw.trans;
    d.m = rows, d.n = out_features, d.k = in;
    d.a = xc.raw_data(), d.lda = row_stride;
    d.b = wc.raw_data(), d.ldb = vw.ld;
    d.beta = bc.defined() ? 1 : 0, d.c = out.raw_data(), d.ldc = out_features;
    cuda::gemm(out.device(), d, "linear");
#endif
  } else {
    dispatch_floating(out_dtype, "linear", [&](auto zero) {
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
  }
  F::linear(xin, win, bias, out);
  return out;
}

}  // namespace engine

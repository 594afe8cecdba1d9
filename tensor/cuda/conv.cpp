// conv.cpp (cuda): host side of the CUDA convolution (tensor/cuda/conv.h): buffers, slices and
// the GEMM descriptions; the kernels are in conv.cu.
#include "tensor/cuda/conv.h"

#include <algorithm>

#include "autograd/grad_mode.h"
#include "tensor/cuda/conv_launch.h"
#include "tensor/ops.h"

namespace engine::cuda {

namespace {

// Column buffers of one launch stay under this many bytes (whole samples; at least one).
int64_t column_budget = int64_t(256) << 20;

char* at(const Tensor& t, int64_t elements) {
  return static_cast<char*>(t.raw_data()) + elements * int64_t(dtype_size(t.dtype()));
}

DType compute_dtype(GemmMode mode) { return mode == GemmMode::f64 ? DType::f64 : DType::f32; }
DType input_dtype(GemmMode mode) {
  return mode == GemmMode::f64 ? DType::f64 : mode == GemmMode::bf16 ? DType::bf16 : DType::f32;
}

void check(const char* op, const Tensor& t, DType dtype, const char* what) {
  ENGINE_CHECK(t.device().is_cuda() && t.is_contiguous() && t.dtype() == dtype,
               "{}: {} must be a contiguous {} tensor on a CUDA device, got {} {} on {}", op, what, dtype_name(dtype),
               t.is_contiguous() ? "contiguous" : "strided", dtype_name(t.dtype()), t.device().str());
}

bool direct_1x1(const kernels::ConvShape& s) {
  return s.kernel_h == 1 && s.kernel_w == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 0 && s.pad_w == 0;
}

template <typename F>
void im2col_typed(DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32: f(float(0)); break;
    case DType::f64: f(double(0)); break;
    case DType::bf16: f(uint16_t(0)); break;
    default: throw Error(fmt::format("conv: no CUDA im2col for dtype {}", dtype_name(dtype)));
  }
}

// Samples per chunk so that `per_sample` bytes of buffer fit the budget.
int64_t chunk_of(int64_t batch, int64_t per_sample) {
  return std::clamp<int64_t>(column_budget / std::max<int64_t>(per_sample, 1), 1, std::max<int64_t>(batch, 1));
}

// The column matrices of samples [n0, n0 + nc) of x: x itself for a direct 1x1 conv, else a buffer.
Tensor columns(const cpu::ConvProblem& p, const Tensor& x, int64_t n0, int64_t nc, const void** data) {
  const kernels::ConvShape& s = p.shape;
  if (direct_1x1(s)) {
    *data = at(x, n0 * p.in_channels * s.height * s.width);
    return Tensor();
  }
  const int64_t k = s.channels * s.kernel_h * s.kernel_w, q = s.out_h * s.out_w;
  Tensor col = empty({nc * p.groups * k * q}, {x.dtype(), x.device(), memory::Kind::workspace});
  im2col_typed(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    launch_im2col<T>(s, nc * p.groups, reinterpret_cast<const T*>(at(x, n0 * p.in_channels * s.height * s.width)),
                     col.data<T>(), compute_stream(x.device()));
  });
  *data = col.raw_data();
  return col;
}

}  // namespace

int64_t set_column_budget(int64_t bytes) {
  ENGINE_CHECK(bytes >= 1, "conv: column buffer budget must be >= 1 byte, got {}", bytes);
  const int64_t previous = column_budget;
  column_budget = bytes;
  return previous;
}

void bias_fill(const Tensor& out, const Tensor& bias, int64_t channels, int64_t inner) {
  check("bias", out, out.dtype(), "output");
  check("bias", bias, out.dtype(), "bias");
  if (out.dtype() == DType::f64)
    launch_bias_fill<double>(out.numel(), channels, inner, bias.data<double>(), out.data<double>(),
                             compute_stream(out.device()));
  else
    launch_bias_fill<float>(out.numel(), channels, inner, bias.data<float>(), out.data<float>(),
                            compute_stream(out.device()));
}

void conv2d_forward(const cpu::ConvProblem& p, GemmMode mode, const Tensor& x, const Tensor& w, const Tensor& bias,
                    const Tensor& y) {
  const char* op = "conv2d";
  check(op, x, input_dtype(mode), "input");
  check(op, w, input_dtype(mode), "weight");
  check(op, y, compute_dtype(mode), "output");
  const kernels::ConvShape& s = p.shape;
  const int64_t g_count = p.groups, k = s.channels * s.kernel_h * s.kernel_w, q = s.out_h * s.out_w;
  const int64_t cog = p.out_channels / g_count;
  if (y.numel() == 0) return;
  double beta = 0;
  if (bias.defined()) {
    check(op, bias, compute_dtype(mode), "bias");
    bias_fill(y, bias, p.out_channels, q);
    beta = 1;
  }
  const int64_t esize = int64_t(dtype_size(x.dtype()));
  const int64_t chunk = direct_1x1(s) ? p.batch : chunk_of(p.batch, g_count * k * q * esize);
  for (int64_t n0 = 0; n0 < p.batch; n0 += chunk) {
    const int64_t nc = std::min(chunk, p.batch - n0);
    const void* col = nullptr;
    const Tensor buffer = columns(p, x, n0, nc, &col);
    GemmDesc d;
    d.mode = mode;
    d.m = cog, d.n = q, d.k = k;
    d.lda = k, d.ldb = q, d.ldc = q;
    d.beta = beta;
    if (nc >= g_count) {
      // One batch over the samples per group; the group's weight rows are shared (stride 0).
      for (int64_t g = 0; g < g_count; ++g) {
        d.batch = nc;
        d.a = at(w, g * cog * k), d.stride_a = 0;
        d.b = static_cast<const char*>(col) + g * k * q * esize, d.stride_b = g_count * k * q;
        d.c = at(y, (n0 * p.out_channels + g * cog) * q), d.stride_c = p.out_channels * q;
        gemm(x.device(), d, op);
      }
    } else {
      // One batch over the groups per sample.
      for (int64_t n = n0; n < n0 + nc; ++n) {
        d.batch = g_count;
        d.a = at(w, 0), d.stride_a = cog * k;
        d.b = static_cast<const char*>(col) + (n - n0) * g_count * k * q * esize, d.stride_b = k * q;
        d.c = at(y, n * p.out_channels * q), d.stride_c = cog * q;
        gemm(x.device(), d, op);
      }
    }
  }
}

void conv2d_input(const cpu::ConvProblem& p, GemmMode mode, const Tensor& gy, const Tensor& w, const Tensor& bias,
                  const Tensor& x) {
  const char* op = "conv_transpose2d";
  check(op, gy, input_dtype(mode), "input");
  check(op, w, input_dtype(mode), "weight");
  check(op, x, compute_dtype(mode), "output");
  if (bias.defined()) check(op, bias, compute_dtype(mode), "bias");
  const kernels::ConvShape& s = p.shape;
  const int64_t g_count = p.groups, k = s.channels * s.kernel_h * s.kernel_w, q = s.out_h * s.out_w;
  const int64_t cog = p.out_channels / g_count, slice_in = s.channels * s.height * s.width;
  if (x.numel() == 0) return;
  const DType cdt = compute_dtype(mode);
  const int64_t esize = int64_t(dtype_size(cdt));
  const int64_t chunk = chunk_of(p.batch, g_count * k * q * esize);
  for (int64_t n0 = 0; n0 < p.batch; n0 += chunk) {
    const int64_t nc = std::min(chunk, p.batch - n0);
    // col'[n, g] = W_g^T gy[n, g]: W_g is stored [Cout/G, K], read transposed.
    Tensor col = empty({nc * g_count * k * q}, {cdt, x.device(), memory::Kind::workspace});
    GemmDesc d;
    d.mode = mode;
    d.trans_a = true;
    d.m = k, d.n = q, d.k = cog;
    d.lda = k, d.ldb = q, d.ldc = q;
    if (nc >= g_count) {
      for (int64_t g = 0; g < g_count; ++g) {
        d.batch = nc;
        d.a = at(w, g * cog * k), d.stride_a = 0;
        d.b = at(gy, (n0 * p.out_channels + g * cog) * q), d.stride_b = p.out_channels * q;
        d.c = at(col, g * k * q), d.stride_c = g_count * k * q;
        gemm(x.device(), d, op);
      }
    } else {
      for (int64_t n = n0; n < n0 + nc; ++n) {
        d.batch = g_count;
        d.a = at(w, 0), d.stride_a = cog * k;
        d.b = at(gy, n * p.out_channels * q), d.stride_b = cog * q;
        d.c = at(col, (n - n0) * g_count * k * q), d.stride_c = k * q;
        gemm(x.device(), d, op);
      }
    }
    const Stream stream = compute_stream(x.device());
    if (cdt == DType::f64)
      launch_col2im<double>(s, nc * g_count, g_count, col.data<double>(),
                            bias.defined() ? bias.data<double>() : nullptr,
                            reinterpret_cast<double*>(at(x, n0 * g_count * slice_in)), stream);
    else
      launch_col2im<float>(s, nc * g_count, g_count, col.data<float>(), bias.defined() ? bias.data<float>() : nullptr,
                           reinterpret_cast<float*>(at(x, n0 * g_count * slice_in)), stream);
  }
}

void conv2d_weight(const cpu::ConvProblem& p, GemmMode mode, const Tensor& x, const Tensor& gy, const Tensor& gw) {
  const char* op = "conv2d_weight";
  check(op, x, input_dtype(mode), "input");
  check(op, gy, input_dtype(mode), "output gradient");
  check(op, gw, compute_dtype(mode), "weight gradient");
  ENGINE_CHECK(p.batch >= 1, "{}: an empty batch has no weight gradient on CUDA (input {})", op, x.sizes().str());
  const kernels::ConvShape& s = p.shape;
  const int64_t g_count = p.groups, k = s.channels * s.kernel_h * s.kernel_w, q = s.out_h * s.out_w;
  const int64_t cog = p.out_channels / g_count;
  if (gw.numel() == 0) return;
  const int64_t esize = int64_t(dtype_size(x.dtype()));
  // Per chunk: the columns group-major [G, K, nc*P] and gy as [G, Cout/G, nc*P] (a permuted copy),
  // so dW_g += gy_g col_g^T is one GEMM per group whose k dimension runs over every sample and
  // pixel of the chunk; the groups are one strided batch. Chunks accumulate in order (beta = 1).
  const int64_t chunk = chunk_of(p.batch, (g_count * k + p.out_channels) * q * esize);
  const Stream stream = compute_stream(x.device());
  for (int64_t n0 = 0; n0 < p.batch; n0 += chunk) {
    const int64_t nc = std::min(chunk, p.batch - n0);
    const int64_t cols = nc * q;
    Tensor col = empty({g_count * k * cols}, {x.dtype(), x.device(), memory::Kind::workspace});
    im2col_typed(x.dtype(), [&](auto zero) {
      using T = decltype(zero);
      launch_im2col_group_major<T>(s, nc, g_count,
                                   reinterpret_cast<const T*>(at(x, n0 * p.in_channels * s.height * s.width)),
                                   col.data<T>(), stream);
    });
    // gy[n0:n0+nc] [nc, Cout, P] -> [Cout, nc, P] (no autograd: this is the op's own kernel input).
    Tensor gyt;
    {
      autograd::NoGradGuard no_grad;
      gyt = contiguous(permute(reshape(narrow(gy, 0, n0, nc), {nc, p.out_channels, q}), {1, 0, 2}));
    }
    GemmDesc d;
    d.mode = mode;
    d.trans_b = true;
    d.m = cog, d.n = k, d.k = cols;
    d.lda = cols, d.ldb = cols, d.ldc = k;
    d.batch = g_count;
    d.a = gyt.raw_data(), d.stride_a = cog * cols;
    d.b = col.raw_data(), d.stride_b = k * cols;
    d.c = gw.raw_data(), d.stride_c = cog * k;
    d.beta = n0 == 0 ? 0 : 1;
    gemm(x.device(), d, op);
  }
}

}  // namespace engine::cuda

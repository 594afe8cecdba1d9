// softmax.cpp (cuda): host side of the softmax family on CUDA (softmax.h): device checks, the
// geometry of the lines along the softmax dim, and the launches (softmax.cu).
#include "tensor/cuda/softmax.h"

#include <array>

#include "tensor/cpu/reduce.h"
#include "tensor/cuda/copy.h"
#include "tensor/cuda/device.h"
#include "tensor/cuda/elementwise.h"
#include "tensor/cuda/softmax_launch.h"
#include "tensor/dispatch.h"

namespace engine::cuda {

namespace {

// The lines along `dim` of N same-shaped operands: every other dim, in row-major order.
template <int N>
StridedGeometry<N> line_geometry(const Dims& sizes, int dim, const std::array<const Tensor*, N>& ts) {
  Dims other;
  std::array<Dims, N> strides;
  for (int d = 0; d < sizes.size(); ++d) {
    if (d == dim) continue;
    other.push_back(sizes[d]);
    for (int k = 0; k < N; ++k) strides[size_t(k)].push_back(ts[size_t(k)]->strides()[d]);
  }
  return strided_geometry<N>(other, strides);
}

// Where each row of 2-D logits starts (one operand, the row stride).
StridedGeometry<1> row_starts(const Tensor& logits) {
  return strided_geometry<1>(Dims{logits.size(0)}, {Dims{logits.stride(0)}});
}

void check_on(const char* op, const Tensor& t, const Tensor& ref) {
  ENGINE_CHECK(t.device() == ref.device(), "{}: tensor on {} but expected {}", op, t.device().str(),
               ref.device().str());
}

}  // namespace

void softmax_lines(const Tensor& y, const Tensor& x, int dim, bool log) {
  const char* op = log ? "log_softmax" : "softmax";
  check_device(x.device(), op);
  check_on(op, y, x);
  const int64_t n = cpu::line_size(x, dim);
  const StridedGeometry<2> lines = line_geometry<2>(x.sizes(), dim, {&x, &y});
  if (lines.numel == 0 || x.numel() == 0) return;
  DeviceGuard guard(x.device());
  dispatch_floating(x.dtype(), op, [&](auto zero) {
    using T = decltype(zero);
    const int64_t xs = cpu::line_stride(x, dim), ys = cpu::line_stride(y, dim);
    // Lines along the innermost, contiguous dim: interleaved chunks; long strided lines over few
    // of them: blocked chunks (chunks.h); otherwise one thread per line.
    const Chunks ch = plan_chunks(lines.numel, n, xs == 1);
    if (ch.n_chunks > 1) {
      // Partial results; freed on return, their reuse ordered after the kernels on the stream.
      Tensor scratch = empty({(ch.n_chunks + 2) * lines.numel}, opts(DType::f64, x.device()));
      launch_softmax_chunked<T>(lines, x.data<T>(), xs, y.data<T>(), ys, n, log, ch, scratch.data<double>(),
                                compute_stream(x.device()));
    } else {
      launch_softmax<T>(lines, x.data<T>(), xs, y.data<T>(), ys, n, log, compute_stream(x.device()));
    }
  });
}

void softmax_backward_lines(const Tensor& dx, const Tensor& g, const Tensor& y, int dim, bool log) {
  const char* op = log ? "log_softmax_backward" : "softmax_backward";
  check_device(y.device(), op);
  check_on(op, g, y);
  check_on(op, dx, y);
  ENGINE_CHECK(g.sizes() == y.sizes(), "{}: gradient of shape {} for an output of shape {}", op, g.sizes().str(),
               y.sizes().str());
  const int64_t n = cpu::line_size(y, dim);
  const StridedGeometry<3> lines = line_geometry<3>(y.sizes(), dim, {&g, &y, &dx});
  if (lines.numel == 0 || y.numel() == 0) return;
  DeviceGuard guard(y.device());
  dispatch_floating(y.dtype(), op, [&](auto zero) {
    using T = decltype(zero);
    const int64_t gs = cpu::line_stride(g, dim), ys = cpu::line_stride(y, dim), ds = cpu::line_stride(dx, dim);
    const Chunks ch = plan_chunks(lines.numel, n, gs == 1 && ys == 1);
    if (ch.n_chunks > 1) {
      Tensor scratch = empty({(ch.n_chunks + 1) * lines.numel}, opts(DType::f64, y.device()));
      launch_softmax_backward_chunked<T>(lines, g.data<T>(), gs, y.data<T>(), ys, dx.data<T>(), ds, n, log, ch,
                                         scratch.data<double>(), compute_stream(y.device()));
    } else {
      launch_softmax_backward<T>(lines, g.data<T>(), gs, y.data<T>(), ys, dx.data<T>(), ds, n, log,
                                 compute_stream(y.device()));
    }
  });
}

void cross_entropy(const Tensor& out, const Tensor& logits, const Tensor& target) {
  check_device(logits.device(), "cross_entropy");
  check_on("cross_entropy", target, logits);
  check_on("cross_entropy", out, logits);
  const int64_t rows = logits.size(0), c = logits.size(1);
  Tensor losses = empty({rows}, opts(DType::f64, logits.device()));  // per-row losses, summed in order
  DeviceGuard guard(logits.device());
  dispatch_floating(logits.dtype(), "cross_entropy", [&](auto zero) {
    using T = decltype(zero);
    // Contiguous classes: interleaved chunks over each row's classes (chunks.h); otherwise one
    // thread per row.
    const Chunks ch = plan_chunks(rows, c, logits.stride(1) == 1);
    if (rows > 0 && ch.n_chunks > 1) {
      Tensor scratch = empty({(ch.n_chunks + 2) * rows}, opts(DType::f64, logits.device()));
      launch_cross_entropy_chunked<T>(row_starts(logits), logits.data<T>(), target.data<int64_t>(), target.stride(0),
                                      ch, scratch.data<double>(), losses.data<double>(), out.data<T>(),
                                      compute_stream(logits.device()));
      return;
    }
    launch_cross_entropy<T>(logits.data<T>(), rows, c, logits.stride(0), logits.stride(1),
                            target.data<int64_t>(), target.stride(0), losses.data<double>(), out.data<T>(),
                            compute_stream(logits.device()));
  });
}

void cross_entropy_backward(const Tensor& dx, const Tensor& logits, const Tensor& target, const Tensor& g,
                            double inv_n) {
  check_device(logits.device(), "cross_entropy_backward");
  check_on("cross_entropy_backward", target, logits);
  check_on("cross_entropy_backward", g, logits);
  check_on("cross_entropy_backward", dx, logits);
  ENGINE_CHECK(g.numel() == 1 && g.dtype() == logits.dtype() && dx.is_contiguous(),
               "cross_entropy_backward: expected a one-element {} gradient and a contiguous output",
               dtype_name(logits.dtype()));
  const int64_t rows = logits.size(0), c = logits.size(1);
  if (rows == 0 || c == 0) return;
  DeviceGuard guard(logits.device());
  dispatch_floating(logits.dtype(), "cross_entropy_backward", [&](auto zero) {
    using T = decltype(zero);
    const Chunks ch = plan_chunks(rows, c, logits.stride(1) == 1);
    if (ch.n_chunks > 1) {
      Tensor scratch = empty({(ch.n_chunks + 2) * rows}, opts(DType::f64, logits.device()));
      launch_cross_entropy_backward_chunked<T>(row_starts(logits), logits.data<T>(), target.data<int64_t>(),
                                               target.stride(0), g.data<T>(), inv_n, dx.data<T>(), ch,
                                               scratch.data<double>(), compute_stream(logits.device()));
      return;
    }
    launch_cross_entropy_backward<T>(logits.data<T>(), rows, c, logits.stride(0), logits.stride(1),
                                     target.data<int64_t>(), target.stride(0), g.data<T>(), inv_n, dx.data<T>(),
                                     compute_stream(logits.device()));
  });
}

void one_hot_rows(const Tensor& out, const Tensor& target) {
  check_device(out.device(), "one_hot_rows");
  check_on("one_hot_rows", target, out);
  ENGINE_CHECK(out.is_contiguous() && out.dim() == 2, "one_hot_rows: expected a contiguous [N, C] output");
  cuda::fill_(out, 0.0);
  const int64_t rows = out.size(0), c = out.size(1);
  if (rows == 0 || c == 0) return;
  DeviceGuard guard(out.device());
  dispatch_floating(out.dtype(), "one_hot_rows", [&](auto zero) {
    using T = decltype(zero);
    launch_one_hot<T>(target.data<int64_t>(), target.stride(0), rows, c, out.data<T>(), compute_stream(out.device()));
  });
}

}  // namespace engine::cuda

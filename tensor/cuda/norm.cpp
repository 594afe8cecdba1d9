// norm.cpp (cuda): host side of layer_norm / group_norm on CUDA (norm.h): checks, device
// temporaries for the parameter-gradient partial sums, and the launches (norm.cu).
#include "tensor/cuda/norm.h"

#include <algorithm>
#include <initializer_list>

#include "tensor/cuda/device.h"
#include "tensor/dispatch.h"

namespace engine::cuda {

namespace {

// Rows per chunk of layer_norm's column sums: long enough to amortise the second pass, short
// enough that a large batch of rows gives many threads. Fixed by the shapes only.
constexpr int64_t kRowChunk = 1024;
// The rows are contiguous: every row of 8 or more values is cut into interleaved chunks
// (chunks.h), so that a warp's loads coalesce; a function of the shapes only.
Chunks row_chunks(const NormShape& s) { return plan_chunks(s.rows, s.cg * s.hw, /*contiguous=*/true); }

void check_operands(const char* op, const Tensor& ref, std::initializer_list<const Tensor*> ts) {
  check_device(ref.device(), op);
  for (const Tensor* t : ts) {
    if (!t->defined()) continue;
    ENGINE_CHECK(t->device() == ref.device() && t->is_contiguous(),
                 "{}: every operand must be a contiguous tensor on {} (got one of shape {} on {})", op,
                 ref.device().str(), t->sizes().str(), t->device().str());
  }
}

template <typename T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}
template <typename T>
T* mut_ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

}  // namespace

void norm_forward(const NormShape& s, const Tensor& y, const Tensor& mean, const Tensor& rstd, const Tensor& x,
                  const Tensor& w, const Tensor& b) {
  check_operands("norm_forward", x, {&x, &y, &mean, &rstd, &w, &b});
  if (s.rows == 0 || s.cg * s.hw == 0) return;
  DeviceGuard guard(x.device());
  dispatch_floating(x.dtype(), "norm_forward", [&](auto zero) {
    using T = decltype(zero);
    const Chunks ch = row_chunks(s);
    if (ch.n_chunks > 1) {
      // Partial sums; freed on return, their reuse ordered after the kernels on the stream.
      Tensor scratch = empty({(2 * ch.n_chunks + 2) * s.rows}, opts(DType::f64, x.device()));
      launch_norm_forward_chunked<T>(s, x.data<T>(), ptr_or_null<T>(w), ptr_or_null<T>(b), y.data<T>(),
                                     mean.data<double>(), rstd.data<double>(), ch, scratch.data<double>(),
                                     compute_stream(x.device()));
    } else {
      launch_norm_forward<T>(s, x.data<T>(), ptr_or_null<T>(w), ptr_or_null<T>(b), y.data<T>(), mean.data<double>(),
                             rstd.data<double>(), compute_stream(x.device()));
    }
  });
}

void norm_backward(const NormShape& s, bool layer, const Tensor& dx, const Tensor& dw, const Tensor& db,
                   const Tensor& g, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd) {
  check_operands("norm_backward", x, {&dx, &dw, &db, &g, &x, &w, &mean, &rstd});
  const int64_t k = s.cg * s.hw;
  const Device dev = x.device();
  DeviceGuard guard(dev);
  const Stream stream = compute_stream(dev);
  dispatch_floating(x.dtype(), "norm_backward", [&](auto zero) {
    using T = decltype(zero);
    if (dx.defined() && s.rows > 0 && k > 0) {
      const Chunks ch = row_chunks(s);
      if (ch.n_chunks > 1) {
        Tensor scratch = empty({(2 * ch.n_chunks + 2) * s.rows}, opts(DType::f64, dev));
        launch_norm_backward_dx_chunked<T>(s, g.data<T>(), x.data<T>(), ptr_or_null<T>(w), mean.data<double>(),
                                           rstd.data<double>(), dx.data<T>(), ch, scratch.data<double>(), stream);
      } else {
        launch_norm_backward_dx<T>(s, g.data<T>(), x.data<T>(), ptr_or_null<T>(w), mean.data<double>(),
                                   rstd.data<double>(), dx.data<T>(), stream);
      }
    }
    if (!dw.defined() && !db.defined()) return;
    T* dwp = mut_ptr_or_null<T>(dw);
    T* dbp = mut_ptr_or_null<T>(db);
    if (layer) {
      const int64_t n_chunks = s.rows > 0 ? (s.rows + kRowChunk - 1) / kRowChunk : 0;
      // The partial sums live until the end of this function; later reuse of the block is
      // ordered after the kernels on the compute stream.
      Tensor partial = empty({std::max<int64_t>(1, 2 * n_chunks * k)}, opts(DType::f64, dev));
      launch_layer_norm_param_grads<T>(s, g.data<T>(), x.data<T>(), mean.data<double>(), rstd.data<double>(),
                                       partial.data<double>(), kRowChunk, n_chunks, dwp, dbp, stream);
    } else {
      Tensor partial = empty({std::max<int64_t>(1, 2 * s.rows * s.cg)}, opts(DType::f64, dev));
      launch_group_norm_param_grads<T>(s, g.data<T>(), x.data<T>(), mean.data<double>(), rstd.data<double>(),
                                       partial.data<double>(), dwp, dbp, stream);
    }
  });
}

}  // namespace engine::cuda

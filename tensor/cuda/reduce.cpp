// reduce.cpp (cuda): host side of the CUDA reductions (reduce.h): the plan in plain arrays, the
// choice of chunking (a function of the shapes only, so results never depend on the GPU), the
// device temporaries (arena tensors), and the launches (reduce.cu).
#include "tensor/cuda/reduce.h"

#include "tensor/cuda/device.h"
#include "tensor/cuda/elementwise.h"
#include "tensor/cuda/reduce_launch.h"
#include "tensor/dispatch.h"
#include "tensor/kernels/reduce.h"

namespace engine::cuda {

namespace {

ReduceGeometry geometry_of(const cpu::ReducePlan& p) {
  ReduceGeometry g;
  g.n_kept = p.kept_sizes.size();
  g.n_red = p.red_sizes.size();
  for (int d = 0; d < g.n_kept; ++d) {
    g.kept_sizes[d] = p.kept_sizes[d];
    g.kept_strides[d] = p.kept_strides[d];
  }
  for (int d = 0; d < g.n_red; ++d) {
    g.red_sizes[d] = p.red_sizes[d];
    g.red_strides[d] = p.red_strides[d];
  }
  g.count = p.count;
  g.n_out = p.n_out;
  return g;
}

// dst (n_out elements on x's device) = the reduction of x by r.
template <typename T, typename R, typename Out>
void run_reduce(const char* op, const Tensor& x, const cpu::ReducePlan& p, Out* dst, const R& r) {
  check_device(x.device(), op);
  if (p.n_out == 0) return;
  // Interleaved chunks when the reduced elements of an output are one contiguous run (a
  // reduction over the innermost dim), blocked chunks for long strided runs (chunks.h).
  const bool contiguous = p.red_sizes.size() == 1 && p.red_strides[0] == 1;
  const Chunks ch = plan_chunks(p.n_out, p.count, contiguous);
  // The chunks' accumulators; freed at the end of this function, which is safe while the kernels
  // still run because every later use of the block is ordered after them on the compute stream.
  Tensor scratch;
  if (ch.n_chunks > 1)
    scratch = empty({int64_t(sizeof(typename R::Acc)) * p.n_out * ch.n_chunks}, opts(DType::u8, x.device()));
  DeviceGuard guard(x.device());
  launch_reduce<R, T, Out>(geometry_of(p), x.data<T>(), dst, r, ch.n_chunks > 1 ? scratch.raw_data() : nullptr, ch,
                           compute_stream(x.device()));
}

void check_out(const char* op, const Tensor& out, const Tensor& x, const cpu::ReducePlan& p) {
  ENGINE_CHECK(out.device() == x.device() && out.is_contiguous() && out.numel() == p.n_out,
               "{}: the output must be a contiguous tensor of {} elements on {} (got shape {} on {})", op, p.n_out,
               x.device().str(), out.sizes().str(), out.device().str());
}

}  // namespace

void sum_dims(const Tensor& out, const Tensor& x, const cpu::ReducePlan& p, bool mean) {
  const char* op = mean ? "mean" : "sum";
  check_out(op, out, x, p);
  dispatch_floating(x.dtype(), op, [&](auto zero) {
    using T = decltype(zero);
    run_reduce<T>(op, x, p, out.data<T>(), kernels::SumReducer<T>{mean});
  });
}

void extremum_dims(const Tensor& out, const Tensor& x, const cpu::ReducePlan& p, bool is_min) {
  const char* op = is_min ? "amin" : "amax";
  check_out(op, out, x, p);
  dispatch_floating(x.dtype(), op, [&](auto zero) {
    using T = decltype(zero);
    if (is_min)
      run_reduce<T>(op, x, p, out.data<T>(), kernels::MaxMinReducer<T, true>{});
    else
      run_reduce<T>(op, x, p, out.data<T>(), kernels::MaxMinReducer<T, false>{});
  });
}

void logsumexp_dims(const Tensor& out, const Tensor& x, const cpu::ReducePlan& p) {
  check_out("logsumexp", out, x, p);
  Tensor maxes = empty({p.n_out}, opts(x.dtype(), x.device()));
  dispatch_floating(x.dtype(), "logsumexp", [&](auto zero) {
    using T = decltype(zero);
    run_reduce<T>("logsumexp", x, p, maxes.data<T>(), kernels::MaxMinReducer<T, false>{});
    run_reduce<T>("logsumexp", x, p, out.data<T>(), kernels::LogSumExpReducer<T>{maxes.data<T>()});
  });
}

void var_dims(const Tensor& out, const Tensor& x, const cpu::ReducePlan& p, int64_t correction) {
  check_out("var", out, x, p);
  Tensor means = empty({p.n_out}, opts(DType::f64, x.device()));
  dispatch_floating(x.dtype(), "var", [&](auto zero) {
    using T = decltype(zero);
    run_reduce<T>("var", x, p, means.data<double>(), kernels::SumReducer<T, double>{/*divide=*/true});
    run_reduce<T>("var", x, p, out.data<T>(), kernels::VarReducer<T>{means.data<double>(), correction});
  });
}

void argmax_dim(const Tensor& out, const Tensor& x, int dim) {
  check_device(x.device(), "argmax");
  ENGINE_CHECK(out.device() == x.device() && out.is_contiguous() && out.dtype() == DType::i64,
               "argmax: the output must be a contiguous i64 tensor on {}", x.device().str());
  const int64_t n = cpu::line_size(x, dim), stride = cpu::line_stride(x, dim);
  // The lines: every dim but `dim`, numbered in row-major order (= out's contiguous order).
  Dims sizes, strides;
  for (int d = 0; d < x.dim(); ++d)
    if (d != dim) {
      sizes.push_back(x.sizes()[d]);
      strides.push_back(x.strides()[d]);
    }
  const StridedGeometry<1> lines = strided_geometry<1>(sizes, {strides});
  if (lines.numel == 0) return;
  DeviceGuard guard(x.device());
  dispatch_numeric(x.dtype(), "argmax", [&](auto zero) {
    using T = decltype(zero);
    launch_argmax<T>(lines, x.data<T>(), n, stride, out.data<int64_t>(), compute_stream(x.device()));
  });
}

}  // namespace engine::cuda

// ops_reduce.cpp: reductions over any set of dims (empty dims = all): sum, mean, amax, amin,
// logsumexp, var, and argmax along one dim. The math is in tensor/kernels/reduce.h, the loop in
// tensor/cpu/reduce.h (accumulation in double, an order fixed by the shapes, so results do not
// depend on the thread count) or, for CUDA tensors, tensor/cuda/reduce.h (the same reducers, one
// thread per output, chunked for long reductions); the backward formulas in
// autograd/formulas/reduce.cpp.
#include "autograd/formulas/reduce.h"
#include "tensor/cpu/reduce.h"
#include "tensor/dispatch.h"
#include "tensor/kernels/reduce.h"
#include "tensor/op_helpers.h"
#include "tensor/ops.h"
#if ENGINE_WITH_CUDA
#include "tensor/cuda/reduce.h"
#endif

namespace engine {

namespace F = autograd::formulas;
namespace K = kernels;

namespace {

void check_reduce_input(const char* op, const Tensor& x) {
  ENGINE_CHECK(x.defined(), "{}: undefined input", op);
  check_floating(op, x);
}

// amax/amin/argmax have no value for an empty reduction (PyTorch raises too).
void check_not_empty(const char* op, const Tensor& x, const cpu::ReducePlan& p, const Dims& dims) {
  ENGINE_CHECK(p.count > 0 || p.n_out == 0,
               "{}: cannot reduce over an empty dimension (input shape {}, dims {}); the result has no "
               "identity",
               op, x.sizes().str(), dims.empty() ? std::string("all") : dims.str());
}

}  // namespace

Tensor sum(const Tensor& x, const Dims& dims, bool keepdim) {
  ENGINE_OP("sum", x);
  check_reduce_input("sum", x);
  const cpu::ReducePlan p = cpu::plan_reduce(x, dims, keepdim, "sum");
  Tensor out = empty(p.out_sizes, opts(x.dtype(), x.device()));
  if (use_cuda("sum", x)) {
#if ENGINE_WITH_CUDA
    cuda::sum_dims(out, x, p, /*mean=*/false);
#endif
  } else {
    dispatch_floating(x.dtype(), "sum", [&](auto zero) {
      using T = decltype(zero);
      cpu::reduce_dims(x.data<T>(), p, out.data<T>(), K::SumReducer<T>{});
    });
  }
  F::sum(x, out, dims, keepdim);
  return out;
}

Tensor mean(const Tensor& x, const Dims& dims, bool keepdim) {
  ENGINE_OP("mean", x);
  check_reduce_input("mean", x);
  const cpu::ReducePlan p = cpu::plan_reduce(x, dims, keepdim, "mean");
  Tensor out = empty(p.out_sizes, opts(x.dtype(), x.device()));
  if (use_cuda("mean", x)) {
#if ENGINE_WITH_CUDA
    cuda::sum_dims(out, x, p, /*mean=*/true);
#endif
  } else {
    dispatch_floating(x.dtype(), "mean", [&](auto zero) {
      using T = decltype(zero);
      cpu::reduce_dims(x.data<T>(), p, out.data<T>(), K::SumReducer<T>{/*divide=*/true});
    });
  }
  F::mean(x, out, dims, keepdim, p.count);
  return out;
}

namespace {

Tensor amax_amin(const char* op, const Tensor& x, const Dims& dims, bool keepdim, bool is_min) {
  check_reduce_input(op, x);
  const cpu::ReducePlan p = cpu::plan_reduce(x, dims, keepdim, op);
  check_not_empty(op, x, p, dims);
  Tensor out = empty(p.out_sizes, opts(x.dtype(), x.device()));
  if (use_cuda(op, x)) {
#if ENGINE_WITH_CUDA
    cuda::extremum_dims(out, x, p, is_min);
#endif
  } else {
    dispatch_floating(x.dtype(), op, [&](auto zero) {
      using T = decltype(zero);
      if (is_min)
        cpu::reduce_dims(x.data<T>(), p, out.data<T>(), K::MaxMinReducer<T, true>{});
      else
        cpu::reduce_dims(x.data<T>(), p, out.data<T>(), K::MaxMinReducer<T, false>{});
    });
  }
  F::amax_amin(is_min ? "AminBackward" : "AmaxBackward", x, out, dims, keepdim);
  return out;
}

}  // namespace

Tensor amax(const Tensor& x, const Dims& dims, bool keepdim) {
  ENGINE_OP("amax", x);
  return amax_amin("amax", x, dims, keepdim, false);
}

Tensor amin(const Tensor& x, const Dims& dims, bool keepdim) {
  ENGINE_OP("amin", x);
  return amax_amin("amin", x, dims, keepdim, true);
}

Tensor logsumexp(const Tensor& x, const Dims& dims, bool keepdim) {
  ENGINE_OP("logsumexp", x);
  check_reduce_input("logsumexp", x);
  const cpu::ReducePlan p = cpu::plan_reduce(x, dims, keepdim, "logsumexp");
  Tensor out = empty(p.out_sizes, opts(x.dtype(), x.device()));
  // Pass 1: the max of each output (the shift); pass 2: m + log(sum exp(x - m)).
  // An empty reduction gives log(0) = -inf, as PyTorch.
  if (use_cuda("logsumexp", x)) {
#if ENGINE_WITH_CUDA
    cuda::logsumexp_dims(out, x, p);
#endif
  } else {
    Tensor maxes = empty({p.n_out}, opts(x.dtype(), x.device()));
    dispatch_floating(x.dtype(), "logsumexp", [&](auto zero) {
      using T = decltype(zero);
      cpu::reduce_dims(x.data<T>(), p, maxes.data<T>(), K::MaxMinReducer<T, false>{});
      cpu::reduce_dims(x.data<T>(), p, out.data<T>(), K::LogSumExpReducer<T>{maxes.data<T>()});
    });
  }
  F::logsumexp(x, out, dims, keepdim);
  return out;
}

Tensor var(const Tensor& x, const Dims& dims, int64_t correction, bool keepdim) {
  ENGINE_OP("var", x);
  check_reduce_input("var", x);
  ENGINE_CHECK(correction >= 0, "var: correction must be >= 0, got {}", correction);
  const cpu::ReducePlan p = cpu::plan_reduce(x, dims, keepdim, "var");
  Tensor out = empty(p.out_sizes, opts(x.dtype(), x.device()));
  // Pass 1: the means in double; pass 2: sum of squared deviations (exact two-pass variance).
  if (use_cuda("var", x)) {
#if ENGINE_WITH_CUDA
    cuda::var_dims(out, x, p, correction);
#endif
  } else {
    Tensor means = empty({p.n_out}, opts(DType::f64, x.device()));
    dispatch_floating(x.dtype(), "var", [&](auto zero) {
      using T = decltype(zero);
      cpu::reduce_dims(x.data<T>(), p, means.data<double>(), K::SumReducer<T, double>{/*divide=*/true});
      cpu::reduce_dims(x.data<T>(), p, out.data<T>(), K::VarReducer<T>{means.data<double>(), correction});
    });
  }
  F::var(x, out, dims, correction, keepdim, p.count);
  return out;
}

Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
  ENGINE_OP("argmax", x);
  ENGINE_CHECK(x.defined(), "argmax: undefined input");
  const int d = wrap_dim(dim, x.dim(), "argmax");
  ENGINE_CHECK(cpu::line_size(x, d) > 0, "argmax: cannot take the argmax of an empty dim {} (input shape {})",
               dim, x.sizes().str());
  Dims out_sizes = x.sizes();
  if (x.dim() > 0) {
    if (keepdim)
      out_sizes[d] = 1;
    else
      out_sizes.erase(d);
  }
  Tensor out = empty(out_sizes, opts(DType::i64, x.device()));
  if (use_cuda("argmax", x)) {
#if ENGINE_WITH_CUDA
    cuda::argmax_dim(out, x, d);
#endif
  } else {
    dispatch_numeric(x.dtype(), "argmax", [&](auto zero) {
      using T = decltype(zero);
      cpu::argmax_dim<T>(x, d, out.data<int64_t>());
    });
  }
  return out;  // no grad: an index
}

}  // namespace engine

// ops_reduce.cpp: reductions over any set of dims (empty dims = all). Accumulation is in double,
// in a fixed order per output element, so results do not depend on the thread count.
#include "autograd/formulas/reduce.h"
#include "tensor/cpu/reduce.h"
#include "tensor/dispatch.h"
#include "tensor/op_helpers.h"
#include "tensor/ops.h"

namespace engine {

namespace F = autograd::formulas;

Tensor sum(const Tensor& x, const Dims& dims, bool keepdim) {
  ENGINE_OP("sum", x);
  check_floating("sum", x);
  check_cpu("sum", x);
  const cpu::ReducePlan p = cpu::plan_reduce(x, dims, keepdim, "sum");
  Tensor out = empty(p.out_sizes, opts(x.dtype(), x.device()));
  dispatch_floating(x.dtype(), "sum", [&](auto zero) {
    using T = decltype(zero);
    cpu::reduce_dims<T>(x, p, out, 0.0, [](double a, T v) { return a + double(v); },
                        [](double a, int64_t) { return T(a); });
  });
  F::sum(x, out, dims, keepdim);
  return out;
}

Tensor mean(const Tensor& x, const Dims& dims, bool keepdim) {
  ENGINE_OP("mean", x);
  check_floating("mean", x);
  check_cpu("mean", x);
  const cpu::ReducePlan p = cpu::plan_reduce(x, dims, keepdim, "mean");
  Tensor out = empty(p.out_sizes, opts(x.dtype(), x.device()));
  dispatch_floating(x.dtype(), "mean", [&](auto zero) {
    using T = decltype(zero);
    cpu::reduce_dims<T>(x, p, out, 0.0, [](double a, T v) { return a + double(v); },
                        [](double a, int64_t n) { return T(a / double(n)); });
  });
  F::mean(x, out, dims, keepdim, p.count);
  return out;
}

}  // namespace engine

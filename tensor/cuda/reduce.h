// reduce.h (cuda): the reductions of tensor/ops_reduce.cpp on CUDA tensors. The op plans the
// reduction once (cpu::plan_reduce: output shape, coalesced kept and reduced dims) and hands the
// plan here or to the CPU loop; everything else (checks, output allocation, autograd) is shared.
//
//   if (use_cuda("sum", x)) cuda::sum_dims(out, x, plan, false); else cpu::reduce_dims(...);
//
// Kernels: reduce.cu (one thread per output, chunked for long reductions over few outputs).
// Every function writes a contiguous `out` of plan.n_out elements on x's device, asynchronously
// on the device's compute stream.
#pragma once
#include "tensor/cpu/reduce.h"
#include "tensor/tensor.h"

namespace engine::cuda {

// sum (mean = false) or mean (mean = true) of x over the plan's reduced dims.
void sum_dims(const Tensor& out, const Tensor& x, const cpu::ReducePlan& p, bool mean);
// amax (is_min = false) or amin (is_min = true).
void extremum_dims(const Tensor& out, const Tensor& x, const cpu::ReducePlan& p, bool is_min);
// logsumexp, max-shifted: a max pass into a device temporary, then the shifted sum.
void logsumexp_dims(const Tensor& out, const Tensor& x, const cpu::ReducePlan& p);
// var with `correction`: the means in double into a device temporary, then the squared deviations.
void var_dims(const Tensor& out, const Tensor& x, const cpu::ReducePlan& p, int64_t correction);
// argmax along `dim` (non-empty) of x (any strides, any numeric dtype) into contiguous i64 out.
void argmax_dim(const Tensor& out, const Tensor& x, int dim);

}  // namespace engine::cuda

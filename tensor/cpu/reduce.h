// reduce.h (cpu): reduction over a set of dims, shared by sum/mean/amax/amin/logsumexp/var.
//
// reduce_dims<T, Acc>(x, dims, keepdim, init, step, finish): for each output element, folds
// acc = step(acc, x_value) over the reduced sub-space (in a fixed order, so the result does not
// depend on the thread count), then writes finish(acc, count). Outputs are spread over threads.
#pragma once
#include <vector>

#include "tensor/cpu/loops.h"
#include "tensor/tensor.h"

namespace engine::cpu {

// The output shape and the reduced/kept split of a reduction.
struct ReducePlan {
  Dims out_sizes;      // with keepdim applied
  Dims kept_sizes;     // sizes of kept dims (keepdim=true layout without 1s for reduced dims)
  Dims kept_strides;   // x strides of the kept dims
  Dims red_sizes;      // sizes of reduced dims
  Dims red_strides;    // x strides of the reduced dims
  int64_t count = 1;   // number of elements folded per output
};
ReducePlan plan_reduce(const Tensor& x, const Dims& dims, bool keepdim, const char* op);

template <typename T, typename Acc, typename Step, typename Finish>
void reduce_dims(const Tensor& x, const ReducePlan& p, const Tensor& out, Acc init, Step step, Finish finish) {
  const T* src = x.data<T>();
  T* dst = out.data<T>();
  const int64_t n_out = p.kept_sizes.product();
  const int nr = p.red_sizes.size();
  const int nk = p.kept_sizes.size();
#pragma omp parallel for schedule(static) if (n_out * p.count >= kParallelGrain && n_out > 1)
  for (int64_t o = 0; o < n_out; ++o) {
    int64_t base = 0, rem = o;
    for (int d = nk - 1; d >= 0; --d) {
      base += (rem % p.kept_sizes[d]) * p.kept_strides[d];
      rem /= p.kept_sizes[d];
    }
    Acc acc = init;
    if (nr == 0) {
      acc = step(acc, src[base]);
    } else {
      int64_t idx[kMaxDims] = {0};
      int64_t off = base;
      const int64_t inner = p.red_sizes[nr - 1], inner_stride = p.red_strides[nr - 1];
      for (int64_t r = 0; r < p.count; r += inner) {
        for (int64_t i = 0; i < inner; ++i) acc = step(acc, src[off + i * inner_stride]);
        // advance the outer reduced dims
        for (int d = nr - 2; d >= 0; --d) {
          off += p.red_strides[d];
          if (++idx[d] < p.red_sizes[d]) break;
          off -= idx[d] * p.red_strides[d];
          idx[d] = 0;
        }
      }
    }
    dst[o] = finish(acc, p.count);
  }
}

}  // namespace engine::cpu

// modulated_weight_composite.h: the per-sample modulated weight written as a composite of
// registered differentiable ops (square, sum, bmm/matmul, rsqrt, broadcast mul): the form
// nn/modconv.cpp used before the fused `modulated_weight` op (docs/fused-ops.md). An independent
// formulation of the same math, shared by tests/test_modulated_weight.cpp (equality to f32
// rounding) and bench/bench_modulated_weight.cpp (the ablation it is timed against).
#pragma once
#include "tensor/ops.h"

namespace engine::test {

inline Tensor modulated_weight_composite(const Tensor& kernel, const Tensor& styles, const ModulatedWeightParams& p) {
  const bool batched = p.batched;
  Tensor f;
  if (!p.demodulate) {
    f = unsqueeze(mul(styles, p.weight_gain), 1);  // [B, 1, Cin]
  } else {
    const int64_t lead = batched ? 1 : 0;
    const int64_t cin = kernel.size(lead + 1);
    int64_t taps = 1;
    Dims tap_dims;
    for (int64_t d = lead + 2; d < kernel.dim(); ++d) {
      taps *= kernel.size(d);
      tap_dims.push_back(d);
    }
    const Tensor q = tap_dims.empty() ? square(kernel) : sum(square(kernel), tap_dims);
    const Tensor r2 = div(sum(q, {lead + 1}, true), double(cin * taps));
    const Tensor sn = mul(styles, rsqrt(mean(square(styles))));
    const Tensor sn2 = square(sn);
    const Tensor t = batched ? squeeze(bmm(q, unsqueeze(sn2, 2)), 2) : matmul(sn2, transpose(q, 0, 1));
    const Tensor r2b = batched ? squeeze(r2, 2) : unsqueeze(squeeze(r2, 1), 0);
    const Tensor d = rsqrt(add(div(t, r2b), p.eps));
    f = mul(unsqueeze(mul(d, rsqrt(r2b)), 2), unsqueeze(sn, 1));
  }
  Tensor k = batched ? kernel : unsqueeze(kernel, 0);
  for (int64_t d = 3; d < k.dim(); ++d) f = unsqueeze(f, -1);
  if (p.transposed) {
    k = transpose(k, 1, 2);
    f = transpose(f, 1, 2);
  }
  return mul(k, f);
}

}  // namespace engine::test

// disc_attention.cpp: tied-QK squared-L2 self-attention over pixels (see disc_attention.h).
//
// f32 / f64 run the fused op l2_attention_fused(..., L2AttnForm::sq_distance)
// (tensor/ops_l2_attention.h): no [N*h, T, T] matrix is kept for backward or built by the first-order
// backward (at 16x16 px and batch 4 each such matrix is 16 MiB, and the unfused form kept several:
// they set D_main's peak). R1's double backward goes through the op's create_graph formulas
// (autograd/formulas/l2_attention.cpp), which build the full matrices from differentiable ops.
// Other dtypes (the op takes only f32 / f64) keep the unfused ops below.
#include "nn/disc_attention.h"

#include <cmath>

#include "tensor/memory/profiler.h"
#include "tensor/ops_l2_attention.h"

namespace engine::nn {

DiscLayerNorm::DiscLayerNorm(int64_t c, double e)
    : Module("DiscLayerNorm"),
      channels(c),
      eps(e),
      weight(register_parameter("weight", {c}, Init::ones(), 1.0, /*weight_decay=*/false)),
      bias(register_parameter("bias", {c}, Init::zeros(), 1.0, /*weight_decay=*/false)) {}

Tensor DiscLayerNorm::forward(const Tensor& x) const {
  return layer_norm(x, {channels}, weight.value, bias.value, eps);
}

DiscL2SelfAttention::DiscL2SelfAttention(int64_t c, int64_t d)
    : Module("DiscL2SelfAttention"),
      channels(c),
      head_dim(d),
      heads(d > 0 ? c / d : 0),
      norm(register_module<DiscLayerNorm>("norm", c)),
      qk(register_module<EqualLinear>("qk", c, c, /*bias=*/false)),
      v(register_module<EqualLinear>("v", c, c, /*bias=*/false)),
      out(register_module<EqualLinear>("out", c, c, /*bias=*/true)) {
  ENGINE_CHECK(d > 0 && c % d == 0, "DiscL2SelfAttention: head_dim {} must divide the {} channels", d, c);
}

Tensor DiscL2SelfAttention::forward(const Tensor& x) const {
  ENGINE_CHECK(x.dim() == 4 && x.size(1) == channels, "DiscL2SelfAttention: expected x [N, {}, H, W], got {}", channels,
               x.sizes().str());
  memory::ModuleScope scope("attn");
  const int64_t n = x.size(0), hh = x.size(2), ww = x.size(3), t = hh * ww, h = heads, d = head_dim;
  // Pixels as tokens: [N, T, C].
  const Tensor tokens = transpose(reshape(x, {n, channels, t}), 1, 2);
  const Tensor u = norm.forward(tokens);
  const Tensor qkp = qk.forward(u), vp = v.forward(u);  // [N, T, C]
  if (qkp.dtype() == DType::f32 || qkp.dtype() == DType::f64) {
    // Tied q = k, [N, T, h, d] views of the projections; the op returns [N, T, h*d] = [N, T, C].
    const Tensor q4 = reshape(qkp, {n, t, h, d});
    const Tensor merged = l2_attention_fused(q4, q4, reshape(vp, {n, t, h, d}), 0.0, L2AttnForm::sq_distance);
    const Tensor y = reshape(transpose(out.forward(merged), 1, 2), {n, channels, hh, ww});
    return mul(add(x, y), std::sqrt(0.5));
  }
  // Heads: [N, T, C] -> [N*h, T, d].
  auto split_heads = [&](const Tensor& a) {
    return reshape(permute(reshape(a, {n, t, h, d}), {0, 2, 1, 3}), {n * h, t, d});
  };
  const Tensor q = split_heads(qkp);
  const Tensor val = split_heads(vp);
  // Note [L2 logits without the row constant] (disc_attention.h):
  //   l_ij = (2 q_i.q_j - ||q_j||^2) / sqrt(d)
  const double scale = 1.0 / std::sqrt(double(d));
  const Tensor qq = bmm(q, transpose(q, 1, 2));                  // [N*h, T, T]
  const Tensor norms = reshape(sum(square(q), {2}), {n * h, 1, t});  // ||q_j||^2 as a row
  const Tensor logits = sub(mul(qq, 2.0 * scale), mul(norms, scale));
  const Tensor o = bmm(softmax(logits, -1), val);  // [N*h, T, d]
  const Tensor merged = reshape(permute(reshape(o, {n, h, t, d}), {0, 2, 1, 3}), {n, t, channels});
  const Tensor y = reshape(transpose(out.forward(merged), 1, 2), {n, channels, hh, ww});
  return mul(add(x, y), std::sqrt(0.5));
}

}  // namespace engine::nn

// attention.cpp: L2-distance attention and Aurora's attention layers (docs/aurora-spec.md
// section 5). The math and the parameter names are in attention.h.
//
// Note [L2 attention logits]
// Spec 5.1 / 11.2: l_ij = -||q_i - k_j|| / sqrt(d), the plain (not squared) Euclidean distance.
//   1. One GEMM. ||q - k||^2 = |q|^2 + |k|^2 - 2 q.k. Appending two columns to q and k,
//        q^ = [-2c q, c (|q|^2 + eps), c],   k^ = [k, 1, |k|^2],   c = 1/d,
//      gives u = q^ . k^ = c (||q - k||^2 + eps) from a single batched GEMM over [B, heads], so the
//      norms, eps and the scale cost no pass over the Tq x Tk matrix (the appended columns are
//      the size of q and k). Then l = -sqrt(max(u, c eps / 2)): clamp, sqrt, neg and the softmax
//      are the only full-size elementwise passes.
//   2. Why eps. ||q - k|| is not differentiable where q = k (its gradient (q - k)/||q - k|| has no
//      limit there) and its second derivative grows like 1/||q - k|| near it, so R1's double
//      backward through the discriminator's attention would meet inf/NaN whenever a query comes
//      close to a key. sqrt(||q - k||^2 + eps) is smooth everywhere; its gradient
//      (q - k)/sqrt(||q - k||^2 + eps) keeps the distance's 1-Lipschitz bound, is exactly 0 at
//      q = k (the subgradient torch.cdist returns there), and its second derivative is bounded by
//      eps^(-1/2). It changes a logit by about d^(-1/2) eps / (2 ||q - k||): 6e-9 for the typical
//      distance 11 at d = 64 with eps = 1e-6 (kL2AttentionEps), far below f32 resolution, so the
//      layer matches torch.cdist within f32 tolerances (the parity tests compare against cdist).
//   3. Why the clamp. The GEMM form cancels: u has a rounding error of about
//      ulp * c (|q|^2 + |k|^2), which in f32 (|q|^2 ~ 64 at d = 64) is ~1e-5 * c, above c eps, so
//      near q = k the computed u can be below c eps or even negative (sqrt -> NaN). The floor
//      c eps / 2 is never active in exact arithmetic (u >= c eps there); it only acts where rounding
//      has eaten eps, and keeps the sqrt argument >= c eps / 2, hence every gradient finite
//      (|d sqrt(u) / du| <= (2 c eps)^(-1/2)). In f64 the rounding (1e-16 relative) stays far below
//      eps, so gradcheck and gradgradcheck at coincident q, k see the smooth function of point 2.
//   (The released code calls torch.cdist(p=2), which on its GEMM path clamps the squared distance
//   at 1e-30: its gradient at a near-coincidence can reach ~1e15 and is 0 at an exact one.)
#include "nn/attention.h"

#include <cmath>
#include <string>

#include "nn/moe.h"
#include "tensor/memory/profiler.h"
#include "tensor/ops.h"
#include "tensor/ops_l2_attention.h"

namespace engine::nn {

namespace {

bool is_float_compute(DType t) { return t == DType::f32 || t == DType::f64; }

void check_tokens(const char* who, const char* what, const Tensor& t, int64_t width) {
  ENGINE_CHECK(t.defined(), "{}: {} is undefined", who, what);
  ENGINE_CHECK(t.dim() == 3 && t.size(2) == width, "{}: expected {} [B, T, {}], got shape {}", who, what, width,
               t.sizes().str());
}

void check_w(const char* who, const Tensor& w, int64_t batch, int64_t w_dim) {
  ENGINE_CHECK(w.defined(), "{}: w is undefined", who);
  ENGINE_CHECK(w.dim() == 2 && w.size(0) == batch && w.size(1) == w_dim, "{}: expected w [{}, {}], got shape {}",
               who, batch, w_dim, w.sizes().str());
}

// [B, T, heads, d] (a view of q or k) -> the augmented [B, heads, T, d + 2] of Note [L2 attention
// logits]: the query side [-2c q, c (|q|^2 + eps), c] or the key side [k, 1, |k|^2].
Tensor augment(const Tensor& x, bool query, double c, double eps) {
  const Tensor xp = permute(x, {0, 2, 1, 3});                 // [B, heads, T, d], a view
  const Tensor norm2 = sum(square(xp), {-1}, true);           // [B, heads, T, 1]
  const Dims col{xp.size(0), xp.size(1), xp.size(2), 1};
  const TensorOptions o = opts(x.dtype(), x.device());
  if (query) return cat({mul(xp, -2.0 * c), add(mul(norm2, c), c * eps), full(col, c, o)}, -1);
  return cat({xp, full(col, 1.0, o), norm2}, -1);
}

}  // namespace

// ---- L2 attention ---------------------------------------------------------------------------

Tensor l2_attention_logits(const Tensor& q, const Tensor& k, double eps) {
  ENGINE_CHECK(q.defined() && k.defined(), "l2_attention: undefined q or k");
  ENGINE_CHECK(q.dim() == 4 && k.dim() == 4, "l2_attention: expected q [B, Tq, heads, d] and k [B, Tk, heads, d], got shapes {} and {}",
               q.sizes().str(), k.sizes().str());
  ENGINE_CHECK(q.size(0) == k.size(0) && q.size(2) == k.size(2) && q.size(3) == k.size(3),
               "l2_attention: q {} and k {} differ in batch, heads or head dim", q.sizes().str(), k.sizes().str());
  ENGINE_CHECK(q.size(3) > 0, "l2_attention: head dim must be positive");
  ENGINE_CHECK(eps > 0, "l2_attention: eps must be positive (Note [L2 attention logits]), got {}", eps);
  const double c = 1.0 / double(q.size(3));
  const Tensor qa = augment(q, true, c, eps);   // [B, heads, Tq, d + 2]
  const Tensor ka = augment(k, false, c, eps);  // [B, heads, Tk, d + 2]
  const Tensor u = matmul(qa, transpose(ka, -1, -2));  // c (||q - k||^2 + eps), [B, heads, Tq, Tk]
  return neg(sqrt(clamp(u, 0.5 * c * eps, std::nullopt)));
}

Tensor l2_attention(const Tensor& q, const Tensor& k, const Tensor& v, double eps) {
  memory::ModuleScope scope("l2_attention");
  ENGINE_CHECK(v.defined() && v.dim() == 4, "l2_attention: expected v [B, Tk, heads, dv], got {}",
               v.defined() ? v.sizes().str() : std::string("undefined"));
  ENGINE_CHECK(v.size(0) == k.size(0) && v.size(1) == k.size(1) && v.size(2) == k.size(2),
               "l2_attention: v {} does not match k {} in batch, tokens or heads", v.sizes().str(), k.sizes().str());
  // softmax(l2_attention_logits(q, k, eps)) v as one op that keeps no Tq x Tk matrix for
  // backward (tensor/ops_l2_attention.cpp; CPU, f32 and f64); otherwise the ops one by one.
  const bool fused = q.defined() && q.device().is_cpu() && (q.dtype() == DType::f32 || q.dtype() == DType::f64) &&
                     k.defined() && k.dtype() == q.dtype() && v.dtype() == q.dtype();
  if (fused) return l2_attention_fused(q, k, v, eps);
  const Tensor a = softmax(l2_attention_logits(q, k, eps), -1);  // [B, heads, Tq, Tk]
  const Tensor o = matmul(a, permute(v, {0, 2, 1, 3}));          // [B, heads, Tq, dv]
  return reshape(permute(o, {0, 2, 1, 3}), {q.size(0), q.size(1), q.size(2) * v.size(3)});
}

// ---- Building blocks ------------------------------------------------------------------------

namespace {
// x in a dtype the norm kernels compute in (f32, or f64 for gradcheck), parameters to match.
Tensor as_compute(const Tensor& t, DType dt) { return t.dtype() == dt ? t : to_dtype(t, dt); }
}  // namespace

LayerNorm::LayerNorm(int64_t c, double e)
    : Module("LayerNorm"),
      channels(c),
      eps(e),
      weight(register_parameter("weight", {c}, Init::ones(), 1.0, false)),
      bias(register_parameter("bias", {c}, Init::zeros(), 1.0, false)) {}

Tensor LayerNorm::forward(const Tensor& x) const {
  const DType dt = is_float_compute(x.dtype()) ? x.dtype() : DType::f32;
  const Tensor y = layer_norm(as_compute(x, dt), {channels}, as_compute(weight.value, dt), as_compute(bias.value, dt), eps);
  return as_compute(y, x.dtype());
}

GroupNorm::GroupNorm(int64_t g, int64_t c, double e)
    : Module("GroupNorm"),
      num_groups(g),
      channels(c),
      eps(e),
      weight(register_parameter("weight", {c}, Init::ones(), 1.0, false)),
      bias(register_parameter("bias", {c}, Init::zeros(), 1.0, false)) {
  ENGINE_CHECK(g > 0 && c % g == 0, "GroupNorm: {} channels are not divisible into {} groups", c, g);
}

Tensor GroupNorm::forward(const Tensor& x) const {
  const DType dt = is_float_compute(x.dtype()) ? x.dtype() : DType::f32;
  const Tensor y = group_norm(as_compute(x, dt), num_groups, as_compute(weight.value, dt), as_compute(bias.value, dt), eps);
  return as_compute(y, x.dtype());
}

Conv1x1::Conv1x1(int64_t in, int64_t out, bool zero_init, double lr)
    : Module("Conv1x1"),
      in_channels(in),
      out_channels(out),
      lr_mul(lr),
      weight_gain(lr / std::sqrt(double(in))),
      weight(register_parameter("weight", {out, in, 1, 1}, zero_init ? Init::zeros() : Init::normal(1.0 / lr), lr)) {}

Tensor Conv1x1::scaled_weight() const { return mul(reshape(weight.value, {out_channels, in_channels}), weight_gain); }

Tensor Conv1x1::to_tokens(const Tensor& x) const {
  ENGINE_CHECK(x.defined() && x.dim() == 4 && x.size(1) == in_channels, "Conv1x1: expected x [B, {}, H, W], got {}",
               in_channels, x.defined() ? x.sizes().str() : std::string("undefined"));
  const Tensor xf = reshape(x, {x.size(0), in_channels, x.size(2) * x.size(3)});  // [B, in, HW]
  return matmul(transpose(xf, 1, 2), transpose(scaled_weight(), 0, 1));            // [B, HW, out]
}

Tensor Conv1x1::from_tokens(const Tensor& t) const {
  check_tokens("Conv1x1", "tokens", t, in_channels);
  return matmul(scaled_weight(), transpose(t, 1, 2));  // [out, in] x [B, in, HW] -> [B, out, HW]
}

// ---- Self- and cross-attention --------------------------------------------------------------

namespace {
const AttentionConfig& checked(const AttentionConfig& c) {
  ENGINE_CHECK(c.width > 0 && c.heads > 0 && c.head_dim > 0 && c.context_dim > 0 && c.w_dim > 0,
               "attention: width ({}), heads ({}), head_dim ({}), context_dim ({}), w_dim ({}) must be positive",
               c.width, c.heads, c.head_dim, c.context_dim, c.w_dim);
  ENGINE_CHECK(c.lr_mul > 0 && c.eps > 0, "attention: lr_mul ({}) and eps ({}) must be positive", c.lr_mul, c.eps);
  return c;
}
}  // namespace

SelfAttention::SelfAttention(const AttentionConfig& c)
    : Module("SelfAttention"),
      config(checked(c)),
      to_qk(register_module<EqualLinear>("to_qk", c.width, 2 * c.inner(), false, 0.0, c.lr_mul)),
      to_v(register_module<EqualLinear>("to_v", c.width, c.inner(), false, 0.0, c.lr_mul)),
      proj_out(register_module<ModulatedLinear>("proj_out", c.inner(), c.width, c.w_dim, /*bias=*/true,
                                                Activation::linear, c.lr_mul, /*demodulate=*/true, c.demod_eps)) {}

Tensor SelfAttention::forward(const Tensor& h, const Tensor& w) const {
  memory::ModuleScope scope("self_attn");
  check_tokens("SelfAttention", "h", h, config.width);
  check_w("SelfAttention", w, h.size(0), config.w_dim);
  const int64_t B = h.size(0), T = h.size(1), H = config.heads, d = config.head_dim;
  // Per-head [q_n | k_n] (released layout): [B, T, heads, 2, d], q and k are strided views.
  const Tensor qk = view(to_qk.forward(h), {B, T, H, 2, d});
  const Tensor v = view(to_v.forward(h), {B, T, H, d});
  const Tensor o = l2_attention(select(qk, 3, 0), select(qk, 3, 1), v, config.eps);  // [B, T, inner]
  memory::ModuleScope proj_scope("proj_out");
  return proj_out.forward(o, w);
}

CrossAttention::CrossAttention(const AttentionConfig& c)
    : Module("CrossAttention"),
      config(checked(c)),
      to_q(register_module<EqualLinear>("to_q", c.width, c.inner(), false, 0.0, c.lr_mul)),
      to_kv(register_module<EqualLinear>("to_kv", c.context_dim, 2 * c.inner(), false, 0.0, c.lr_mul)),
      proj_out(register_module<EqualLinear>("proj_out", c.inner(), c.width, true, 0.0, c.lr_mul)) {}

Tensor CrossAttention::forward(const Tensor& h, const Tensor& t_seq) const {
  memory::ModuleScope scope("cross_attn");
  check_tokens("CrossAttention", "h", h, config.width);
  check_tokens("CrossAttention", "t_seq", t_seq, config.context_dim);
  ENGINE_CHECK(t_seq.size(0) == h.size(0) && t_seq.size(1) > 0,
               "CrossAttention: t_seq {} must have the batch of h ({}) and at least one token", t_seq.sizes().str(),
               h.size(0));
  const int64_t B = h.size(0), T = h.size(1), L = t_seq.size(1), H = config.heads, d = config.head_dim;
  const Tensor q = view(to_q.forward(h), {B, T, H, d});
  const Tensor kv = view(to_kv.forward(t_seq), {B, L, 2, H, d});  // [k | v]
  return proj_out.forward(l2_attention(q, select(kv, 2, 0), select(kv, 2, 1), config.eps));
}

// ---- Block and residual module --------------------------------------------------------------

FfnFactory dense_geglu_ffn(int64_t hidden) {
  ENGINE_CHECK(hidden > 0, "dense_geglu_ffn: hidden must be positive, got {}", hidden);
  return [hidden](Module& block, const AttentionConfig& c) -> FfnForward {
    GegluExpert& ff = block.register_module<GegluExpert>("ff", c.width, hidden, c.lr_mul);
    return [&ff](const Tensor& h, const Tensor&) {
      memory::ModuleScope scope("ff");
      return FfnOutput{ff.forward(h), Tensor(), Tensor()};
    };
  };
}

AttentionBlock::AttentionBlock(const AttentionConfig& c, const FfnFactory& make_ffn)
    : Module("AttentionBlock"),
      config(checked(c)),
      norm1(register_module<LayerNorm>("norm1", c.width)),
      self_attn(register_module<SelfAttention>("self_attn", c)),
      norm2(register_module<LayerNorm>("norm2", c.width)),
      cross_attn(register_module<CrossAttention>("cross_attn", c)),
      norm3(register_module<LayerNorm>("norm3", c.width)) {
  ENGINE_CHECK(bool(make_ffn), "AttentionBlock: no FFN factory given");
  ffn = make_ffn(*this, config);
  ENGINE_CHECK(bool(ffn), "AttentionBlock: the FFN factory returned no function");
}

AttentionBlockOutput AttentionBlock::forward(const Tensor& x, const Tensor& w, const Tensor& t_seq) const {
  check_tokens("AttentionBlock", "x", x, config.width);
  Tensor h = add(x, self_attn.forward(norm1.forward(x), w));
  h = add(h, cross_attn.forward(norm2.forward(h), t_seq));
  FfnOutput f = ffn(norm3.forward(h), w);
  ENGINE_CHECK(f.y.defined() && f.y.sizes() == h.sizes(), "AttentionBlock: the FFN returned shape {} for input {}",
               f.y.defined() ? f.y.sizes().str() : std::string("undefined"), h.sizes().str());
  return {add(h, f.y), f.loss, f.expert_ids};
}

ResidualAttn::ResidualAttn(const ResidualAttnConfig& c, const FfnFactory& make_ffn)
    : Module("ResidualAttn"),
      config(c),
      norm(register_module<GroupNorm>("norm", c.groups, c.channels)),
      proj_in(register_module<Conv1x1>("proj_in", c.channels, c.attn.width, false, c.attn.lr_mul)) {
  ENGINE_CHECK(c.channels > 0 && c.depth >= 1, "ResidualAttn: channels ({}) must be positive and depth ({}) >= 1",
               c.channels, c.depth);
  for (int64_t i = 0; i < c.depth; ++i)
    blocks.push_back(&register_module<AttentionBlock>("block" + std::to_string(i), c.attn, make_ffn));
  // Zero-initialised (released zero_out=True): the module starts as out = gain * x.
  proj_out = &register_module<Conv1x1>("proj_out", c.attn.width, c.channels, true, c.attn.lr_mul);
}

ResidualAttnOutput ResidualAttn::forward(const Tensor& x, const Tensor& w, const Tensor& t_seq) const {
  ENGINE_CHECK(x.defined() && x.dim() == 4 && x.size(1) == config.channels,
               "ResidualAttn: expected x [B, {}, H, W], got {}", config.channels,
               x.defined() ? x.sizes().str() : std::string("undefined"));
  Tensor h = proj_in.to_tokens(norm.forward(x));  // [B, H*W, width]: pixels are tokens
  Tensor loss;
  std::vector<Tensor> expert_ids;
  for (size_t i = 0; i < blocks.size(); ++i) {
    memory::ModuleScope scope("block" + std::to_string(i));
    AttentionBlockOutput o = blocks[i]->forward(h, w, t_seq);
    h = o.x;
    if (o.loss.defined()) loss = loss.defined() ? add(loss, o.loss) : o.loss;
    expert_ids.push_back(o.expert_ids);
  }
  const Tensor y = reshape(proj_out->from_tokens(h), x.sizes());  // [B, C, H, W]
  return {mul(add(x, y), config.gain), loss, std::move(expert_ids)};
}

}  // namespace engine::nn

// moe.cpp: Aurora's sparse MoE FFN (docs/aurora-spec.md section 6). The math is in moe.h.
//
// Note [dropless sorted dispatch]
// Aurora's released code masks tokens per expert (x[mask]) with a capacity of 262144 tokens, which
// is never reached, so the layer is dropless. We do the same computation with a permutation:
//   1. e*[n] for the N = B*T tokens (host copy: the segment sizes must be known to size the GEMMs,
//      one small device->host copy of N int64 on a GPU);
//   2. a stable counting sort by e* gives perm (sorted position j holds token perm[j]), so equal
//      inputs always give the same order, whatever the thread count;
//   3. xs = index_select(x, 0, perm); expert e runs one GEMM pair on narrow(xs, 0, off_e, n_e);
//   4. ys = cat(outputs); y = index_select(ys, 0, inv_perm) back in token order;
//   5. y *= p_{e*} (gather), the path through which the router's weights get the task gradient.
//   (3 and 5 also carry the experts' equalized-lr gains: Note [expert gains folded out of the
//   weights].)
// index_select's backward is index_add and vice versa, narrow's is pad_into, cat's is split: all
// registered differentiable ops, so double backward (R1, path length) works through the layer.
// An expert with no token is skipped: it contributes no node, so its parameters receive no
// gradient (zeros in the flat gradient buffer). The same split (route / run_experts / combine)
// is where expert parallelism inserts its all-to-alls (distributed-notes.md section 2.2).
#include "nn/moe.h"

#include <cmath>
#include <string>

#include "tensor/memory/profiler.h"
#include "tensor/ops.h"
#include "tensor/precision.h"

namespace engine::nn {

namespace {

bool is_router_dtype(DType t) { return t == DType::f32 || t == DType::f64; }

// The ids of a small i64 tensor on the host. On a GPU this is the one device->host read of the
// MoE forward, and it is deliberate: the dispatch (tokens per expert, the counting-sort
// permutation, one narrow() per expert segment) is host control flow, so it needs the B*T expert
// ids (8 bytes a token) on the host; the copy synchronises the stream once per MoE layer.
std::vector<int64_t> host_ids(const Tensor& ids) {
  Tensor t = ids.device().is_cpu() ? ids : ids.to(Device::cpu());
  t = contiguous(t);
  const int64_t* p = t.data<int64_t>();
  return std::vector<int64_t>(p, p + t.numel());
}

}  // namespace

// ---- Expert ---------------------------------------------------------------------------------

GegluExpert::GegluExpert(int64_t channels, int64_t hidden_, double lr_mul)
    : Module("GegluExpert"),
      hidden(hidden_),
      w1(register_module<EqualLinear>("w1", channels, 2 * hidden_, true, 0.0, lr_mul)),
      w2(register_module<EqualLinear>("w2", hidden_, channels, true, 0.0, lr_mul)) {}

// Note [expert gains folded out of the weights]
// An equalized-lr linear multiplies its weight by gain = lr_mul / sqrt(fan_in) at run time. Done on
// the weight (EqualLinear::forward), that costs a weight-sized copy per expert and call, and
// another weight-sized multiply in backward: with 8 experts of 3.15 M parameters, more memory
// traffic than the GEMMs of a small segment. The gains are scalars, so we move them to the
// smallest tensors instead:
//   W1's gain multiplies the sorted tokens once for all experts (they share C, hence the gain);
//   W2's gain is taken out of the expert:  gain2 (a W2^T) + b2 lr = gain2 (a W2^T + b2 lr / gain2),
//   and multiplied into p_{e*}, a [B, T, 1] tensor, by the caller.
// Same function, a different rounding order (well inside f32 tolerances).
Tensor GegluExpert::forward_folded(const Tensor& x_scaled) const {
  const Tensor b1 = w1.lr_mul == 1.0 ? w1.bias->value : mul(w1.bias->value, w1.lr_mul);
  const Tensor h = linear(x_scaled, w1.weight.value, b1);  // [n, 2H], bias fused into the GEMM
  // GEGLU (Shazeer 2020): the first half is the value, the second the gate (torch.chunk order in
  // the released code). Both halves are views; mul reads them strided, no copy.
  const Tensor u = narrow(h, -1, 0, hidden);
  const Tensor g = narrow(h, -1, hidden, hidden);
  return linear(mul(u, gelu(g)), w2.weight.value, mul(w2.bias->value, w2.lr_mul / w2.weight_gain));
}

Tensor GegluExpert::forward(const Tensor& x) const {
  return mul(forward_folded(mul(x, w1.weight_gain)), w2.weight_gain);
}

// ---- Router ---------------------------------------------------------------------------------

ModulatedRouter::ModulatedRouter(int64_t channels_, int64_t num_experts_, int64_t w_dim, double lr, double eps)
    : Module("ModulatedRouter"),
      channels(channels_),
      num_experts(num_experts_),
      lr_mul(lr),
      demod_eps(eps),
      // Spec 3.2 / 11.5: every modulation style bias starts at 1, so s(w) = A w + 1.
      style(register_module<EqualLinear>("style", w_dim, channels_, true, 1.0, lr)),
      // Stored as N(0, 1/lr_mul) (Note [equalized lr]); the demodulated path never applies the
      // weight gain because demodulation removes any per-row scale.
      weight(register_parameter("weight", {num_experts_, channels_}, Init::normal(1.0 / lr), lr)),
      bias(register_parameter("bias", {num_experts_}, Init::zeros(), lr, false)) {}

Tensor ModulatedRouter::modulated_weight(const Tensor& w) const {
  // Pre-normalisation (spec 3.3): K / rms over the input channels of each expert row, and s / rms
  // over the whole [B, C] tensor. Both scales cancel in the demodulation below (up to eps); they
  // keep the intermediate magnitudes O(1), as the released layer does.
  Tensor s = style.forward(w);                                      // [B, C]
  s = mul(s, rsqrt(mean(square(s))));                               // scalar rms of the batch
  const Tensor k = mul(weight.value, rsqrt(mean(square(weight.value), {1}, true)));  // [E, C]
  Tensor wb = mul(unsqueeze(k, 0), unsqueeze(s, 1));                // [B, E, C]
  return mul(wb, rsqrt(add(sum(square(wb), {2}, true), demod_eps)));  // demodulate each row
}

Tensor ModulatedRouter::forward(const Tensor& x, const Tensor& w) const {
  memory::ModuleScope scope("router");
  const Tensor wb = modulated_weight(w);                 // [B, E, C]
  Tensor r = bmm(x, transpose(wb, 1, 2));                // [B, T, E]: one small GEMM per sample
  return bias_act_along(r, lr_mul == 1.0 ? bias.value : mul(bias.value, lr_mul), -1, Activation::lrelu);
}

// ---- Containers -----------------------------------------------------------------------------

ExpertList::ExpertList(int64_t num_experts, int64_t channels, int64_t hidden, double lr_mul) : Module("ExpertList") {
  for (int64_t e = 0; e < num_experts; ++e)
    items.push_back(&register_module<GegluExpert>(std::to_string(e), channels, hidden, lr_mul));
}

namespace {
const MoEConfig& checked(const MoEConfig& c) {
  ENGINE_CHECK(c.channels > 0 && c.hidden > 0 && c.num_experts >= 1 && c.w_dim > 0,
               "MoE: channels ({}), hidden ({}), w_dim ({}) must be positive and num_experts ({}) >= 1", c.channels,
               c.hidden, c.w_dim, c.num_experts);
  ENGINE_CHECK(c.lr_mul > 0, "MoE: lr_mul must be positive, got {}", c.lr_mul);
  return c;
}
}  // namespace

MoE::MoE(const MoEConfig& c)
    : Module("MoE"),
      config(checked(c)),
      experts(register_module<ExpertList>("experts", c.num_experts, c.channels, c.hidden, c.lr_mul)),
      router(register_module<ModulatedRouter>("router", c.channels, c.num_experts, c.w_dim, c.lr_mul, c.demod_eps)) {}

// ---- Forward --------------------------------------------------------------------------------

MoERouting MoE::route(const Tensor& x, const Tensor& w) const {
  const int64_t B = x.size(0), T = x.size(1), E = config.num_experts;
  MoERouting rt;
  // The router keeps its saved tensors in f32 too (Note [bf16 saved activations], autograd/node.h).
  SavedActivationScope router_saved(DType::f32);
  // The router runs in f32 (spec 6 / 9: "selective precision"); an f64 input (gradcheck) stays f64.
  const DType rdt = is_router_dtype(x.dtype()) ? x.dtype() : DType::f32;
  const Tensor xr = x.dtype() == rdt ? x : to_dtype(x, rdt);
  const Tensor wr = w.dtype() == rdt ? w : to_dtype(w, rdt);
  {
    // The router GEMM stays f32 under a bf16 training precision (spec: the router must be f32;
    // docs/training.md "Mixed precision"): a scope here overrides the caller's policy.
    MatmulPrecisionScope router_precision(MatmulPrecision::f32);
    rt.logits = router.forward(xr, wr);        // [B, T, E]
  }
  rt.lse = logsumexp(rt.logits, {2});          // [B, T]
  // softmax as exp(r - lse): lse is needed for the z-loss anyway, and this form is the max-shifted,
  // overflow-free softmax with a differentiable (any-order) graph.
  rt.probs = exp(sub(rt.logits, unsqueeze(rt.lse, 2)));
  // argmax over r rather than p: the same expert (softmax is monotonic) without the ties that
  // rounding exp() to f32 can create between close logits. Ties in r go to the lowest index.
  rt.expert_ids = argmax(rt.logits, 2);        // [B, T] i64

  const std::vector<int64_t> ids = host_ids(rt.expert_ids);
  const int64_t N = B * T;
  rt.tokens_per_expert.assign(size_t(E), 0);
  rt.tokens_per_image_expert.assign(size_t(B * E), 0);
  for (int64_t n = 0; n < N; ++n) {
    const int64_t e = ids[size_t(n)];
    ENGINE_CHECK(e >= 0 && e < E, "MoE: router produced expert id {} outside [0, {}) (NaN logits?)", e, E);
    ++rt.tokens_per_expert[size_t(e)];
    ++rt.tokens_per_image_expert[size_t((n / T) * E + e)];
  }
  // Stable counting sort (Note [dropless sorted dispatch]).
  rt.offsets.assign(size_t(E) + 1, 0);
  for (int64_t e = 0; e < E; ++e) rt.offsets[size_t(e + 1)] = rt.offsets[size_t(e)] + rt.tokens_per_expert[size_t(e)];
  std::vector<int64_t> next(rt.offsets.begin(), rt.offsets.end() - 1);
  rt.perm.assign(size_t(N), 0);
  rt.inv_perm.assign(size_t(N), 0);
  for (int64_t n = 0; n < N; ++n) {
    const int64_t j = next[size_t(ids[size_t(n)])]++;
    rt.perm[size_t(j)] = n;
    rt.inv_perm[size_t(n)] = j;
  }
  return rt;
}

Tensor MoE::run_experts(const Tensor& xs, const std::vector<int64_t>& counts) const {
  ENGINE_CHECK(int64_t(counts.size()) == config.num_experts, "MoE::run_experts: {} counts for {} experts",
               counts.size(), config.num_experts);
  TensorList outs;
  int64_t off = 0;
  for (int64_t e = 0; e < config.num_experts; ++e) {
    const int64_t n = counts[size_t(e)];
    if (n == 0) continue;  // an idle expert: no node, no gradient
    memory::ModuleScope scope("experts." + std::to_string(e));
    outs.push_back(experts.items[size_t(e)]->forward_folded(narrow(xs, 0, off, n)));
    off += n;
  }
  ENGINE_CHECK(off == xs.size(0), "MoE::run_experts: counts sum to {} but {} tokens were given", off, xs.size(0));
  if (outs.empty()) return zeros({0, config.channels}, TensorOptions{xs.dtype(), xs.device()});
  return outs.size() == 1 ? outs[0] : cat(outs, 0);
}

std::pair<Tensor, Tensor> MoE::losses(const MoERouting& rt) const {
  const int64_t B = rt.probs.size(0), T = rt.probs.size(1), E = config.num_experts;
  // ST-MoE router z-loss: mean over all tokens of lse^2.
  const Tensor z_loss = mean(square(rt.lse));
  // Switch balance loss per image (routing group), averaged over the batch. f is a count ratio
  // (a constant), so the gradient reaches the router only through P.
  std::vector<double> f(size_t(B * E));
  for (size_t i = 0; i < f.size(); ++i) f[i] = double(rt.tokens_per_image_expert[i]) / double(T);
  const Tensor ft = from_vector(f, {B, E}, TensorOptions{rt.probs.dtype(), rt.probs.device()});
  const Tensor P = mean(rt.probs, {1});  // [B, E]
  const Tensor aux_loss = mul(mean(mul(ft, P)), double(E * E));
  return {z_loss, aux_loss};
}

MoEOutput MoE::forward(const Tensor& x, const Tensor& w) const {
  if (forward_hook) return forward_hook(x, w);  // expert parallel (dist/expert_parallel.h)
  memory::ModuleScope scope("moe");
  const int64_t C = config.channels;
  ENGINE_CHECK(x.defined() && x.dim() == 3 && x.size(2) == C, "MoE: expected tokens [B, T, {}], got {}", C,
               x.defined() ? x.sizes().str() : std::string("an undefined tensor"));
  ENGINE_CHECK(x.size(0) >= 1 && x.size(1) >= 1, "MoE: empty batch or token axis {}", x.sizes().str());
  ENGINE_CHECK(w.defined() && w.dim() == 2 && w.size(0) == x.size(0) && w.size(1) == config.w_dim,
               "MoE: expected w [{}, {}], got {}", x.size(0), config.w_dim,
               w.defined() ? w.sizes().str() : std::string("an undefined tensor"));
  const int64_t B = x.size(0), T = x.size(1), N = B * T;

  MoERouting rt = route(x, w);
  const TensorOptions iopts{DType::i64, x.device()};
  const Tensor perm = from_vector_i64(rt.perm, {N}, iopts);
  const Tensor inv_perm = from_vector_i64(rt.inv_perm, {N}, iopts);

  // Sorted by expert, times W1's gain (Note [expert gains folded out of the weights]).
  const Tensor xs = mul(index_select(reshape(x, {N, C}), 0, perm), gain_in());
  const Tensor ys = run_experts(xs, rt.tokens_per_expert);
  Tensor y = reshape(index_select(ys, 0, inv_perm), {B, T, C});  // back in token order
  // p_{e*} [B, T, 1] carries the router's task gradient, and W2's gain.
  Tensor p_top = mul(gather(rt.probs, 2, unsqueeze(rt.expert_ids, 2)), gain_out());
  if (p_top.dtype() != y.dtype()) p_top = to_dtype(p_top, y.dtype());

  MoEOutput out;
  out.y = mul(y, p_top);
  auto [z, aux] = losses(rt);
  out.z_loss = z;
  out.aux_loss = aux;
  out.loss = add(mul(z, config.z_loss_weight), mul(aux, config.aux_loss_weight));
  out.expert_ids = rt.expert_ids;
  out.tokens_per_expert = std::move(rt.tokens_per_expert);
  out.tokens_per_image_expert = std::move(rt.tokens_per_image_expert);
  return out;
}

}  // namespace engine::nn

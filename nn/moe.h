// moe.h: Aurora's sparse mixture-of-experts FFN (docs/aurora-spec.md section 6; the expert of
// section 5.3; the router's modulation of section 3.3), applied to every pixel as a token.
//
// Input: tokens f [B, T, C] (T = H*W pixels of one image, LN3 already applied) and w [B, w_dim].
//
//   Router (a 1x1 w-modulated, demodulated "conv" C -> E, over tokens):
//     s      = A w + b_A                          (EqualLinear, bias initialised to 1)
//     K     <- K / rms_row(K),  s <- s / rms(s)   (pre-normalisation; both cancel after demod)
//     W_b    = K * s_b[None, :]                   [E, C] per sample b
//     W_b   <- W_b / sqrt(sum_c W_b^2 + 1e-8)     (demodulation per expert row)
//     r      = lrelu(f W_b^T + bias) * sqrt(2)    [B, T, E]   (lrelu slope 0.2), in f32
//     p      = softmax_e(r) = exp(r - lse),  lse = logsumexp_e r
//     e*     = argmax_e r  (= argmax p; see moe.cpp for why r)
//   Expert e (GEGLU, section 5.3):
//     [u | g] = W1 f + b1   (C -> 2H, u is the first half),  a = u * GELU(g) (erf form),
//     out     = W2 a + b2   (H -> C); all equalized-lr linears (Note [equalized lr], layers.h).
//   Output:   y = p_{e*} * Expert_{e*}(f)       (dropless: no capacity, no jitter)
//   Losses (per layer, per image groups; Switch Transformer eq. 4-6, ST-MoE z-loss):
//     L_z   = mean_{b,t} lse^2
//     L_aux = E^2 * mean_{b,e} f_{b,e} P_{b,e},   f = fraction of image b's tokens routed to e
//             (a constant: no gradient), P = mean_t p_{b,t,e}
//     loss  = 0.001 L_z + 0.001 L_aux  (weights configurable)
//
// Dispatch (Note [dropless sorted dispatch], moe.cpp): the B*T tokens are stably sorted by expert
// id, each expert runs once on its contiguous segment, results go back to token order through the
// inverse permutation. Every step is a differentiable op (index_select, narrow, linear, cat), so
// the layer is differentiable to any order (R1 / path-length regularisation through G).
//
// Parameter names (PyTorch state_dict convention, as the project names the model, e.g.
// `synthesis.b16.attn0.block1.moe.experts.3.w1.weight`), with the released checkpoint's names
// (zhujiapeng/Aurora `FeedForward`, attribute `ff` of an AttentionBlock) for a converter:
//   experts.{e}.w1.weight [2H, C]   <- ff.net.{e}.0.proj.weight
//   experts.{e}.w1.bias   [2H]      <- ff.net.{e}.0.proj.bias
//   experts.{e}.w2.weight [C, H]    <- ff.net.{e}.2.weight
//   experts.{e}.w2.bias   [C]       <- ff.net.{e}.2.bias
//   router.weight         [E, C]    <- ff.routing.weight [1, E, C, 1, 1] (reshape)
//   router.bias           [E]       <- ff.routing.bias
//   router.style.weight   [C, w_dim]<- ff.routing.style.weight
//   router.style.bias     [C]       <- ff.routing.style.bias
// Registration order (= flat-buffer layout) is experts first, then the router, as released; the
// experts of one layer are therefore one contiguous block (expert-parallel sharding, DESIGN.md 10).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "nn/layers.h"
#include "nn/module.h"

namespace engine::nn {

struct MoEConfig {
  int64_t channels = 0;     // C: token width
  int64_t hidden = 0;       // H: GEGLU width (W1 maps C -> 2H); the released model uses 4C
  int64_t num_experts = 0;  // E (>= 1)
  int64_t w_dim = 0;        // width of w (router modulation)
  double z_loss_weight = 1e-3;
  double aux_loss_weight = 1e-3;
  double lr_mul = 1.0;      // equalized-lr multiplier of every parameter of the layer
  double demod_eps = 1e-8;
};

// One GEGLU expert: x [n, C] -> [n, C]; n may be 0 only if the caller skips it (MoE does).
class GegluExpert : public Module {
 public:
  GegluExpert(int64_t channels, int64_t hidden, double lr_mul);
  Tensor forward(const Tensor& x) const;
  // forward(x) = w2.weight_gain * forward_folded(w1.weight_gain * x): the expert with its two
  // equalized-lr gains taken out (Note [expert gains folded out of the weights], moe.cpp).
  Tensor forward_folded(const Tensor& x_scaled) const;

  int64_t hidden;
  EqualLinear& w1;  // C -> 2H, output [u | g]
  EqualLinear& w2;  // H -> C
};

// The router's 1x1 modulated + demodulated linear over tokens with lrelu, in token layout.
// (Written here because nn/modconv.h's ModulatedLinear had not landed; the parameter names follow
// the same convention so the two are interchangeable.) x [B, T, C], w [B, w_dim] -> r [B, T, E].
class ModulatedRouter : public Module {
 public:
  ModulatedRouter(int64_t channels, int64_t num_experts, int64_t w_dim, double lr_mul, double demod_eps);
  Tensor forward(const Tensor& x, const Tensor& w) const;
  // The per-sample demodulated kernel W_b [B, E, C] (exposed for tests and for inspection).
  Tensor modulated_weight(const Tensor& w) const;

  int64_t channels, num_experts;
  double lr_mul, demod_eps;
  EqualLinear& style;  // w -> s, bias initialised to 1
  Parameter& weight;   // K [E, C]
  Parameter& bias;     // [E], initialised to 0
};

// A plain container so the experts are named experts.0, experts.1, ... (as a torch ModuleList).
class ExpertList : public Module {
 public:
  ExpertList(int64_t num_experts, int64_t channels, int64_t hidden, double lr_mul);
  std::vector<GegluExpert*> items;
};

// What the router decided for a batch (no gradients in the integer parts).
struct MoERouting {
  Tensor logits;      // r [B, T, E], f32 (f64 when the input is f64), differentiable
  Tensor lse;         // logsumexp_e r [B, T], differentiable
  Tensor probs;       // p [B, T, E], differentiable
  Tensor expert_ids;  // e* [B, T] i64 (on the input's device)
  std::vector<int64_t> tokens_per_expert;        // [E]
  std::vector<int64_t> tokens_per_image_expert;  // [B * E], row-major (b, e)
  // Stable sort of the B*T tokens by expert id: sorted position j holds token perm[j]; the
  // segment of expert e is [offsets[e], offsets[e] + tokens_per_expert[e]).
  std::vector<int64_t> perm, inv_perm, offsets;
};

struct MoEOutput {
  Tensor y;         // [B, T, C], dtype of the input
  Tensor loss;      // scalar: z_loss_weight * z_loss + aux_loss_weight * aux_loss
  Tensor z_loss;    // scalar L_z
  Tensor aux_loss;  // scalar L_aux
  // Routing statistics for logging and the router picture (spec Fig. 6; reshape to [B, H, W]).
  Tensor expert_ids;                             // [B, T] i64
  std::vector<int64_t> tokens_per_expert;        // [E]
  std::vector<int64_t> tokens_per_image_expert;  // [B * E]
};

class MoE : public Module {
 public:
  explicit MoE(const MoEConfig& config);

  // x [B, T, C] (f32, f64, or bf16/f16: the router then runs on an f32 copy), w [B, w_dim].
  MoEOutput forward(const Tensor& x, const Tensor& w) const;

  // The pieces of forward, public so that expert parallelism (dist/) can put an all-to-all
  // between dispatch and the experts, and the combine after them.
  MoERouting route(const Tensor& x, const Tensor& w) const;
  // Sorted tokens [N, C] times gain_in() and per-expert counts -> sorted expert outputs [N, C]
  // divided by gain_out() (GegluExpert::forward_folded on each segment). Experts with zero tokens
  // are skipped (no graph, so their parameters get no gradient).
  Tensor run_experts(const Tensor& sorted_tokens, const std::vector<int64_t>& counts) const;
  double gain_in() const { return experts.items[0]->w1.weight_gain; }   // lr_mul / sqrt(C)
  double gain_out() const { return experts.items[0]->w2.weight_gain; }  // lr_mul / sqrt(H)
  // Scalar losses (z, aux) from a routing.
  std::pair<Tensor, Tensor> losses(const MoERouting& routing) const;

  MoEConfig config;
  ExpertList& experts;
  ModulatedRouter& router;
  // Expert parallelism (dist/expert_parallel.h) installs itself here: when set, forward() returns
  // forward_hook(x, w), the same contract with the experts sharded over ranks.
  std::function<MoEOutput(const Tensor& x, const Tensor& w)> forward_hook;
};

}  // namespace engine::nn

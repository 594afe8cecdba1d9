// attention.h: Aurora's image attention (docs/aurora-spec.md section 5; quirk 2 of section 11):
// L2-distance multi-head attention, the self- and cross-attention layers, the pre-LN attention
// block with a pluggable FFN, and the residual attention module of the synthesis network.
//
// L2 attention (spec 5.1, 11.2; Kim et al. 2021 use the SQUARED distance, Aurora does not):
//   l_ij = -||q_i - k_j||_2 * d^(-1/2)       d = head dim; the scale is applied after the distance
//   A    = softmax_j(l),   out_i = sum_j A_ij v_j           per head, no mask, no positional embedding
// computed as -d^(-1/2) sqrt(max(|q|^2 + |k|^2 - 2 q.k, 0) + eps) through one GEMM
// (Note [L2 attention logits], attention.cpp, explains the form, the eps and the clamp).
//
// SelfAttention (spec 5.1), on LN1(x), tokens [B, T, C] with C = heads * head_dim (512):
//   [q | k] = W_qk h     W_qk: C -> 2 * heads * head_dim, no bias (not tied: released tie=False).
//             Released channel layout, kept for checkpoint compatibility: the 2*head_dim outputs of
//             head n are q_n then k_n (rows [2 n d, 2 n d + d) are W_q of head n, the next d rows
//             W_k of head n), because the released code splits heads before splitting q from k.
//   v     = W_v h        C -> heads * head_dim, no bias
//   out   = ModLinear_w(L2Attn(q, k, v))   a 1x1 w-modulated, demodulated linear with bias (spec 3.3;
//           nn::ModulatedLinear of nn/modconv.h)
// CrossAttention (spec 5.2), on LN2(x) and the text tokens t_seq [B, L, context_dim] (L = 76):
//   q = W_q h (C -> inner), [k | v] = W_kv t (context_dim -> 2 inner; k is the first half), no
//   biases; out = W_o L2Attn(q, k, v) + b_o. No text mask: all L tokens are attended (spec 11.3).
// AttentionBlock (spec 5), residual gain 1 inside, LayerNorms in f32:
//   x <- x + SA(LN1 x, w);  x <- x + CA(LN2 x, t_seq);  x <- x + FFN(LN3 x, w)
//   The FFN is pluggable (FfnFactory): a dense GEGLU FFN (dense_geglu_ffn, for tests and small
//   configs) or the sparse MoE of nn/moe.h, which also returns its auxiliary loss.
// ResidualAttn (spec 5, 11.6), on feature maps x [B, C, H, W]:
//   h = GroupNorm_32(x);  h = Conv1x1(C -> width, no bias)(h);  h = depth x AttentionBlock over the
//   H*W pixels as tokens;  h = Conv1x1(width -> C, no bias, ZERO-initialised)(h);  out = (x + h) * 0.3
//   (the gain multiplies the skip sum, not the branch). At initialisation out = 0.3 x exactly.
//
// All plain linears and 1x1 convs use equalized learning rate (Note [equalized lr], layers.h).
// Where w enters: only the self-attention output projection and the FFN (MoE router).
//
// Parameter names (PyTorch state_dict convention; the project names blocks `blockN` and the MoE
// `moe`, e.g. `synthesis.b16.attn0.block1.moe.experts.3.w1.weight`). Released names
// (zhujiapeng/Aurora `ResidualAttnBlock`) for a checkpoint converter:
//   norm.{weight,bias}                      <- norm.{weight,bias}
//   proj_in.weight [width, C, 1, 1]         <- proj_in.weight
//   blockN.norm1/norm2/norm3.{weight,bias}  <- attn_blocks.N.norm1/2/3
//   blockN.self_attn.to_qk.weight           <- attn_blocks.N.self_attn.to_qk.weight
//   blockN.self_attn.to_v.weight            <- attn_blocks.N.self_attn.to_v.weight
//   blockN.self_attn.proj_out.weight [C, C] <- ...self_attn.proj_out.weight [1, C, C, 1, 1] (reshape)
//   blockN.self_attn.proj_out.bias          <- ...self_attn.proj_out.bias
//   blockN.self_attn.proj_out.style.*       <- ...self_attn.proj_out.style.*
//   blockN.cross_attn.to_q/to_kv.weight     <- attn_blocks.N.cross_attn.to_q/to_kv.weight
//   blockN.cross_attn.proj_out.*            <- attn_blocks.N.cross_attn.proj_out.0.*
//   blockN.ff.w1.* / ff.w2.* (dense)        <- attn_blocks.N.ff.net.0.proj.* / ff.net.2.*
//   blockN.moe.* (MoE)                      <- attn_blocks.N.ff.* (names in nn/moe.h)
//   proj_out.weight [C, width, 1, 1]        <- proj_out.weight
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "nn/layers.h"
#include "nn/modconv.h"
#include "nn/module.h"

namespace engine::nn {

// ---- The L2-distance attention core ---------------------------------------------------------

// Default eps of Note [L2 attention logits]: the logits use sqrt(||q - k||^2 + eps).
inline constexpr double kL2AttentionEps = 1e-6;

// The logits l [B, heads, Tq, Tk] of L2 attention, from head-split q [B, Tq, heads, d] and
// k [B, Tk, heads, d] (any strides; a view of a projection's output needs no copy):
//   l_ij = -d^(-1/2) sqrt(max(||q_i - k_j||^2 + eps, eps / 2))   (Note [L2 attention logits])
Tensor l2_attention_logits(const Tensor& q, const Tensor& k, double eps = kL2AttentionEps);

// Full attention: softmax_j(l) v, with v [B, Tk, heads, dv]; returns tokens [B, Tq, heads * dv]
// (heads concatenated, head-major: channel n * dv + c), ready for the output projection.
Tensor l2_attention(const Tensor& q, const Tensor& k, const Tensor& v, double eps = kL2AttentionEps);

// ---- Small building blocks ------------------------------------------------------------------

// LayerNorm over the last dim with affine weight (ones) and bias (zeros), eps 1e-5 (torch's
// default, as released). Computed in f32 whatever the activation dtype (spec 5: "LN/GN are
// computed in fp32"); f64 stays f64 (gradcheck).
class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t channels, double eps = 1e-5);
  Tensor forward(const Tensor& x) const;  // x [..., channels]

  int64_t channels;
  double eps;
  Parameter& weight;
  Parameter& bias;
};

// GroupNorm on [B, C, ...] with affine weight and bias, eps 1e-5, in f32 (as LayerNorm).
class GroupNorm : public Module {
 public:
  GroupNorm(int64_t num_groups, int64_t channels, double eps = 1e-5);
  Tensor forward(const Tensor& x) const;

  int64_t num_groups, channels;
  double eps;
  Parameter& weight;
  Parameter& bias;
};

// An equalized-lr 1x1 convolution without bias, stored as a conv weight [out, in, 1, 1] (the
// released ConvLayer's shape) but applied as a GEMM between the token and pixel layouts:
//   to_tokens(x [B, in, H, W]) -> [B, H*W, out]     from_tokens(t [B, H*W, in]) -> [B, out, H*W]
// (BLAS reads the transposed operand in place: neither direction copies the activations.)
class Conv1x1 : public Module {
 public:
  Conv1x1(int64_t in_channels, int64_t out_channels, bool zero_init, double lr_mul = 1.0);
  Tensor to_tokens(const Tensor& x) const;
  Tensor from_tokens(const Tensor& t) const;

  int64_t in_channels, out_channels;
  double lr_mul, weight_gain;
  Parameter& weight;

 private:
  Tensor scaled_weight() const;  // [out, in] * weight_gain
};

// ---- Layers ---------------------------------------------------------------------------------

struct AttentionConfig {
  int64_t width = 512;         // token width C inside the blocks (the released model: heads * head_dim)
  int64_t heads = 8;
  int64_t head_dim = 64;
  int64_t context_dim = 1024;  // width of the text tokens t_seq
  int64_t w_dim = 1024;
  double lr_mul = 1.0;         // equalized-lr multiplier of every linear
  double eps = kL2AttentionEps;  // Note [L2 attention logits]
  double demod_eps = 1e-8;
  int64_t inner() const { return heads * head_dim; }
};

class SelfAttention : public Module {
 public:
  explicit SelfAttention(const AttentionConfig& config);
  // h [B, T, width] (LN1 already applied), w [B, w_dim] -> [B, T, width]
  Tensor forward(const Tensor& h, const Tensor& w) const;

  AttentionConfig config;
  EqualLinear& to_qk;  // width -> 2 * inner, per-head [q_n | k_n] layout (header comment)
  EqualLinear& to_v;   // width -> inner
  ModulatedLinear& proj_out;  // inner -> width, modulated by w, demodulated, with bias (nn/modconv.h)
};

class CrossAttention : public Module {
 public:
  explicit CrossAttention(const AttentionConfig& config);
  // h [B, T, width] (LN2 already applied), t_seq [B, L, context_dim] -> [B, T, width]
  Tensor forward(const Tensor& h, const Tensor& t_seq) const;

  AttentionConfig config;
  EqualLinear& to_q;      // width -> inner
  EqualLinear& to_kv;     // context_dim -> 2 * inner: [k | v]
  EqualLinear& proj_out;  // inner -> width, with bias
};

// The pluggable FFN of an AttentionBlock.
struct FfnOutput {
  Tensor y;     // [B, T, width]
  Tensor loss;  // the FFN's auxiliary loss (a scalar; the MoE's 0.001 L_z + 0.001 L_aux); undefined if none
  Tensor expert_ids;  // i64 [B, T]: the MoE's top-1 expert per token (routing stats); undefined if dense
};
// Applies the FFN to LN3(x) [B, T, width] and w [B, w_dim].
using FfnForward = std::function<FfnOutput(const Tensor& h, const Tensor& w)>;
// Called once by the AttentionBlock constructor (after norm3 is registered, so the flat-buffer
// layout follows the released order): registers the FFN module(s) on `block` under their own name
// and returns how to call them. The returned function may keep references to those modules: they
// live as long as the block. Example for the MoE (nn/moe.h):
//   [cfg](Module& b, const AttentionConfig&) -> FfnForward {
//     MoE& m = b.register_module<MoE>("moe", cfg);
//     return [&m](const Tensor& h, const Tensor& w) { MoEOutput o = m.forward(h, w); return FfnOutput{o.y, o.loss, o.expert_ids}; };
//   }
using FfnFactory = std::function<FfnForward(Module& block, const AttentionConfig& config)>;

// Dense GEGLU FFN (spec 5.3, one expert): [u | g] = W1 h + b1 (width -> 2 hidden), u * GELU(g),
// W2 (hidden -> width) + b2; registered as `ff` (GegluExpert of nn/moe.h: ff.w1, ff.w2).
FfnFactory dense_geglu_ffn(int64_t hidden);

struct AttentionBlockOutput {
  Tensor x;     // [B, T, width]
  Tensor loss;  // the FFN's auxiliary loss, undefined if it has none
  Tensor expert_ids;  // FfnOutput::expert_ids
};

class AttentionBlock : public Module {
 public:
  AttentionBlock(const AttentionConfig& config, const FfnFactory& ffn);
  // x [B, T, width], w [B, w_dim], t_seq [B, L, context_dim]
  AttentionBlockOutput forward(const Tensor& x, const Tensor& w, const Tensor& t_seq) const;

  AttentionConfig config;
  LayerNorm& norm1;
  SelfAttention& self_attn;
  LayerNorm& norm2;
  CrossAttention& cross_attn;
  LayerNorm& norm3;
  FfnForward ffn;
};

struct ResidualAttnConfig {
  int64_t channels = 0;      // C of the feature maps
  int64_t depth = 1;         // AttentionBlocks
  int64_t groups = 32;       // GroupNorm groups
  double gain = 0.3;         // attn_gain: out = (x + h) * gain
  AttentionConfig attn;      // the blocks (attn.width is the inner token width, 512)
};

struct ResidualAttnOutput {
  Tensor x;     // [B, C, H, W]
  Tensor loss;  // sum of the blocks' FFN losses, undefined if none has one
  std::vector<Tensor> expert_ids;  // per block (block0, block1, ...): FfnOutput::expert_ids
};

class ResidualAttn : public Module {
 public:
  ResidualAttn(const ResidualAttnConfig& config, const FfnFactory& ffn);
  // x [B, C, H, W], w [B, w_dim], t_seq [B, L, context_dim]
  ResidualAttnOutput forward(const Tensor& x, const Tensor& w, const Tensor& t_seq) const;

  ResidualAttnConfig config;
  GroupNorm& norm;
  Conv1x1& proj_in;
  std::vector<AttentionBlock*> blocks;  // registered as block0, block1, ...
  Conv1x1* proj_out = nullptr;          // registered after the blocks (released order)
};

}  // namespace engine::nn

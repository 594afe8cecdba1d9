// text_head.h: Aurora's learnable text head (docs/aurora-spec.md section 1; quirks 1, 3 and 5 of
// section 11). It adapts the frozen CLIP ViT-L/14 token states (the 77 x 768 output of ln_final)
// to the generator and splits them into a global and a per-token condition.
//
//   X   = align_dim(tokens)      EqualLinear 768 -> 1024, bias initialised to 1.0 (spec 11.5)
//   4 pre-LN transformer blocks, width 1024, 8 heads of 128, gain g = text_head_gain = 1:
//     X <- (X + Attn(LN_1 X)) * g
//     X <- (X + c_proj(QuickGELU(c_fc(LN_2 X)))) * g      c_fc 1024 -> 4096, c_proj 4096 -> 1024
//   QuickGELU(x) = x * sigmoid(1.702 x). Every linear has a bias (initialised to 0) and equalized
//   learning rate with lr_mul = 0.01 (text_lr_mul; Note [equalized lr], layers.h); the LayerNorms
//   (eps 1e-5, f32) are plain. No positional embedding, no causal and no padding mask.
//   Attn, proper mode (default, compat_official = false):
//     [q | k | v] = W_qkv h + b_qkv   (1024 -> 3 x 1024, thirds in this order, then 8 heads each)
//     out = W_o L2Attn(q, k, v) + b_o  over the 77 TOKENS of each caption, L2 logits as in
//     attention.h (-||q - k|| / sqrt(128), Note [L2 attention logits]).
//   Attn, compat_official = true (spec 11.1, the released checkpoint's function):
//     The released TextTransformer permutes its input to [77, B, D] but its attention treats dim 0
//     as the batch, so it attends across the BATCH, and its scale_in=False branch multiplies the
//     logits by scale_in = False = 0, so that attention is uniform: out_t = W_o mean_b(W_v LN x_t
//     + b_v) + b_o. At batch size 1 (the released inference asserts it) this is the per-token
//     linear map  out_t = W_o (W_v LN x_t + b_v) + b_o,  which is what this mode computes, for
//     every batch size (we do not reproduce the cross-batch mixing, which only makes a sample
//     depend on its batch neighbours). W_q, W_k and their biases are unused (zero gradients). Use
//     it to run the released weights; train with the proper mode. The generator sets it from the
//     config key `compat_official` (aurora/config.h; docs/official-checkpoint.md).
//   Split of the output T [B, 77, 1024] (spec 1.3):
//     t_g   = T[b, eot_b]                      (eot_b = argmax of the token ids: EOT 49407 is the largest id)
//     t_seq = the other 76 positions, in order (SOT and the padding after EOT included, no mask; spec 11.3)
//
// Parameter names follow the released `TextHead` (zhujiapeng/Aurora), so its `text_head.*`
// weights load by name, except `attn.to_out` (released `attn.to_out.0`, an nn.Sequential) and the
// duplicates `res_blocks.N.c_fc/c_proj` the released module also lists (the same tensors as
// `mlp.c_fc/c_proj`):
//   align_dim.{weight,bias}
//   transformer.res_blocks.N.ln_1.{weight,bias}, .attn.to_qkv.{weight,bias}, .attn.to_out.{weight,bias},
//   transformer.res_blocks.N.ln_2.{weight,bias}, .mlp.c_fc.{weight,bias}, .mlp.c_proj.{weight,bias}
#pragma once
#include <cstdint>
#include <vector>

#include "nn/attention.h"
#include "nn/layers.h"
#include "nn/module.h"

namespace engine::nn {

struct TextHeadConfig {
  int64_t in_dim = 768;     // CLIP ViT-L/14 token width
  int64_t width = 1024;     // context_dim
  int64_t heads = 8;        // head dim = width / heads = 128
  int64_t layers = 4;
  int64_t mlp_ratio = 4;
  double lr_mul = 0.01;     // text_lr_mul
  double gain = 1.0;        // text_head_gain
  double eps = kL2AttentionEps;
  bool compat_official = false;  // spec 11.1: the released per-token-linear attention
};

// The transformer's attention (released `MultiHeadAttention`).
class TextAttention : public Module {
 public:
  explicit TextAttention(const TextHeadConfig& config);
  Tensor forward(const Tensor& h) const;  // h [B, L, width] (LN_1 applied) -> [B, L, width]

  TextHeadConfig config;
  EqualLinear& to_qkv;  // width -> 3 width: [q | k | v]
  EqualLinear& to_out;
};

class TextMlp : public Module {
 public:
  TextMlp(int64_t width, int64_t hidden, double lr_mul);
  Tensor forward(const Tensor& h) const;  // c_proj(QuickGELU(c_fc(h)))

  EqualLinear& c_fc;
  EqualLinear& c_proj;
};

class TextBlock : public Module {
 public:
  explicit TextBlock(const TextHeadConfig& config);
  Tensor forward(const Tensor& x) const;

  double gain;
  LayerNorm& ln_1;
  TextAttention& attn;
  LayerNorm& ln_2;
  TextMlp& mlp;
};

// Containers that give the released names transformer.res_blocks.N.
class TextBlockList : public Module {
 public:
  explicit TextBlockList(const TextHeadConfig& config);
  std::vector<TextBlock*> items;
};
class TextTransformer : public Module {
 public:
  explicit TextTransformer(const TextHeadConfig& config);
  Tensor forward(const Tensor& x) const;
  TextBlockList& res_blocks;
};

struct TextHeadOutput {
  Tensor t_g;     // [B, width]: the EOT token
  Tensor t_seq;   // [B, L - 1, width]: every other token, in order
  Tensor tokens;  // [B, L, width]: the whole output T
};

class TextHead : public Module {
 public:
  explicit TextHead(const TextHeadConfig& config = {});
  // tokens [B, L, in_dim] (CLIP ln_final states, L = 77), eot_index i64 [B] with 0 <= eot < L.
  TextHeadOutput forward(const Tensor& tokens, const Tensor& eot_index) const;

  TextHeadConfig config;
  EqualLinear* align_dim = nullptr;  // absent when in_dim == width (as released)
  TextTransformer& transformer;
};

// eot_b = argmax_t token_ids[b, t] (first maximum): CLIP's EOT id 49407 is the largest id.
// token_ids: integer or floating [B, L]; returns i64 [B] on the CPU.
Tensor eot_indices(const Tensor& token_ids);

}  // namespace engine::nn

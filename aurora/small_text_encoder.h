// small_text_encoder.h: the built-in trainable text encoder (DESIGN.md section 11 (b); the
// TextEncoder contract of aurora/text_encoder.h), used when no CLIP weights are given.
//
// A CLIP-shaped text tower, small and trained together with the generator (it is part of G's
// parameter store and optimizer, aurora/trainer.h):
//   x      = token_embedding[hash(id)] + positional_embedding        [B, 77, width]
//   x      = TextBlock_l(x), l < layers                              pre-LN, nn/text_head.h
//   x[eot] = mean_{0 < t < eot} x[t]                                 Note [EOT carries the caption]
//   states = ln_final(x)                                             the generator's clip_tokens
//   eot    = argmax_t ids[b, t]                                      (EOT 49407 is the largest id)
//   pooled = text_projection(states[b, eot_b])                       [B, embed_dim]: D's t_D
// hash(id) = id % vocab_size (SmallTextEncoderConfig::vocab_size; identity at 49408). The blocks
// reuse the text head's L2-attention TextBlock over the 77 tokens (no causal mask: the encoder is
// trained from scratch, so CLIP's causal mask buys nothing here). Embeddings are initialised like
// CLIP's (N(0, 0.02) tokens, N(0, 0.01) positions).
//
// Parameter names: token_embedding, positional_embedding, transformer.res_blocks.N.*, ln_final.*,
// text_projection.weight (CLIP's names where CLIP has the same tensor).
#pragma once
#include <cstdint>

#include "aurora/text_encoder.h"
#include "aurora/train_config.h"
#include "nn/attention.h"
#include "nn/layers.h"
#include "nn/text_head.h"

namespace engine::aurora {

class SmallTextEncoder : public TextEncoder {
 public:
  // width: the generator's text_in_dim; embed_dim: the discriminator's text_dim.
  SmallTextEncoder(const SmallTextEncoderConfig& config, int64_t width, int64_t embed_dim,
                   int64_t context_length = 77);

  TextFeatures encode(const Tensor& ids) const override;  // ids i64 [B, L], L <= context_length
  int64_t width() const override { return width_; }
  int64_t embed_dim() const override { return embed_dim_; }
  bool trainable() const override { return true; }

  SmallTextEncoderConfig config;
  nn::Parameter& token_embedding;       // [vocab_size, width]
  nn::Parameter& positional_embedding;  // [context_length, width]
  nn::TextTransformer& transformer;
  nn::LayerNorm& ln_final;
  nn::EqualLinear& text_projection;     // width -> embed_dim, no bias

 private:
  int64_t width_, embed_dim_, context_length_;
};

}  // namespace engine::aurora

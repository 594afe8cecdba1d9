// text_encoder.h: what the generator and the discriminator need from a text encoder
// (docs/aurora-spec.md section 1; DESIGN.md section 11).
//
// Two implementations over the same CLIP token ids (io/clip_tokenizer.h: 77 ids, SOT ... EOT, 0
// padding):
//   - the CLIP ViT-L/14 text tower loaded from Hugging Face safetensors, frozen (aurora/clip.h):
//     the paper's setup;
//   - SmallTextEncoder (aurora/small_text_encoder.h): token embedding + a few pre-LN transformer
//     layers, trained with the generator: the built-in default when no CLIP weights are given.
// Both give, like CLIP:
//   states  [B, 77, width]   the final layer-normed token states: the generator's clip_tokens
//                            (GeneratorConfig::text_in_dim == width)
//   eot     i64 [B]          position of the EOT token (argmax of the ids, as CLIP does)
//   pooled  [B, embed_dim]   states[b, eot[b]] @ text_projection: CLIP's text embedding; the
//                            discriminator's t_D (DiscriminatorConfig::text_dim == embed_dim) and
//                            the multi-level CLIP loss's text side
#pragma once
#include <cstdint>

#include "nn/module.h"

namespace engine::aurora {

struct TextFeatures {
  Tensor states;  // [B, L, width]
  Tensor eot;     // i64 [B]
  Tensor pooled;  // [B, embed_dim]
};

class TextEncoder : public nn::Module {
 public:
  using nn::Module::Module;
  // ids: i64 [B, L] CLIP token ids.
  virtual TextFeatures encode(const Tensor& ids) const = 0;
  virtual int64_t width() const = 0;
  virtual int64_t embed_dim() const = 0;
  virtual bool trainable() const = 0;  // false for the frozen CLIP tower
};

}  // namespace engine::aurora

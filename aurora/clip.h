// clip.h: the frozen CLIP ViT-L/14 text and vision towers (Radford et al. 2021, "Learning
// Transferable Visual Models From Natural Language Supervision"), loaded from a Hugging Face
// `model.safetensors` with the names of openai/clip-vit-large-patch14 (docs/aurora-spec.md
// section 1: text conditioning; section 8a: the CLIP loss; docs/eval-data-formats.md 3.2, 3.3).
//
// Both towers are pre-LN transformers with QuickGELU (x * sigmoid(1.702 x)), LayerNorm eps 1e-5,
// head dim width / heads, and logits scaled by head_dim^-1/2 (applied to q, as HF does):
//   block(x):  x <- x + out_proj(Attn(q_proj, k_proj, v_proj of layer_norm1(x)))
//              x <- x + fc2(quick_gelu(fc1(layer_norm2(x))))
// Text (77 tokens, causal mask: token t attends to tokens <= t):
//   x = token_embedding[ids] + position_embedding[:L];  blocks;  states = final_layer_norm(x)
//   eot = argmax(ids) (the first EOT: 49407 is the largest id; HF's legacy pooling for this
//   checkpoint, whose config has eos_token_id = 2);  pooled = text_projection(states[b, eot_b])
// Vision (image S x S, patch p, g = S / p, g^2 + 1 tokens, no mask):
//   x = [class_embedding ; patch_embedding(pixels)] + position_embedding;  x = pre_layrnorm(x)
//   blocks;  image_embeds = visual_projection(post_layernorm(x[:, 0]))
// The patch embedding (a conv with kernel = stride = p, no bias) is computed as a reshape of the
// image into patches and one GEMM with the kernel viewed as [width, 3 p p]: the same sum, and
// every matrix product of both towers (patches, q/k/v/out projections, attention scores and
// values, MLP, projections) goes through matmul / linear, i.e. OpenBLAS on the CPU.
//
// Frozen: load_clip_weights() sets each Parameter's value to the file's tensor (f32, on the
// requested device) as a leaf that does NOT require grad, and no ParameterStore is involved, so
// the towers own no gradient buffer and no optimizer sees them. Gradients still flow through the
// vision tower to its input pixels (the CLIP loss trains G through it, aurora/clip_loss.h): the
// ops record Nodes because the input requires grad, and the weights, being constants, get none.
// Do not ParameterStore::materialize a CLIP tower (it would make the weights trainable and
// overwrite them with an initialisation).
//
// HF tensor names (Linear weights are [out, in]; y = x W^T + b):
//   text_model.embeddings.token_embedding.weight [vocab, W], .position_embedding.weight [77, W]
//   text_model.encoder.layers.N.{layer_norm1,layer_norm2}.{weight,bias} [W]
//   text_model.encoder.layers.N.self_attn.{q,k,v,out}_proj.{weight,bias} [W, W], [W]
//   text_model.encoder.layers.N.mlp.fc1.{weight,bias} [M, W], [M];  .mlp.fc2 [W, M], [W]
//   text_model.final_layer_norm.{weight,bias};  text_projection.weight [E, W] (no bias)
//   vision_model.embeddings.class_embedding [V], .patch_embedding.weight [V, 3, p, p],
//   vision_model.embeddings.position_embedding.weight [g^2 + 1, V]
//   vision_model.pre_layrnorm.{weight,bias} (sic), vision_model.encoder.layers.N.* (as text),
//   vision_model.post_layernorm.{weight,bias};  visual_projection.weight [E, V];  logit_scale []
//   Ignored: text_model.embeddings.position_ids, vision_model.embeddings.position_ids (older files).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "aurora/text_encoder.h"
#include "io/safetensors.h"
#include "nn/module.h"
#include "tensor/device.h"

namespace engine::aurora {

struct ClipTextConfig {
  int64_t vocab = 49408;
  int64_t width = 768;
  int64_t layers = 12;
  int64_t heads = 12;
  int64_t mlp = 3072;
  int64_t context = 77;  // positions
};

struct ClipVisionConfig {
  int64_t width = 1024;
  int64_t layers = 24;
  int64_t heads = 16;
  int64_t mlp = 4096;
  int64_t patch = 14;
  int64_t image = 224;
  int64_t grid() const { return image / patch; }
  int64_t tokens() const { return grid() * grid() + 1; }
};

struct ClipConfig {
  ClipTextConfig text;
  ClipVisionConfig vision;
  int64_t embed_dim = 768;  // projection_dim
  double eps = 1e-5;        // LayerNorm eps of both towers
  // openai/clip-vit-large-patch14 (the defaults above).
  static ClipConfig vit_l14() { return {}; }
  // The test configuration: text vocab 1000, width 32, 2 layers, 2 heads, MLP 64, 77 positions;
  // vision width 48, 2 layers, 2 heads, MLP 96, patch 4, image 16 (17 tokens); embed 24.
  static ClipConfig tiny();
  void check() const;  // throws naming the bad field
};

// ---- Building blocks (HF module names) ------------------------------------------------------

class ClipLinear : public nn::Module {
 public:
  ClipLinear(int64_t in, int64_t out, bool bias);
  Tensor forward(const Tensor& x) const;
  nn::Parameter& weight;           // [out, in]
  nn::Parameter* bias = nullptr;   // [out]
};

class ClipLayerNorm : public nn::Module {
 public:
  ClipLayerNorm(int64_t width, double eps);
  Tensor forward(const Tensor& x) const;
  double eps;
  nn::Parameter& weight;
  nn::Parameter& bias;
};

class ClipEmbedding : public nn::Module {  // a lookup table: .weight [n, width]
 public:
  ClipEmbedding(int64_t n, int64_t width);
  nn::Parameter& weight;
};

class ClipAttention : public nn::Module {
 public:
  ClipAttention(int64_t width, int64_t heads);
  // x [B, L, W]; mask: undefined or [L, L] added to the logits (0 / -inf).
  Tensor forward(const Tensor& x, const Tensor& mask) const;
  int64_t width, heads;
  ClipLinear &k_proj, &v_proj, &q_proj, &out_proj;
};

class ClipMlp : public nn::Module {
 public:
  ClipMlp(int64_t width, int64_t hidden);
  Tensor forward(const Tensor& x) const;  // fc2(quick_gelu(fc1(x)))
  ClipLinear &fc1, &fc2;
};

class ClipEncoderLayer : public nn::Module {
 public:
  ClipEncoderLayer(int64_t width, int64_t heads, int64_t mlp, double eps);
  Tensor forward(const Tensor& x, const Tensor& mask) const;
  ClipAttention& self_attn;
  ClipLayerNorm& layer_norm1;
  ClipMlp& mlp;
  ClipLayerNorm& layer_norm2;
};

class ClipEncoder : public nn::Module {  // .layers.N
 public:
  ClipEncoder(int64_t layers, int64_t width, int64_t heads, int64_t mlp, double eps);
  Tensor forward(const Tensor& x, const Tensor& mask) const;
  std::vector<ClipEncoderLayer*> layers;
};

class ClipTextEmbeddings : public nn::Module {
 public:
  explicit ClipTextEmbeddings(const ClipTextConfig& c);
  ClipEmbedding& token_embedding;
  ClipEmbedding& position_embedding;
};

class ClipTextTransformer : public nn::Module {  // text_model
 public:
  ClipTextTransformer(const ClipTextConfig& c, double eps);
  ClipTextEmbeddings& embeddings;
  ClipEncoder& encoder;
  ClipLayerNorm& final_layer_norm;
};

class ClipPatchEmbedding : public nn::Module {  // the conv kernel: .weight [V, 3, p, p], no bias
 public:
  ClipPatchEmbedding(int64_t width, int64_t patch);
  nn::Parameter& weight;
};

class ClipVisionEmbeddings : public nn::Module {
 public:
  explicit ClipVisionEmbeddings(const ClipVisionConfig& c);
  // pixels [B, 3, S, S] -> tokens [B, g^2 + 1, V] (class token first, positions added).
  Tensor forward(const Tensor& pixels) const;
  ClipVisionConfig config;
  nn::Parameter& class_embedding;  // [V]
  ClipPatchEmbedding& patch_embedding;
  ClipEmbedding& position_embedding;
};

class ClipVisionTransformer : public nn::Module {  // vision_model
 public:
  ClipVisionTransformer(const ClipVisionConfig& c, double eps);
  ClipVisionEmbeddings& embeddings;
  ClipLayerNorm& pre_layrnorm;  // sic: HF's name
  ClipEncoder& encoder;
  ClipLayerNorm& post_layernorm;
};

// ---- The towers ------------------------------------------------------------------------------

// The text tower: the TextEncoder of the paper's setup. Parameters: text_model.*, text_projection.
class ClipTextTower : public TextEncoder {
 public:
  explicit ClipTextTower(const ClipConfig& config = ClipConfig::vit_l14());
  // ids i64 [B, L] with L <= context (77 in practice), 0 <= id < vocab. states are computed under
  // the caller's grad mode; they never require grad (all weights are constants).
  TextFeatures encode(const Tensor& ids) const override;
  int64_t width() const override { return config.text.width; }
  int64_t embed_dim() const override { return config.embed_dim; }
  bool trainable() const override { return false; }
  bool loaded() const { return loaded_; }

  ClipConfig config;
  ClipTextTransformer& text_model;
  ClipLinear& text_projection;

 private:
  friend void load_clip_weights(nn::Module&, const io::SafetensorsFile&, Device);
  bool loaded_ = false;
};

// The vision tower. Parameters: vision_model.*, visual_projection.
class ClipVisionTower : public nn::Module {
 public:
  explicit ClipVisionTower(const ClipConfig& config = ClipConfig::vit_l14());
  // pixels [B, 3, S, S] already CLIP-preprocessed (S = config.vision.image, CLIP mean/std;
  // aurora/clip_loss.h does it for generator images) -> image_embeds [B, embed_dim]
  // (visual_projection of the post-LN class token; not L2-normalised). Differentiable w.r.t.
  // pixels.
  Tensor forward(const Tensor& pixels) const;
  // The pre-projection outputs: last_hidden_state [B, T, V] (after the encoder, before
  // post_layernorm) and pooled = post_layernorm(last_hidden_state[:, 0]) [B, V].
  struct Hidden {
    Tensor last_hidden_state, pooled;
  };
  Hidden hidden(const Tensor& pixels) const;
  bool loaded() const { return loaded_; }

  ClipConfig config;
  ClipVisionTransformer& vision_model;
  ClipLinear& visual_projection;

 private:
  friend void load_clip_weights(nn::Module&, const io::SafetensorsFile&, Device);
  bool loaded_ = false;
};

// Load every parameter of `tower` (a ClipTextTower or ClipVisionTower) from `file` by name, as
// frozen f32 constants on `device` (see above). Keys of the file that the tower does not have are
// ignored (one file holds both towers). Errors name the file, the key and the shapes.
void load_clip_weights(nn::Module& tower, const io::SafetensorsFile& file, Device device = Device::cpu());

// Both towers and CLIP's temperature, from one HF model.safetensors.
struct ClipModel {
  std::unique_ptr<ClipTextTower> text;
  std::unique_ptr<ClipVisionTower> vision;
  double logit_scale = 0;  // the stored (log) value; exp(logit_scale) ~ 100 for OpenAI's CLIP
  double logit_scale_exp() const;
};
// Reads `path` once and loads both towers (ClipConfig::vit_l14() by default). One-line errors for a
// missing or unreadable file, a missing key or a wrong shape.
ClipModel load_clip(const std::string& path, const ClipConfig& config = ClipConfig::vit_l14(),
                    Device device = Device::cpu());
// Only the text tower (the trainer's TextEncoder when no CLIP loss is wanted).
std::unique_ptr<ClipTextTower> load_clip_text_tower(const std::string& path,
                                                    const ClipConfig& config = ClipConfig::vit_l14(),
                                                    Device device = Device::cpu());

// CLIP's activation: x * sigmoid(1.702 x).
Tensor quick_gelu(const Tensor& x);
// [L, L] additive causal mask: 0 where key <= query, -inf above the diagonal.
Tensor causal_mask(int64_t L, TensorOptions options = {});

}  // namespace engine::aurora

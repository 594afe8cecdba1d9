// clip.cpp: the CLIP ViT-L/14 text and vision towers and their loader (the math and the tensor
// names are in clip.h).
#include "aurora/clip.h"

#include <cmath>
#include <filesystem>
#include <limits>
#include <string>

#include "autograd/grad_mode.h"
#include "tensor/memory/profiler.h"
#include "tensor/ops.h"

namespace engine::aurora {

// ---- Config ----------------------------------------------------------------------------------

ClipConfig ClipConfig::tiny() {
  ClipConfig c;
  c.text = ClipTextConfig{1000, 32, 2, 2, 64, 77};
  c.vision = ClipVisionConfig{48, 2, 2, 96, 4, 16};
  c.embed_dim = 24;
  return c;
}

void ClipConfig::check() const {
  auto pos = [](int64_t v, const char* what) {
    ENGINE_CHECK(v > 0, "ClipConfig: {} must be positive, got {}", what, v);
  };
  pos(text.vocab, "text.vocab"), pos(text.width, "text.width"), pos(text.heads, "text.heads");
  pos(text.mlp, "text.mlp"), pos(text.context, "text.context"), pos(vision.width, "vision.width");
  pos(vision.heads, "vision.heads"), pos(vision.mlp, "vision.mlp"), pos(vision.patch, "vision.patch");
  pos(vision.image, "vision.image"), pos(embed_dim, "embed_dim");
  ENGINE_CHECK(text.layers >= 0 && vision.layers >= 0, "ClipConfig: layers must be >= 0 (text {}, vision {})",
               text.layers, vision.layers);
  ENGINE_CHECK(text.width % text.heads == 0, "ClipConfig: text.width {} is not divisible into {} heads", text.width,
               text.heads);
  ENGINE_CHECK(vision.width % vision.heads == 0, "ClipConfig: vision.width {} is not divisible into {} heads",
               vision.width, vision.heads);
  ENGINE_CHECK(vision.image % vision.patch == 0, "ClipConfig: vision.image {} is not a multiple of vision.patch {}",
               vision.image, vision.patch);
  ENGINE_CHECK(eps > 0, "ClipConfig: eps must be positive, got {}", eps);
}

namespace {
const ClipConfig& checked(const ClipConfig& c) {
  c.check();
  return c;
}
}  // namespace

// ---- Functions -------------------------------------------------------------------------------

Tensor quick_gelu(const Tensor& x) { return mul(x, sigmoid(mul(x, 1.702))); }

Tensor causal_mask(int64_t L, TensorOptions options) {
  std::vector<double> m(size_t(L * L), 0.0);
  for (int64_t i = 0; i < L; ++i)
    for (int64_t j = i + 1; j < L; ++j) m[size_t(i * L + j)] = -std::numeric_limits<double>::infinity();
  return from_vector(m, {L, L}, options);
}

// ---- Blocks ----------------------------------------------------------------------------------

ClipLinear::ClipLinear(int64_t in, int64_t out, bool has_bias)
    : Module("ClipLinear"), weight(register_parameter("weight", {out, in}, nn::Init::zeros())) {
  if (has_bias) bias = &register_parameter("bias", {out}, nn::Init::zeros());
}

Tensor ClipLinear::forward(const Tensor& x) const {
  return linear(x, weight.value, bias ? bias->value : Tensor());
}

ClipLayerNorm::ClipLayerNorm(int64_t width, double eps_)
    : Module("ClipLayerNorm"),
      eps(eps_),
      weight(register_parameter("weight", {width}, nn::Init::ones())),
      bias(register_parameter("bias", {width}, nn::Init::zeros())) {}

Tensor ClipLayerNorm::forward(const Tensor& x) const {
  return layer_norm(x, {x.size(x.dim() - 1)}, weight.value, bias.value, eps);
}

ClipEmbedding::ClipEmbedding(int64_t n, int64_t width)
    : Module("ClipEmbedding"), weight(register_parameter("weight", {n, width}, nn::Init::zeros())) {}

ClipPatchEmbedding::ClipPatchEmbedding(int64_t width, int64_t patch)
    : Module("ClipPatchEmbedding"), weight(register_parameter("weight", {width, 3, patch, patch}, nn::Init::zeros())) {}

// HF registers k, v, q, out in this order; the order only matters for named_parameters().
ClipAttention::ClipAttention(int64_t width_, int64_t heads_)
    : Module("ClipAttention"),
      width(width_),
      heads(heads_),
      k_proj(register_module<ClipLinear>("k_proj", width_, width_, true)),
      v_proj(register_module<ClipLinear>("v_proj", width_, width_, true)),
      q_proj(register_module<ClipLinear>("q_proj", width_, width_, true)),
      out_proj(register_module<ClipLinear>("out_proj", width_, width_, true)) {}

Tensor ClipAttention::forward(const Tensor& x, const Tensor& mask) const {
  memory::ModuleScope scope("self_attn");
  const int64_t B = x.size(0), L = x.size(1), d = width / heads;
  // q is scaled after its projection (HF: q_proj(x) * scale); heads split as [B, H, L, d].
  const Tensor q = permute(view(mul(q_proj.forward(x), 1.0 / std::sqrt(double(d))), {B, L, heads, d}), {0, 2, 1, 3});
  const Tensor kt = permute(view(k_proj.forward(x), {B, L, heads, d}), {0, 2, 3, 1});  // [B, H, d, L]
  const Tensor v = permute(view(v_proj.forward(x), {B, L, heads, d}), {0, 2, 1, 3});
  Tensor s = matmul(q, kt);  // [B, H, L, L]: one batched GEMM
  if (mask.defined()) s = add(s, mask);
  const Tensor o = matmul(softmax(s, 3), v);  // [B, H, L, d]
  return out_proj.forward(reshape(permute(o, {0, 2, 1, 3}), {B, L, width}));
}

ClipMlp::ClipMlp(int64_t width, int64_t hidden)
    : Module("ClipMlp"),
      fc1(register_module<ClipLinear>("fc1", width, hidden, true)),
      fc2(register_module<ClipLinear>("fc2", hidden, width, true)) {}

Tensor ClipMlp::forward(const Tensor& x) const {
  memory::ModuleScope scope("mlp");
  return fc2.forward(quick_gelu(fc1.forward(x)));
}

ClipEncoderLayer::ClipEncoderLayer(int64_t width, int64_t heads, int64_t mlp_, double eps)
    : Module("ClipEncoderLayer"),
      self_attn(register_module<ClipAttention>("self_attn", width, heads)),
      layer_norm1(register_module<ClipLayerNorm>("layer_norm1", width, eps)),
      mlp(register_module<ClipMlp>("mlp", width, mlp_)),
      layer_norm2(register_module<ClipLayerNorm>("layer_norm2", width, eps)) {}

Tensor ClipEncoderLayer::forward(const Tensor& x, const Tensor& mask) const {
  const Tensor h = add(x, self_attn.forward(layer_norm1.forward(x), mask));
  return add(h, mlp.forward(layer_norm2.forward(h)));
}

namespace {
// The container that gives the names encoder.layers.N.
class ClipLayerList : public nn::Module {
 public:
  ClipLayerList(int64_t n, int64_t width, int64_t heads, int64_t mlp, double eps) : Module("ClipLayerList") {
    for (int64_t i = 0; i < n; ++i)
      items.push_back(&register_module<ClipEncoderLayer>(std::to_string(i), width, heads, mlp, eps));
  }
  std::vector<ClipEncoderLayer*> items;
};
}  // namespace

ClipEncoder::ClipEncoder(int64_t n, int64_t width, int64_t heads, int64_t mlp, double eps) : Module("ClipEncoder") {
  layers = register_module<ClipLayerList>("layers", n, width, heads, mlp, eps).items;
}

Tensor ClipEncoder::forward(const Tensor& x, const Tensor& mask) const {
  Tensor h = x;
  for (size_t i = 0; i < layers.size(); ++i) {
    memory::ModuleScope scope("layers." + std::to_string(i));
    h = layers[i]->forward(h, mask);
  }
  return h;
}

ClipTextEmbeddings::ClipTextEmbeddings(const ClipTextConfig& c)
    : Module("ClipTextEmbeddings"),
      token_embedding(register_module<ClipEmbedding>("token_embedding", c.vocab, c.width)),
      position_embedding(register_module<ClipEmbedding>("position_embedding", c.context, c.width)) {}

ClipTextTransformer::ClipTextTransformer(const ClipTextConfig& c, double eps)
    : Module("ClipTextTransformer"),
      embeddings(register_module<ClipTextEmbeddings>("embeddings", c)),
      encoder(register_module<ClipEncoder>("encoder", c.layers, c.width, c.heads, c.mlp, eps)),
      final_layer_norm(register_module<ClipLayerNorm>("final_layer_norm", c.width, eps)) {}

ClipVisionEmbeddings::ClipVisionEmbeddings(const ClipVisionConfig& c)
    : Module("ClipVisionEmbeddings"),
      config(c),
      class_embedding(register_parameter("class_embedding", {c.width}, nn::Init::zeros())),
      patch_embedding(register_module<ClipPatchEmbedding>("patch_embedding", c.width, c.patch)),
      position_embedding(register_module<ClipEmbedding>("position_embedding", c.tokens(), c.width)) {}

Tensor ClipVisionEmbeddings::forward(const Tensor& pixels) const {
  memory::ModuleScope scope("embeddings");
  const int64_t B = pixels.size(0), p = config.patch, g = config.grid(), V = config.width;
  // The stride-p conv as one GEMM: patches [B, g*g, 3*p*p] (channel, row, column inside a patch,
  // the order of the kernel's [3, p, p]) times the kernel viewed as [V, 3*p*p].
  const Tensor patches =
      reshape(permute(reshape(pixels, {B, 3, g, p, g, p}), {0, 2, 4, 1, 3, 5}), {B, g * g, 3 * p * p});
  const Tensor emb = linear(patches, reshape(patch_embedding.weight.value, {V, 3 * p * p}));
  const Tensor cls = expand(reshape(class_embedding.value, {1, 1, V}), {B, 1, V});
  return add(cat({cls, emb}, 1), position_embedding.weight.value);
}

ClipVisionTransformer::ClipVisionTransformer(const ClipVisionConfig& c, double eps)
    : Module("ClipVisionTransformer"),
      embeddings(register_module<ClipVisionEmbeddings>("embeddings", c)),
      pre_layrnorm(register_module<ClipLayerNorm>("pre_layrnorm", c.width, eps)),
      encoder(register_module<ClipEncoder>("encoder", c.layers, c.width, c.heads, c.mlp, eps)),
      post_layernorm(register_module<ClipLayerNorm>("post_layernorm", c.width, eps)) {}

// ---- Towers ----------------------------------------------------------------------------------

ClipTextTower::ClipTextTower(const ClipConfig& c)
    : TextEncoder("ClipTextTower"),
      config(checked(c)),
      text_model(register_module<ClipTextTransformer>("text_model", c.text, c.eps)),
      text_projection(register_module<ClipLinear>("text_projection", c.text.width, c.embed_dim, false)) {}

TextFeatures ClipTextTower::encode(const Tensor& ids_in) const {
  ENGINE_CHECK(loaded_, "ClipTextTower: weights are not loaded (load_clip / load_clip_weights)");
  ENGINE_CHECK(ids_in.dim() == 2 && ids_in.dtype() == DType::i64,
               "ClipTextTower: ids must be i64 [B, L], got {} {}", dtype_name(ids_in.dtype()), ids_in.sizes().str());
  const int64_t B = ids_in.size(0), L = ids_in.size(1), W = config.text.width;
  ENGINE_CHECK(B > 0 && L > 0 && L <= config.text.context, "ClipTextTower: ids {} must have 1..{} tokens per row",
               ids_in.sizes().str(), config.text.context);
  memory::ModuleScope scope("clip_text");
  const std::vector<double> host = ids_in.to_vector();
  std::vector<int64_t> eot(size_t(B), 0), rows(size_t(B), 0);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < L; ++t) {
      const double id = host[size_t(b * L + t)];
      ENGINE_CHECK(id >= 0 && id < double(config.text.vocab), "ClipTextTower: token id {} at [{}, {}] is outside [0, {})",
                   int64_t(id), b, t, config.text.vocab);
      if (id > host[size_t(b * L + eot[size_t(b)])]) eot[size_t(b)] = t;  // argmax, first maximum
    }
    rows[size_t(b)] = b * L + eot[size_t(b)];
  }
  const Device dev = text_projection.weight.value.device();
  const Tensor ids = ids_in.device() == dev ? ids_in : ids_in.to(dev);
  const ClipTextTransformer& m = text_model;
  Tensor x = view(index_select(m.embeddings.token_embedding.weight.value, 0, reshape(ids, {B * L})), {B, L, W});
  x = add(x, narrow(m.embeddings.position_embedding.weight.value, 0, 0, L));
  x = m.encoder.forward(x, causal_mask(L, opts(DType::f32, dev)));
  TextFeatures f;
  f.states = m.final_layer_norm.forward(x);
  f.eot = from_vector_i64(eot, {B}, opts(DType::i64, dev));
  const Tensor at_eot = index_select(reshape(f.states, {B * L, W}), 0, from_vector_i64(rows, {B}, opts(DType::i64, dev)));
  f.pooled = text_projection.forward(at_eot);
  return f;
}

ClipVisionTower::ClipVisionTower(const ClipConfig& c)
    : Module("ClipVisionTower"),
      config(checked(c)),
      vision_model(register_module<ClipVisionTransformer>("vision_model", c.vision, c.eps)),
      visual_projection(register_module<ClipLinear>("visual_projection", c.vision.width, c.embed_dim, false)) {}

ClipVisionTower::Hidden ClipVisionTower::hidden(const Tensor& pixels) const {
  ENGINE_CHECK(loaded_, "ClipVisionTower: weights are not loaded (load_clip / load_clip_weights)");
  const int64_t S = config.vision.image;
  ENGINE_CHECK(pixels.dim() == 4 && pixels.size(1) == 3 && pixels.size(2) == S && pixels.size(3) == S &&
                   pixels.dtype() == DType::f32,
               "ClipVisionTower: pixels must be f32 [B, 3, {}, {}] (CLIP-preprocessed), got {} {}", S, S,
               dtype_name(pixels.dtype()), pixels.sizes().str());
  memory::ModuleScope scope("clip_vision");
  const ClipVisionTransformer& m = vision_model;
  Hidden h;
  h.last_hidden_state = m.encoder.forward(m.pre_layrnorm.forward(m.embeddings.forward(pixels)), Tensor());
  h.pooled = m.post_layernorm.forward(select(h.last_hidden_state, 1, 0));
  return h;
}

Tensor ClipVisionTower::forward(const Tensor& pixels) const { return visual_projection.forward(hidden(pixels).pooled); }

// ---- Loading ---------------------------------------------------------------------------------

void load_clip_weights(nn::Module& tower, const io::SafetensorsFile& file, Device device) {
  auto* text = dynamic_cast<ClipTextTower*>(&tower);
  auto* vision = dynamic_cast<ClipVisionTower*>(&tower);
  ENGINE_CHECK(text || vision, "load_clip_weights: {} is not a CLIP tower", tower.type_name());
  autograd::NoGradGuard no_grad;
  // Check every key first, so a bad file leaves the tower untouched.
  auto params = tower.named_parameters();
  for (auto& [name, p] : params) {
    ENGINE_CHECK(file.contains(name), "clip: {} has no tensor '{}' (expected shape {})", file.source, name,
                 p->shape.str());
    const Tensor& src = file.at(name);
    ENGINE_CHECK(src.sizes() == p->shape, "clip: '{}' in {} has shape {}, expected {}", name, file.source,
                 src.sizes().str(), p->shape.str());
    ENGINE_CHECK(is_floating(src.dtype()), "clip: '{}' in {} has dtype {}, expected a floating type", name,
                 file.source, dtype_name(src.dtype()));
  }
  for (auto& [name, p] : params) {
    Tensor v = file.at(name);
    if (v.dtype() != DType::f32) v = v.to(DType::f32);
    if (v.device() != device) v = v.to(device);
    v = contiguous(v).detach();
    v.set_name(name);
    p->value = v;  // a constant leaf: requires_grad stays false (frozen)
  }
  (text ? text->loaded_ : vision->loaded_) = true;
}

double ClipModel::logit_scale_exp() const { return std::exp(logit_scale); }

namespace {
io::SafetensorsFile read_clip_file(const std::string& path) {
  ENGINE_CHECK(std::filesystem::is_regular_file(path),
               "clip: weights file {} does not exist (a Hugging Face model.safetensors of openai/clip-vit-large-patch14)",
               path);
  return io::read_safetensors(path);
}
}  // namespace

ClipModel load_clip(const std::string& path, const ClipConfig& config, Device device) {
  const io::SafetensorsFile file = read_clip_file(path);
  ClipModel m;
  m.text = std::make_unique<ClipTextTower>(config);
  m.vision = std::make_unique<ClipVisionTower>(config);
  load_clip_weights(*m.text, file, device);
  load_clip_weights(*m.vision, file, device);
  ENGINE_CHECK(file.contains("logit_scale"), "clip: {} has no tensor 'logit_scale' (expected shape [])", path);
  const Tensor& ls = file.at("logit_scale");
  ENGINE_CHECK(ls.numel() == 1, "clip: 'logit_scale' in {} has shape {}, expected []", path, ls.sizes().str());
  m.logit_scale = ls.item();
  return m;
}

std::unique_ptr<ClipTextTower> load_clip_text_tower(const std::string& path, const ClipConfig& config,
                                                    Device device) {
  auto t = std::make_unique<ClipTextTower>(config);
  load_clip_weights(*t, read_clip_file(path), device);
  return t;
}

}  // namespace engine::aurora

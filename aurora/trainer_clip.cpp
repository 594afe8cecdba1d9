// trainer_clip.cpp: the CLIP side of the trainer (aurora/trainer.h; docs/clip.md "Wiring into the
// trainer"; docs/aurora-spec.md section 1 for the text conditioning, 8a for the CLIP loss).
//
//   - load_run_clip: the frozen towers of train.clip_weights, sized from the file's shapes;
//   - Trainer::setup_clip: which towers a run needs (CLIP text and/or the CLIP loss) and the
//     width checks (generator.text_in_dim = CLIP text width, discriminator.text_dim = CLIP embed
//     dim when the CLIP text tower is the text encoder);
//   - Trainer::clip_loss_term: G_main's multi-level CLIP loss on G's own pyramid levels;
//   - the checkpoint's record of the CLIP file (path + content hash) and the resume check.
// Kept apart from trainer.cpp so the step's phases stay readable; only G_main calls in here.
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "aurora/clip_loss.h"
#include "aurora/trainer.h"
#include "autograd/grad_mode.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace engine::aurora {

namespace {

const Tensor& clip_tensor(const io::SafetensorsFile& f, const std::string& key, int64_t dims) {
  ENGINE_CHECK(f.contains(key), "clip: {} has no tensor '{}' (not a Hugging Face CLIP model.safetensors?)", f.source,
               key);
  const Tensor& t = f.at(key);
  ENGINE_CHECK(t.dim() == dims, "clip: '{}' in {} has shape {}, expected {} dimensions", key, f.source, t.sizes().str(),
               dims);
  return t;
}

int64_t count_layers(const io::SafetensorsFile& f, const std::string& prefix) {
  int64_t n = 0;
  while (f.contains(fmt::format("{}.encoder.layers.{}.self_attn.q_proj.weight", prefix, n))) ++n;
  return n;
}

int64_t heads_for(int64_t width, int64_t heads, const char* key, const std::string& file) {
  if (heads > 0) return heads;
  ENGINE_CHECK(width % 64 == 0,
               "clip: {} has width {}, not a multiple of 64, so its heads cannot be inferred; set config.train.{}",
               file, width, key);
  return width / 64;
}

}  // namespace

ClipConfig clip_config_from_file(const io::SafetensorsFile& f, int64_t text_heads, int64_t vision_heads) {
  ClipConfig c;
  const Tensor& tok = clip_tensor(f, "text_model.embeddings.token_embedding.weight", 2);
  c.text.vocab = tok.size(0);
  c.text.width = tok.size(1);
  c.text.context = clip_tensor(f, "text_model.embeddings.position_embedding.weight", 2).size(0);
  c.text.layers = count_layers(f, "text_model");
  if (c.text.layers > 0) c.text.mlp = clip_tensor(f, "text_model.encoder.layers.0.mlp.fc1.weight", 2).size(0);
  c.text.heads = heads_for(c.text.width, text_heads, "clip_text_heads", f.source);
  c.embed_dim = clip_tensor(f, "text_projection.weight", 2).size(0);
  if (f.contains("vision_model.embeddings.class_embedding")) {
    c.vision.width = clip_tensor(f, "vision_model.embeddings.class_embedding", 1).size(0);
    c.vision.patch = clip_tensor(f, "vision_model.embeddings.patch_embedding.weight", 4).size(2);
    const int64_t tokens = clip_tensor(f, "vision_model.embeddings.position_embedding.weight", 2).size(0);
    const auto grid = int64_t(std::llround(std::sqrt(double(tokens - 1))));
    ENGINE_CHECK(grid * grid + 1 == tokens,
                 "clip: 'vision_model.embeddings.position_embedding.weight' in {} has {} rows, expected g^2 + 1", f.source,
                 tokens);
    c.vision.image = grid * c.vision.patch;
    c.vision.layers = count_layers(f, "vision_model");
    if (c.vision.layers > 0) c.vision.mlp = clip_tensor(f, "vision_model.encoder.layers.0.mlp.fc1.weight", 2).size(0);
    c.vision.heads = heads_for(c.vision.width, vision_heads, "clip_vision_heads", f.source);
  }
  c.check();
  return c;
}

std::string clip_file_hash(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  ENGINE_CHECK(in.good(), "clip: cannot read {}", path);
  // FNV-1a with 64-bit words as the unit (one xor, multiply and xor-shift per 8 bytes instead of
  // a round per byte), the length mixed in at the end.
  uint64_t h = 0xcbf29ce484222325ull, length = 0;
  std::vector<char> buf(size_t(1) << 20);
  while (in) {
    in.read(buf.data(), std::streamsize(buf.size()));
    const auto n = size_t(in.gcount());
    if (n == 0) break;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      std::memcpy(&w, buf.data() + i, 8);
      h = (h ^ w) * 0x100000001b3ull;
      h ^= h >> 29;
    }
    for (; i < n; ++i) h = (h ^ uint8_t(buf[i])) * 0x100000001b3ull;
    length += n;
  }
  h = (h ^ length) * 0x100000001b3ull;
  return fmt::format("fnv64w:{:016x}", h);
}

double RunClip::logit_scale_exp() const { return std::exp(logit_scale); }

std::shared_ptr<RunClip> load_run_clip(const std::string& path, int64_t text_heads, int64_t vision_heads,
                                       bool with_vision) {
  std::error_code ec;
  ENGINE_CHECK(std::filesystem::is_regular_file(path, ec),
               "clip: weights file {} does not exist (config.train.clip_weights: a Hugging Face model.safetensors of "
               "openai/clip-vit-large-patch14)",
               path);
  auto clip = std::make_shared<RunClip>();
  clip->path = path;
  const io::SafetensorsFile f = io::read_safetensors(path);
  clip->config = clip_config_from_file(f, text_heads, vision_heads);
  clip->text = std::make_shared<ClipTextTower>(clip->config);
  load_clip_weights(*clip->text, f);
  if (with_vision) {
    ENGINE_CHECK(f.contains("vision_model.embeddings.class_embedding"),
                 "clip: {} has no vision tower (the CLIP loss needs 'vision_model.*')", path);
    clip->vision = std::make_shared<ClipVisionTower>(clip->config);
    load_clip_weights(*clip->vision, f);
    ENGINE_CHECK(f.contains("logit_scale") && f.at("logit_scale").numel() == 1,
                 "clip: {} has no scalar tensor 'logit_scale'", path);
    clip->logit_scale = f.at("logit_scale").item();
  }
  clip->hash = clip_file_hash(path);
  return clip;
}

void Trainer::setup_clip(const DiscriminatorConfig& dcfg) {
  const TrainConfig& t = train_;
  const bool text = t.text_encoder == "clip";
  ENGINE_CHECK(!text || !t.clip_weights.empty(),
               "config.train.text_encoder: \"clip\" needs config.train.clip_weights (a Hugging Face CLIP "
               "model.safetensors)");
  const bool loss = !t.clip_weights.empty() && t.clip_loss_weight > 0;
  for (const int64_t r : t.clip_loss_resolutions)
    ENGINE_CHECK(r <= gcfg_.image_size, "config.train.clip_loss_resolutions: {} is above image_size {}", r,
                 gcfg_.image_size);
  if (!text && !loss) return;
  clip_ = load_run_clip(t.clip_weights, t.clip_text_heads, t.clip_vision_heads, loss);
  if (text) {
    ENGINE_CHECK(gcfg_.text_in_dim == clip_->config.text.width,
                 "config: generator.text_in_dim {} differs from the CLIP text width {} of train.clip_weights {} "
                 "(train.text_encoder = \"clip\" feeds the CLIP token states to G)",
                 gcfg_.text_in_dim, clip_->config.text.width, t.clip_weights);
    ENGINE_CHECK(dcfg.text_dim == clip_->config.embed_dim,
                 "config: discriminator.text_dim {} differs from the CLIP embed dim {} of train.clip_weights {} "
                 "(train.text_encoder = \"clip\" feeds the pooled CLIP embedding to D)",
                 dcfg.text_dim, clip_->config.embed_dim, t.clip_weights);
  }
}

Tensor Trainer::clip_loss_term(const std::map<int64_t, Tensor>& images, const TextFeatures& text, const Tensor& ids,
                               StepResult& res) const {
  if (!clip_ || !clip_->vision || train_.clip_loss_weight <= 0) return {};
  // G's own levels only: a level above the stage would be an upsampled copy of the stage image.
  std::vector<int64_t> levels;
  ClipLossConfig cfg;
  cfg.weight = train_.clip_loss_weight;
  cfg.kind = train_.clip_loss_kind == "image_to_text" ? ClipLossKind::image_to_text
             : train_.clip_loss_kind == "cosine"      ? ClipLossKind::cosine
                                                      : ClipLossKind::symmetric_contrastive;
  if (train_.clip_loss_resolutions.empty()) {
    for (const auto& [r, img] : images)
      if (r <= state_.stage) levels.push_back(r), cfg.level_weights.push_back(1.0);
  } else {
    for (size_t i = 0; i < train_.clip_loss_resolutions.size(); ++i) {
      const int64_t r = train_.clip_loss_resolutions[i];
      if (r > state_.stage || !images.count(r)) continue;
      levels.push_back(r);
      cfg.level_weights.push_back(train_.clip_loss_level_weights.empty() ? 1.0 : train_.clip_loss_level_weights[i]);
    }
  }
  if (levels.empty()) return {};
  // The text side is a constant: CLIP's pooled embedding of the captions (the text encoder's own
  // when it is the CLIP tower, else the CLIP text tower run here).
  Tensor pooled;
  if (train_.text_encoder == "clip") {
    pooled = text.pooled.detach();
  } else {
    autograd::NoGradGuard no_grad;
    pooled = clip_->text->encode(ids).pooled;
  }
  std::vector<Tensor> pyramid;
  for (const int64_t r : levels) pyramid.push_back(images.at(r));
  const ClipLossResult r = multi_level_clip_loss(*clip_->vision, pyramid, pooled, cfg, clip_->logit_scale_exp());
  res.clip = r.loss.item();
  res.clip_applied = true;
  for (size_t i = 0; i < levels.size(); ++i)
    if (i < r.levels.size() && r.levels[i].defined()) res.clip_levels[levels[i]] = r.levels[i].item();
  return r.loss;
}

std::map<std::string, std::string> Trainer::clip_checkpoint_metadata() const {
  if (!clip_) return {};
  return {{"clip_weights", clip_->path}, {"clip_hash", clip_->hash}};
}

void Trainer::check_clip_checkpoint_metadata(const std::map<std::string, std::string>& meta,
                                             const std::string& ckpt) const {
  // The text encoder of the run that wrote the checkpoint (its config document).
  std::string their_text = "small";
  if (const auto it = meta.find("config"); it != meta.end()) {
    const nlohmann::json doc = nlohmann::json::parse(it->second, nullptr, false);
    if (doc.is_object() && doc.contains("train") && doc["train"].is_object() && doc["train"].contains("text_encoder") &&
        doc["train"]["text_encoder"].is_string())
      their_text = doc["train"]["text_encoder"].get<std::string>();
  }
  ENGINE_CHECK(their_text == train_.text_encoder,
               "checkpoint '{}': trained with train.text_encoder \"{}\", but the config has \"{}\"", ckpt, their_text,
               train_.text_encoder);
  const auto hash = meta.find("clip_hash");
  if (hash == meta.end() || !clip_) return;  // no CLIP file before or now: nothing to compare
  const auto path = meta.find("clip_weights");
  ENGINE_CHECK(hash->second == clip_->hash,
               "checkpoint '{}': trained with CLIP weights {} ({}), but train.clip_weights {} has another content ({}); "
               "resume with the same file",
               ckpt, path == meta.end() ? std::string("?") : path->second, hash->second, clip_->path, clip_->hash);
}

}  // namespace engine::aurora

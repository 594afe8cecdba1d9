// checkpoint.cpp: see checkpoint.h.
#include "aurora/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <map>

#include <fmt/format.h>

#include "autograd/grad_mode.h"
#include "io/safetensors.h"
#include "nn/state_dict.h"
#include "tensor/error.h"

namespace engine::aurora {

namespace {

// The host copy of a tensor to be written: safetensors writes host bytes, so state on a GPU
// is copied to the CPU (one device->host copy per tensor, at checkpoint time only).
Tensor to_host(const Tensor& t) { return t.device().is_cpu() ? t : t.to(Device::cpu()); }

void add_prefixed(io::NamedTensors& out, const std::string& prefix, nn::Module& m) {
  for (auto& [name, t] : nn::state_dict(m)) out.emplace_back(prefix + name, to_host(t));
}

int64_t meta_int(const io::SafetensorsFile& f, const std::string& key) {
  const auto it = f.metadata.find(key);
  ENGINE_CHECK(it != f.metadata.end(), "checkpoint '{}': metadata key '{}' is missing (not a {} file?)", f.source, key,
               kCheckpointFormat);
  try {
    size_t used = 0;
    const long long v = std::stoll(it->second, &used);
    ENGINE_CHECK(used == it->second.size(), "bad");
    return v;
  } catch (const std::exception&) {
    throw Error(fmt::format("checkpoint '{}': metadata '{}' is not an integer: '{}'", f.source, key, it->second));
  }
}

void check_format(const io::SafetensorsFile& f) {
  const auto it = f.metadata.find("format");
  ENGINE_CHECK(it != f.metadata.end() && it->second == kCheckpointFormat,
               "checkpoint '{}': not an Aurora training checkpoint (metadata format is '{}', expected '{}')", f.source,
               it == f.metadata.end() ? std::string("<none>") : it->second, kCheckpointFormat);
}

// Copy file tensor `key` into `dst`, checking the shape.
void load_into(const io::SafetensorsFile& f, const std::string& key, const Tensor& dst) {
  ENGINE_CHECK(f.contains(key), "checkpoint '{}': key '{}' is missing", f.source, key);
  const Tensor& src = f.at(key);
  ENGINE_CHECK(src.sizes() == dst.sizes(), "checkpoint '{}': shape mismatch for '{}': file {} vs model {}", f.source,
               key, src.sizes().str(), dst.sizes().str());
  autograd::NoGradGuard no_grad;
  // The file's tensors are on the host; a CUDA trainer loads them onto its device (so a CPU
  // checkpoint resumes on a GPU and vice versa: the file does not record a device).
  copy_(dst, src.device() == dst.device() ? src : src.to(dst.device()));
}

void load_module(const io::SafetensorsFile& f, const std::string& prefix, nn::Module& m) {
  for (auto& [name, t] : nn::state_dict(m)) load_into(f, prefix + name, t);
}

int64_t step_of(const std::string& file_name) {
  // ckpt-<digits>.safetensors
  const std::string pre = "ckpt-", post = ".safetensors";
  if (file_name.size() <= pre.size() + post.size() || file_name.rfind(pre, 0) != 0 ||
      file_name.substr(file_name.size() - post.size()) != post)
    return -1;
  const std::string digits = file_name.substr(pre.size(), file_name.size() - pre.size() - post.size());
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return -1;
  return std::stoll(digits);
}

}  // namespace

void save_checkpoint(Trainer& t, const std::string& path) {
  // Collective: the ranks must agree before rank 0 writes the replicated state for all of them.
  t.check_consistency();
  t.gather_experts();  // rank 0 then holds every expert (G, G_ema, moments) under its global id
  if (!t.comm().is_root()) return;
  io::NamedTensors tensors;
  add_prefixed(tensors, "G.", t.G());
  add_prefixed(tensors, "G_ema.", t.G_ema());
  add_prefixed(tensors, "D.", t.D());
  tensors.emplace_back("opt.G.exp_avg", to_host(t.g_opt().exp_avg()));
  tensors.emplace_back("opt.G.exp_avg_sq", to_host(t.g_opt().exp_avg_sq()));
  tensors.emplace_back("opt.D.exp_avg", to_host(t.d_opt().exp_avg()));
  tensors.emplace_back("opt.D.exp_avg_sq", to_host(t.d_opt().exp_avg_sq()));
  const TrainState& s = t.state();
  std::map<std::string, std::string> meta = {
      {"format", kCheckpointFormat},
      {"step", std::to_string(s.step)},
      {"nimg", std::to_string(s.nimg)},
      {"stage", std::to_string(s.stage)},
      {"stage_start_nimg", std::to_string(s.stage_start_nimg)},
      {"g_opt_steps", std::to_string(t.g_opt().steps())},
      {"d_opt_steps", std::to_string(t.d_opt().steps())},
      {"seed", std::to_string(t.train_config().seed)},
      {"rng", "philox4x32-10; z of global sample g at step s: stream (seed, purpose), offset (s * batch + g) * z_dim"},
      {"config", t.model_json().dump()},
  };
  for (const auto& [key, value] : t.clip_checkpoint_metadata()) meta[key] = value;  // CLIP file path + hash
  io::save_safetensors(path, tensors, meta);
}

void load_checkpoint(Trainer& t, const std::string& path) {
  const io::SafetensorsFile f = io::read_safetensors(path);
  check_format(f);
  t.check_clip_checkpoint_metadata(f.metadata, path);
  load_module(f, "G.", t.G());
  load_module(f, "G_ema.", t.G_ema());
  load_module(f, "D.", t.D());
  load_into(f, "opt.G.exp_avg", t.g_opt().exp_avg());
  load_into(f, "opt.G.exp_avg_sq", t.g_opt().exp_avg_sq());
  load_into(f, "opt.D.exp_avg", t.d_opt().exp_avg());
  load_into(f, "opt.D.exp_avg_sq", t.d_opt().exp_avg_sq());
  t.g_opt().set_steps(meta_int(f, "g_opt_steps"));
  t.d_opt().set_steps(meta_int(f, "d_opt_steps"));
  TrainState& s = t.mutable_state();
  s.step = meta_int(f, "step");
  s.nimg = meta_int(f, "nimg");
  s.stage = meta_int(f, "stage");
  s.stage_start_nimg = meta_int(f, "stage_start_nimg");
  ENGINE_CHECK(s.stage >= 4 && s.stage <= s.image_size && (s.stage & (s.stage - 1)) == 0,
               "checkpoint '{}': stage {} is not a resolution of this model (4 .. {})", path, s.stage, s.image_size);
  ENGINE_CHECK(uint64_t(meta_int(f, "seed")) == t.train_config().seed,
               "checkpoint '{}': seed {} differs from the config's train.seed {}", path, meta_int(f, "seed"),
               t.train_config().seed);
}

nlohmann::json checkpoint_config(const std::string& path) {
  const io::SafetensorsFile f = io::read_safetensors(path);
  check_format(f);
  const auto it = f.metadata.find("config");
  ENGINE_CHECK(it != f.metadata.end(), "checkpoint '{}': metadata 'config' is missing", path);
  try {
    return nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(fmt::format("checkpoint '{}': metadata 'config' is not valid JSON: {}", path, e.what()));
  }
}

std::string checkpoint_file_name(int64_t step) { return fmt::format("ckpt-{:08d}.safetensors", step); }

std::vector<std::string> list_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return {};
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const int64_t s = step_of(e.path().filename().string());
    if (s >= 0 && e.is_regular_file()) found.emplace_back(s, e.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& [s, p] : found) out.push_back(p);
  return out;
}

void prune_checkpoints(const std::string& dir, int64_t keep) {
  const std::vector<std::string> all = list_checkpoints(dir);
  for (size_t i = 0; i + size_t(std::max<int64_t>(keep, 1)) < all.size(); ++i) {
    std::error_code ec;
    std::filesystem::remove(all[i], ec);
  }
}

Tensor SamplerModel::tokenize(const std::vector<std::string>& captions) const {
  const io::TokenBatch t = tokenizer->tokenize(std::span<const std::string>(captions));
  std::vector<int64_t> ids(t.ids.begin(), t.ids.end());
  return from_vector_i64(ids, {t.rows, t.cols});
}

std::unique_ptr<SamplerModel> load_sampler(const std::string& path, const std::string& vocab,
                                           const std::string& clip_weights) {
  const io::SafetensorsFile f = io::read_safetensors(path);
  check_format(f);
  auto m = std::make_unique<SamplerModel>();
  m->config = checkpoint_config(path);
  const AuroraConfig cfg = parse_config(m->config, path);
  m->generator_config = parse_generator_config(cfg.generator);
  m->train = parse_train_config(cfg.train);
  ENGINE_CHECK(cfg.has_discriminator, "checkpoint '{}': its config has no discriminator section", path);
  std::shared_ptr<const TextEncoder> frozen_text;
  if (m->train.text_encoder == "clip") {
    // The frozen CLIP text tower is not in the checkpoint: load the file it recorded (or the
    // caller's), and check that its content is the one the run was trained with.
    const std::string clip_path = clip_weights.empty() ? m->train.clip_weights : clip_weights;
    std::error_code ec;
    ENGINE_CHECK(std::filesystem::is_regular_file(clip_path, ec),
                 "checkpoint '{}': its text encoder is the CLIP text tower of {}, which does not exist (give the "
                 "same CLIP model.safetensors)",
                 path, clip_path);
    m->clip = load_run_clip(clip_path, m->train.clip_text_heads, m->train.clip_vision_heads, false);
    const auto it = f.metadata.find("clip_hash");
    ENGINE_CHECK(it == f.metadata.end() || it->second == m->clip->hash,
                 "checkpoint '{}': trained with CLIP weights of hash {}, but {} has hash {}", path,
                 it == f.metadata.end() ? std::string() : it->second, clip_path, m->clip->hash);
    frozen_text = m->clip->text;
  }
  m->G = std::make_unique<TextToImage>(m->generator_config, m->train.small_text_encoder, cfg.discriminator.text_dim,
                                       frozen_text);
  m->store.materialize(*m->G, 0);
  for (auto& [name, p] : m->store.parameters()) p->value.requires_grad_(false);
  load_module(f, "G_ema.", *m->G);
  m->step = meta_int(f, "step");
  m->stage = meta_int(f, "stage");
  m->tokenizer = std::make_unique<io::ClipTokenizer>(resolve_vocab_path(vocab.empty() ? m->train.vocab : vocab));
  return m;
}

}  // namespace engine::aurora

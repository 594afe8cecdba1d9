// checkpoint.h: a training run's whole state in one safetensors file (DESIGN.md section 11:
// "Checkpoints in safetensors (PyTorch users can open them), written atomically, with run state
// (step, RNG counters, optimizer) so a resumed run continues exactly").
//
// Tensors (flat optimizer moments are stored as they live: one 1-D buffer per moment):
//   G.<name>          every parameter and buffer of G (text_encoder.*, generator.*; w_avg is
//                     generator.mapping.w_avg)
//   G_ema.<name>      the same for the EMA generator (what `aurora sample` uses)
//   D.<name>          the discriminator
//   opt.G.exp_avg, opt.G.exp_avg_sq, opt.D.exp_avg, opt.D.exp_avg_sq    AdamW moments
// Metadata (strings): format, step, nimg, stage, stage_start_nimg, g_opt_steps, d_opt_steps,
// seed, rng (how z is drawn: the Philox counters are a pure function of seed and step, so these
// two ARE the RNG state), config (the whole config document as JSON, train section resolved);
// with CLIP weights: clip_weights (the path) and clip_hash (clip_file_hash): the frozen CLIP towers
// are not stored, and resuming or sampling with a CLIP file of other content is an error.
//
// Written by rank 0 through io::save_safetensors (temp file, fsync, rename), so a crash or a
// signal never leaves half a checkpoint under the final name. Loading checks every tensor: a
// missing key or a shape mismatch is one engine::Error naming the file, the key and both shapes.
// Files of a run: OUT/checkpoints/ckpt-<step, 8 digits>.safetensors; the last K are kept.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aurora/trainer.h"

namespace engine::aurora {

inline constexpr const char* kCheckpointFormat = "aurora-checkpoint-v1";

// Collective (every rank calls it): Trainer::check_consistency, then rank 0 writes (the state is
// replicated, so the file does not depend on the rank count and loads at any other); the other
// ranks return. Every rank loads the whole file.
void save_checkpoint(Trainer& trainer, const std::string& path);
// Into a trainer built from the same config: parameters, EMA, moments, optimizer step counts and
// the TrainState. Throws engine::Error (file, key, both shapes) on any mismatch.
void load_checkpoint(Trainer& trainer, const std::string& path);

// The config document stored in a checkpoint (to rebuild the networks).
nlohmann::json checkpoint_config(const std::string& path);

std::string checkpoint_file_name(int64_t step);  // "ckpt-00001000.safetensors"
// Checkpoints in `dir`, oldest first (by the step in the name); empty when none or no folder.
std::vector<std::string> list_checkpoints(const std::string& dir);
// Remove all but the newest `keep`.
void prune_checkpoints(const std::string& dir, int64_t keep);

// The EMA generator of a checkpoint and a tokenizer, for sampling and interpolation.
struct SamplerModel {
  nlohmann::json config;
  GeneratorConfig generator_config;
  TrainConfig train;
  std::unique_ptr<TextToImage> G;
  nn::ParameterStore store;
  std::unique_ptr<io::ClipTokenizer> tokenizer;
  std::shared_ptr<RunClip> clip;  // the frozen CLIP text tower (train.text_encoder = "clip"), else null
  int64_t step = 0, stage = 0;

  Tensor tokenize(const std::vector<std::string>& captions) const;
};
// vocab: "" = the path in the checkpoint's config. clip_weights: for a run with the CLIP text
// encoder, "" = the checkpoint's train.clip_weights; the file's hash must match the recorded one.
std::unique_ptr<SamplerModel> load_sampler(const std::string& checkpoint_path, const std::string& vocab = "",
                                           const std::string& clip_weights = "");

}  // namespace engine::aurora

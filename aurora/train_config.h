// train_config.h: the "train" section of a config file (DESIGN.md section 11; the hyperparameters
// of docs/aurora-spec.md section 9, where Aurora's own values are "not found" and the Hammer /
// GigaGAN values stand in; docs/training.md lists every key).
//
//   {"generator": {...}, "discriminator": {...}, "train": {"batch_size": 16, ...}}
//
// Unlike the model sections every key here is OPTIONAL and takes the default below (the run's
// knobs, not the architecture), but parsing is as strict as aurora/config.cpp: an unknown key, a
// wrong type or a value out of range is an engine::Error naming the key path
// ("config.train.r1_gamma: expected a number >= 0, got string \"x\""). Keys starting with '_' are
// comments. to_json() writes every key, so a checkpoint stores the complete, resolved section and
// `--set train.KEY=VALUE` works for keys a preset leaves out (the CLI fills the defaults in
// first).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace engine::aurora {

// The built-in trainable text encoder (aurora/small_text_encoder.h). Its width is the
// generator's text_in_dim and its embed_dim the discriminator's text_dim.
struct SmallTextEncoderConfig {
  // Token embedding rows. 49408 = one row per CLIP id; a smaller value hashes id -> id %
  // vocab_size, which keeps tiny presets small (a 24-wide table over 49408 ids would outweigh
  // the whole tiny16 generator). Collisions only merge rare tokens; EOT is located from the raw
  // ids, so it is never lost.
  int64_t vocab_size = 49408;
  int64_t layers = 2;        // pre-LN transformer blocks (nn/text_head.h's TextBlock)
  int64_t heads = 4;         // must divide the width
  int64_t mlp_ratio = 4;
  double lr_mul = 1.0;       // equalized-lr multiplier of its linears
  nlohmann::json to_json() const;
};

// The rule that moves progressive growing to the next resolution (spec section 9).
//   "kimg":  after `stage_kimg` thousand images at a stage (the default)
//   "fid":   the paper's reference-FID rule (aurora/trainer.h: ReferenceFidRule): grow when the
//            generator's FID at the stage resolution reaches the FID between two disjoint halves
//            of the real data (times fid_tolerance), checked every fid_check_kimg; `aurora train`
//            computes both with the FID Inception-v3 (aurora/fid.h; weights: fid_weights)
//   "none":  train at image_size from the start (start_resolution is ignored)
struct GrowingConfig {
  std::string rule = "kimg";
  int64_t start_resolution = 4;
  double stage_kimg = 100.0;
  // "fid" only:
  std::string fid_weights;      // pytorch-fid Inception weights as safetensors (docs/evaluation.md)
  int64_t fid_n = 2000;         // images per FID (each real half and the generated set)
  double fid_check_kimg = 10.0; // how often the generator's FID is computed
  double fid_tolerance = 1.0;   // grow when FID_G <= tolerance x FID_reference
  nlohmann::json to_json() const;
};

struct TrainConfig {
  // Sizes and length.
  int64_t batch_size = 16;      // GLOBAL batch (split evenly over the ranks)
  int64_t expert_parallel = 1;  // EP group size: the MoE experts of G sharded over this many ranks
                                // (dist/expert_parallel.h); must divide the rank count and every
                                // MoE layer's expert count
  int64_t micro_batch = 0;      // rows per forward/backward pass; 0 = the whole local batch. The
                                // same micro_batch at every rank count makes the data-parallel
                                // deterministic mode bit-identical across rank counts
  int64_t steps = 10000;        // total training steps (the CLI's --steps / --kimg override it)
  uint64_t seed = 0;            // parameters, z, data order, sample z: Philox streams keyed by it
  // Optimizers (AdamW; spec 9: GigaGAN T2I-64 uses lr 0.0025, betas (0, 0.99)).
  double g_lr = 0.0025;
  double d_lr = 0.0025;
  double beta1 = 0.0;
  double beta2 = 0.99;
  double eps = 1e-8;
  double g_weight_decay = 0.0;
  double d_weight_decay = 0.0;
  // Per-parameter learning-rate multipliers on top of the equalized-lr lr_mul of each layer:
  // {"G.generator.mapping.": 10, "D.text.": 2}: a parameter whose name ("G." or "D." + its
  // state_dict name) starts with a prefix gets lr * multiplier (the longest matching prefix
  // wins). Short runs use it to speed up the mapping network and the text head, whose
  // lr_mul 0.01 is made for runs of millions of images.
  std::map<std::string, double> lr_multipliers;
  // Losses (spec 8b, 6). GigaGAN T2I-64: R1 gamma 0.2048-2.048, lazy R1 every 16 steps.
  double r1_gamma = 0.2048;
  int64_t r1_interval = 16;     // 0 disables R1
  double match_weight = 1.0;    // matching-aware term, on D and G (spec 8b)
  double moe_loss_weight = 1.0; // outer weight on the summed MoE losses (not found in the spec)
  // G EMA and w_avg (spec 9: Hammer's half-life 10 kimg, w-avg decay 0.995).
  double ema_kimg = 10.0;       // half-life in thousands of images
  double ema_rampup = 0.0;      // > 0: half-life = min(ema_kimg, kimg so far * ema_rampup) (StyleGAN2-ADA)
  double w_avg_decay = 0.995;
  // Progressive growing (spec 9).
  GrowingConfig growing;
  // Text.
  //   "small": SmallTextEncoder, trained with G (the built-in default);
  //   "clip":  the frozen CLIP text tower of clip_weights (the paper's setup; aurora/clip.h):
  //            generator.text_in_dim must be its width and discriminator.text_dim its embed dim.
  std::string text_encoder = "small";
  SmallTextEncoderConfig small_text_encoder;
  // CLIP (docs/clip.md, "Wiring into the trainer"). clip_weights: a Hugging Face
  // model.safetensors of openai/clip-vit-large-patch14 (or any CLIP of that layout; the sizes are
  // read from the file). Empty = no CLIP: text_encoder must be "small" and there is no CLIP loss.
  // The weights are never stored in checkpoints: a checkpoint records this path and a hash of
  // the file, and resuming with a file of other content is an error.
  std::string clip_weights;
  // Attention heads of the towers (not recorded in the weights file): 0 = width / 64, which is
  // ViT-L/14's 12 (text) and 16 (vision).
  int64_t clip_text_heads = 0;
  int64_t clip_vision_heads = 0;
  // Multi-level CLIP loss on G (spec 8a, aurora/clip_loss.h), added to G_main's loss when
  // clip_weights is given and the weight is > 0. The spec gives no weight ("not found"); 1 is
  // ClipLossConfig's default. kind: "symmetric_contrastive" (Aurora's clip_loss), "image_to_text"
  // (GigaGAN's) or "cosine". clip_loss_resolutions: the pyramid levels it applies to (empty =
  // every level G produces at the current stage); clip_loss_level_weights: one weight per entry of
  // clip_loss_resolutions (empty = 1 each). Levels above the current stage are skipped (they would
  // be upsampled copies of the stage image).
  double clip_loss_weight = 1.0;
  std::string clip_loss_kind = "symmetric_contrastive";
  std::vector<int64_t> clip_loss_resolutions;
  std::vector<double> clip_loss_level_weights;
  std::string vocab = "../shared/data/clip/bpe_simple_vocab_16e6.txt.gz";  // relative to the cwd
  // Data and run management.
  std::string data = "emoji";   // io::open_dataset spec
  bool flip = true;
  int64_t log_every = 10;       // metrics.jsonl + progress values
  int64_t sample_every = 500;   // sample grid + loss plot (0 = only at the end)
  int64_t checkpoint_every = 1000;
  int64_t keep_checkpoints = 3;
  double sample_psi = 1.0;      // truncation of the training sample grids (1 = none)
  // Device and precision (DESIGN.md sections 5 and 9; docs/training.md "GPU training").
  //   device:    "cpu", "cuda" (= cuda:0) or "cuda:N": where G, G_ema, D, the optimizer state,
  //              the batches and the z draws live. A CUDA device in a build without the CUDA
  //              backend, or on a machine without that GPU, is an error when the trainer starts.
  //   precision: "f32" (exact f32 GEMMs), "tf32" (cuBLASLt TF32 GEMMs; CUDA only) or "bf16"
  //              (GEMM / conv inputs rounded to bf16, f32 accumulation and outputs; the MoE
  //              router, norms, softmax, losses, R1's gradient norm, AdamW and the EMA stay f32).
  //   conv_algorithm: "im2col" (im2col + GEMM convolutions, the default) or "cudnn" (cuDNN's
  //              convolutions where they apply; CUDA only, and the build needs cuDNN: checked when
  //              the trainer starts). tensor/conv_algorithm.h; installed per phase like precision.
  std::string device = "cpu";
  std::string precision = "f32";
  std::string conv_algorithm = "im2col";

  nlohmann::json to_json() const;
};

// Parse one "train" section (null -> all defaults). Throws engine::Error naming the key path.
TrainConfig parse_train_config(const nlohmann::json& j, const std::string& path = "config.train");

// The Device of a train.device value ("cpu", "cuda", "cuda:N"); throws engine::Error naming
// `key` for anything else. It does not check that the device exists (Trainer does).
struct DeviceSpec {
  bool cuda = false;
  int index = 0;
};
DeviceSpec parse_device_spec(const std::string& value, const std::string& key = "config.train.device");

// The multiplier of parameter `name` ("G.<...>" or "D.<...>") under `multipliers` (1 if none).
double lr_multiplier(const std::map<std::string, double>& multipliers, const std::string& name);

}  // namespace engine::aurora

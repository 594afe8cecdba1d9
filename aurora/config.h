// config.h: Aurora's JSON configuration (DESIGN.md section 11, "Configs: JSON presets in configs/").
//
// One file holds every section of a run, side by side:
//   {"generator": {...}, "discriminator": {...}}
// Each section is parsed by its own struct. This file has the discriminator's (spec section 8b,
// aurora/discriminator.h); the generator section is kept as raw JSON here until its parser lands,
// so presets with both sections load today.
//
// Strictness (a typo must never silently fall back to a default): every key of a section is
// required, and an unknown key is an error. Keys that start with '_' are comments ("_comment")
// and are ignored. Errors are engine::Error with the full key path first, e.g.
//   config.discriminator.channels: expected an object {"<resolution>": <channels>} ...
// The `aurora` CLI prints them as "aurora: error: <message>" (DESIGN.md section 13).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace engine::aurora {

// The GigaGAN multi-scale input / multi-scale output discriminator (spec section 8b).
// Geometry for image_size R (a power of two >= 8):
//   pyramid (entry) resolutions   R, R/2, ..., 4               L = log2(R) - 1 levels
//   feature (exit) resolutions    R/2, R/4, ..., 4, 1          level k maps entry res -> exit res
//   predictions                   D_ij for entry i <= exit j:  L(L+1)/2
// For R = 64: pyramid 64, 32, 16, 8, 4; features 32, 16, 8, 4, 1; 15 predictions.
struct DiscriminatorConfig {
  int64_t image_size = 0;      // R: resolution of the largest pyramid image
  int64_t image_channels = 0;  // 3 for RGB
  // Channel count of the feature maps at every resolution of the stack: the pyramid resolutions
  // (fromRGB output, level input) and the exit resolutions (level output, predictor input), i.e.
  // R, R/2, ..., 4 and 1. In JSON an object keyed by the resolution as a string.
  std::map<int64_t, int64_t> channels;
  // Entry resolutions whose level starts with an L2 self-attention block (subset of R..4).
  std::vector<int64_t> attention_resolutions;
  int64_t attention_head_dim = 0;  // heads = channels / head_dim at that resolution
  int64_t text_dim = 0;            // width of the incoming global text embedding t_D
  int64_t text_layers = 0;         // D's own learned text MLP: layers (>= 1)
  int64_t cond_dim = 0;            // width of the MLP's layers and output c (the modulation input)
  int64_t predictor_layers = 0;    // layers of each psi_j (1x1 modulated convs; spec: 4)

  // Derived geometry.
  int64_t num_levels() const;                      // L
  std::vector<int64_t> entry_resolutions() const;  // R, R/2, ..., 4
  std::vector<int64_t> exit_resolutions() const;   // R/2, ..., 4, 1
  int64_t channels_at(int64_t resolution) const;   // throws when absent
  bool has_attention(int64_t entry_resolution) const;
  int64_t num_predictions() const { return num_levels() * (num_levels() + 1) / 2; }

  // Throws engine::Error "<path>.<key>: ..." on the first inconsistency.
  void validate(const std::string& path = "config.discriminator") const;
  nlohmann::json to_json() const;
};

// Parse one "discriminator" section (strict: missing and unknown keys are errors); `path` is the
// key path used in messages. Validates the result.
DiscriminatorConfig parse_discriminator_config(const nlohmann::json& j,
                                               const std::string& path = "config.discriminator");

// ---- Generator (spec sections 1, 2, 3, 5, 6; aurora/generator.h) ----------------------------

// One resolution r of the synthesis network (a row of spec section 2's table).
//   r = 4:  Fourier input, one 3x3 ModConv (MTM when `mtm`), then conv_blocks ResConv
//   r >= 8: [ResConv, ResidualAttn] x n (the first ResConv upsamples); conv_blocks ResConv and
//           attn_modules ResidualAttn, interleaved in that order (a surplus of either comes last)
// then ToRGB (N = num_kernels). num_experts = 0 gives a dense GEGLU FFN instead of the MoE.
struct GeneratorStageConfig {
  int64_t channels = 0;
  int64_t conv_blocks = 0;
  int64_t attn_modules = 0;
  int64_t attn_depth = 0;
  int64_t num_kernels = 1;
  int64_t num_experts = 0;
  bool mtm = false;  // MTM on the 4x4 input conv and on conv2 of every ResConv of this stage
  nlohmann::json to_json() const;
};

struct GeneratorConfig {
  int64_t image_size = 0;      // largest resolution (power of two >= 4)
  int64_t image_channels = 0;  // 3 for RGB
  int64_t z_dim = 0;
  int64_t w_dim = 0;
  int64_t mapping_layers = 0;
  int64_t mapping_hidden = 0;
  double mapping_lr_mul = 0;
  // Text head (spec 1): CLIP token width -> width, `text_layers` pre-LN blocks of `text_heads` heads.
  int64_t text_in_dim = 0;
  int64_t text_width = 0;  // also the width of t_g (mapping input) and t_seq (cross-attention context)
  int64_t text_heads = 0;
  int64_t text_layers = 0;
  int64_t text_mlp_ratio = 0;
  double text_lr_mul = 0;
  // Attention (spec 5): inner width attn_heads * attn_head_dim; experts/FFN hidden width.
  int64_t attn_heads = 0;
  int64_t attn_head_dim = 0;
  int64_t attn_groups = 0;  // GroupNorm groups of ResidualAttn
  int64_t expert_hidden = 0;
  double residual_gain = 0;  // 0.4
  double attn_gain = 0;      // 0.3
  double fourier_sampling_rate = 0;
  double fourier_bandwidth = 0;
  // compat_official (spec 11; docs/official-checkpoint.md): reproduce the released checkpoint's
  // output-changing quirks. true: the text head's attention is the released per-token linear map
  // W_o (W_v LN x + b_v) + b_o (quirk 11.1, a bug: it ignores q and k); use it to run converted
  // official weights. false (the default for training): proper token-axis L2 attention. The
  // other two quirks are kept in BOTH modes because they are the spec's model, not bugs: the L2
  // logits use the non-squared distance (11.2, spec 5) and the cross-attention attends to every
  // one of the 76 text positions, SOT and padding included (11.3; CLIP's causal states after EOT
  // summarise the whole caption).
  bool compat_official = false;
  // Every resolution 4, 8, ..., image_size. In JSON an object keyed by the resolution as a string.
  std::map<int64_t, GeneratorStageConfig> stages;

  std::vector<int64_t> resolutions() const;  // 4, 8, ..., image_size
  const GeneratorStageConfig& stage(int64_t resolution) const;  // throws when absent
  void validate(const std::string& path = "config.generator") const;
  nlohmann::json to_json() const;
};

// Parse one "generator" section (strict, as parse_discriminator_config). Validates the result.
GeneratorConfig parse_generator_config(const nlohmann::json& j, const std::string& path = "config.generator");

// A whole config file.
struct AuroraConfig {
  std::string source;                 // file path, for messages
  nlohmann::json generator;           // raw section (null when absent); parsed by the generator
  bool has_discriminator = false;
  DiscriminatorConfig discriminator;  // valid when has_discriminator
  nlohmann::json train;               // raw "train" section (null when absent); aurora/train_config.h
};

// Parse a whole config document: an object whose keys are sections ("generator",
// "discriminator", "train"; "_" comments). An unknown section is an error.
AuroraConfig parse_config(const nlohmann::json& root, const std::string& source = "<memory>");
// Read and parse a file (JSON syntax errors name the file, line and column).
AuroraConfig load_config(const std::string& path);
// Read a file's JSON without interpreting it (to apply overrides before parse_config).
nlohmann::json read_config_json(const std::string& path);

// `--set key=value` overrides on the raw JSON: "discriminator.channels.64=512",
// "discriminator.attention_resolutions=[16,8]". The value is parsed as JSON, or taken as a
// string when it is not valid JSON. Every key on the path except the last must exist (so a typo
// is reported, naming the first missing component); the last must exist too unless `allow_new`.
void apply_override(nlohmann::json& root, const std::string& assignment, bool allow_new = false);

}  // namespace engine::aurora

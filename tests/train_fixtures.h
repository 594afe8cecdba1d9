// train_fixtures.h: the micro Aurora model shared by the trainer, CLI, CLIP-trainer and MPI
// trainer tests (tests/test_trainer.cpp, test_cli.cpp, test_trainer_clip.cpp, mpi/mpi_trainer.cpp).
//
//   generator      8 px: a 4 px stage (16 channels, dense, MTM) and an 8 px stage (8 channels,
//                  one attention block whose FFN is an MoE of 2 experts, 2 kernels, MTM);
//                  text_in_dim 8, text_width 16 (w_dim 16, z_dim 8)
//   discriminator  8 px: pyramid 8, 4; features 4, 1; attention at 4; t_D 16
// Small enough that a training step takes milliseconds, with every kind of layer present. Each
// test adds its own "train" section.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace engine::test {

// The CLIP BPE vocabulary of the shared data folder (a sibling of the repository).
inline const std::string kVocab = std::string(ENGINE_SOURCE_DIR) + "/../shared/data/clip/bpe_simple_vocab_16e6.txt.gz";

inline nlohmann::json micro_generator_config() {
  using nlohmann::json;
  json g = {{"image_size", 8},       {"image_channels", 3},   {"z_dim", 8},             {"w_dim", 16},
            {"mapping_layers", 2},   {"mapping_hidden", 16},  {"mapping_lr_mul", 0.01}, {"text_in_dim", 8},
            {"text_width", 16},      {"text_heads", 2},       {"text_layers", 1},       {"text_mlp_ratio", 2},
            {"text_lr_mul", 0.01},   {"attn_heads", 2},       {"attn_head_dim", 4},     {"attn_groups", 4},
            {"expert_hidden", 8},    {"residual_gain", 0.4},  {"attn_gain", 0.3},       {"fourier_sampling_rate", 4},
            {"fourier_bandwidth", 1}, {"compat_official", false}};
  g["stages"] = {{"4", {{"channels", 16}, {"conv_blocks", 1}, {"attn_modules", 0}, {"attn_depth", 0},
                        {"num_kernels", 1}, {"num_experts", 0}, {"mtm", true}}},
                 {"8", {{"channels", 8}, {"conv_blocks", 1}, {"attn_modules", 1}, {"attn_depth", 1},
                        {"num_kernels", 2}, {"num_experts", 2}, {"mtm", true}}}};
  return g;
}

inline nlohmann::json micro_discriminator_config() {
  using nlohmann::json;
  return {{"image_size", 8},  {"image_channels", 3}, {"channels", {{"8", 8}, {"4", 16}, {"1", 16}}},
          {"attention_resolutions", json::array({4})}, {"attention_head_dim", 8}, {"text_dim", 16},
          {"text_layers", 1}, {"cond_dim", 16},      {"predictor_layers", 2}};
}

}  // namespace engine::test

// train_fixtures.h: the micro Aurora model shared by the trainer, CLI, CLIP-trainer and MPI
// trainer tests (tests/test_trainer.cpp, test_cli.cpp, test_trainer_clip.cpp, mpi/mpi_trainer.cpp).
//
//   generator      8 px: a 4 px stage (16 channels, dense, MTM) and an 8 px stage (8 channels,
//                  one attention block whose FFN is an MoE of 2 experts, 2 kernels, MTM);
//                  text_in_dim 8, text_width 16 (w_dim 16, z_dim 8)
//   discriminator  8 px: pyramid 8, 4; features 4, 1; attention at 4; t_D 16
// Small enough that a training step takes milliseconds, with every kind of layer present. Each
// test adds its own "train" section. Also: the in-memory batch those tests train on, and two
// comparison helpers.
#pragma once
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/dataset.h"
#include "io/image.h"
#include "tensor/error.h"
#include "tensor/ops.h"

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

// The five captions of square_batch, in the order of their colours.
inline const char* const kSquareCaptions[5] = {"red square", "green square", "blue square", "yellow square",
                                               "black square"};

// The batch of step `step`: B coloured squares on white, H x H, caption k = (step * B + i) % 5,
// deterministic (no dataset files needed).
inline io::Batch square_batch(int64_t step, int64_t B, int64_t H) {
  static const double colors[][3] = {{1, -1, -1}, {-1, 1, -1}, {-1, -1, 1}, {1, 1, -1}, {-1, -1, -1}};
  io::Batch b;
  b.step = uint64_t(step);
  std::vector<double> px(size_t(B * 3 * H * H), 1.0);  // white background
  for (int64_t i = 0; i < B; ++i) {
    const int64_t k = (step * B + i) % 5;
    b.captions.push_back(kSquareCaptions[k]);
    b.indices.push_back(uint64_t(k));
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t y = H / 4; y < 3 * H / 4; ++y)
        for (int64_t x = H / 4; x < 3 * H / 4; ++x) px[size_t(((i * 3 + c) * H + y) * H + x)] = colors[k][c];
  }
  b.images = from_vector(px, {B, 3, H, H});
  return b;
}

// A folder dataset (io/image_folder.h) of `count` (<= 6) 16 px coloured squares on white with
// caption sidecars "<colour> square": red, green, blue, yellow, black, purple.
inline void write_square_folder(const std::string& dir, int count = 6) {
  std::filesystem::create_directories(dir);
  const char* names[] = {"red", "green", "blue", "yellow", "black", "purple"};
  const uint8_t colors[][3] = {{220, 20, 20}, {20, 200, 20}, {20, 20, 220}, {230, 220, 20}, {0, 0, 0}, {140, 20, 160}};
  for (int k = 0; k < count && k < 6; ++k) {
    std::vector<double> px(16 * 16 * 3, 255.0);
    for (int y = 4; y < 12; ++y)
      for (int x = 4; x < 12; ++x)
        for (int c = 0; c < 3; ++c) px[size_t((y * 16 + x) * 3 + c)] = colors[k][c];
    io::write_png(dir + "/" + names[k] + ".png", from_vector(px, {16, 16, 3}).to(DType::u8));
    std::ofstream(dir + "/" + names[k] + ".txt") << names[k] << " square\n";
  }
}

// Same shape, dtype and bytes.
inline bool bit_equal(const Tensor& a, const Tensor& b) {
  if (a.sizes() != b.sizes() || a.dtype() != b.dtype()) return false;
  const Tensor ca = contiguous(a), cb = contiguous(b);
  return std::memcmp(ca.raw_data(), cb.raw_data(), ca.nbytes()) == 0;
}

// The message of the engine::Error that f throws ("" when it throws none).
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace engine::test

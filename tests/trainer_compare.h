// trainer_compare.h: doctest checks that two trainers are in the same state, bit for bit (the
// resume tests of tests/test_trainer.cpp and tests/test_trainer_clip.cpp).
#pragma once
#include <doctest/doctest.h>

#include <cstdint>
#include <string>

#include "aurora/trainer.h"
#include "nn/state_dict.h"
#include "tests/train_fixtures.h"

namespace engine::test {

// Checks that two trainers hold bit-identical G, G_ema and D tensors (every parameter and buffer,
// by name) and AdamW moments; returns how many named tensors were compared.
inline int64_t check_same_training_state(aurora::Trainer& a, aurora::Trainer& b) {
  int64_t compared = 0;
  auto compare_module = [&](nn::Module& x, nn::Module& y, const std::string& what) {
    auto sx = nn::state_dict(x), sy = nn::state_dict(y);
    REQUIRE(sx.size() == sy.size());
    for (size_t i = 0; i < sx.size(); ++i) {
      INFO(what << "." << sx[i].first);
      CHECK(bit_equal(sx[i].second, sy[i].second));
      ++compared;
    }
  };
  compare_module(a.G(), b.G(), "G");
  compare_module(a.G_ema(), b.G_ema(), "G_ema");
  compare_module(a.D(), b.D(), "D");
  CHECK(bit_equal(a.g_opt().exp_avg(), b.g_opt().exp_avg()));
  CHECK(bit_equal(a.g_opt().exp_avg_sq(), b.g_opt().exp_avg_sq()));
  CHECK(bit_equal(a.d_opt().exp_avg(), b.d_opt().exp_avg()));
  CHECK(bit_equal(a.d_opt().exp_avg_sq(), b.d_opt().exp_avg_sq()));
  return compared;
}

}  // namespace engine::test

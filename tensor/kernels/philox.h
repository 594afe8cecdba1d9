// philox.h: the Philox4x32-10 counter-based generator (Salmon et al., "Parallel random numbers:
// as easy as 1, 2, 3", SC 2011).
//
// Note [counter-based RNG]: a draw is a pure function of (key, counter). Element i of a tensor
// drawn with Generator(seed, offset) uses key = seed and counter = offset + i, so the values do
// not depend on thread count, device, or on which rank draws which sample.
#pragma once
#include <cstdint>

#include "tensor/kernels/common.h"

namespace engine::kernels {

struct Philox4 {
  uint32_t v[4];
};

ENGINE_HD void mulhilo32(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = uint64_t(a) * uint64_t(b);
  hi = uint32_t(p >> 32);
  lo = uint32_t(p);
}

// Ten rounds of Philox4x32 on counter (c0..c3) with key (k0, k1).
ENGINE_HD Philox4 philox4x32_10(uint64_t counter_lo, uint64_t counter_hi, uint64_t key) {
  uint32_t c0 = uint32_t(counter_lo), c1 = uint32_t(counter_lo >> 32);
  uint32_t c2 = uint32_t(counter_hi), c3 = uint32_t(counter_hi >> 32);
  uint32_t k0 = uint32_t(key), k1 = uint32_t(key >> 32);
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(0xD2511F53u, c0, hi0, lo0);
    mulhilo32(0xCD9E8D57u, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {{c0, c1, c2, c3}};
}

// Uniform in [0, 1) from 32 random bits (24 bits of mantissa for float, 32 for double).
ENGINE_HD float uniform_f32(uint32_t bits) { return float(bits >> 8) * (1.0f / 16777216.0f); }
ENGINE_HD double uniform_f64(uint32_t hi, uint32_t lo) {
  const uint64_t b = (uint64_t(hi) << 21) ^ uint64_t(lo >> 11);  // 53 bits
  return double(b & ((uint64_t(1) << 53) - 1)) * (1.0 / 9007199254740992.0);
}

// Element i of a standard normal draw: Box-Muller on the first two words of counter i.
ENGINE_HD double normal_at(uint64_t seed, uint64_t index) {
  const Philox4 r = philox4x32_10(index, 0, seed);
  const double u1 = uniform_f64(r.v[0], r.v[1]);
  const double u2 = uniform_f64(r.v[2], r.v[3]);
  const double radius = sqrt(-2.0 * log(1.0 - u1));  // 1 - u1 in (0, 1]: log is finite
  return radius * cos(6.283185307179586 * u2);
}

ENGINE_HD double uniform_at(uint64_t seed, uint64_t index) {
  const Philox4 r = philox4x32_10(index, 0, seed);
  return uniform_f64(r.v[0], r.v[1]);
}

}  // namespace engine::kernels

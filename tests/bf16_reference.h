// bf16_reference.h: bf16 rounding written independently of the engine's conversion kernels
// (tensor/dtype.h, kernels/convert.h), for tests that check bf16 results against values computed
// on the host: round to nearest even on the f32 bits (finite inputs).
#pragma once
#include <cstdint>
#include <cstring>

namespace engine::test {

inline float round_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t lower = u & 0xffffu, upper = u >> 16;
  uint32_t r = upper;
  if (lower > 0x8000u || (lower == 0x8000u && (upper & 1u))) ++r;
  u = r << 16;
  float out;
  std::memcpy(&out, &u, 4);
  return out;
}

}  // namespace engine::test

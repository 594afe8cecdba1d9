// convert.h: element conversions between the engine's storage types, shared by the CPU copy
// (tensor.cpp's copy_, to_dtype, from_vector) and the CUDA copy kernel (tensor/cuda/copy.cu), so
// a conversion gives the same bits on both devices.
//
// Every value goes through double: exact for f32, bf16, f16, i32, u8, bool, and for i64 up to
// 2^53 (larger i64 values are copied without conversion when source and destination are i64).
// bf16 and f16 round to nearest even (dtype.h); NaN stays NaN.
//
// Type codes are DType's underlying values (dtype.h): f32 0, f64 1, bf16 2, f16 3, i32 4, i64 5,
// u8 6, bool 7 (plain ints so nvcc need not see dtype.h).
#pragma once
#include <cstdint>
#include <cstring>

#include "tensor/kernels/common.h"

namespace engine::kernels {

enum DTypeCode : int { kF32 = 0, kF64 = 1, kBf16 = 2, kF16 = 3, kI32 = 4, kI64 = 5, kU8 = 6, kBool = 7 };

ENGINE_HD uint16_t f32_to_bf16_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
ENGINE_HD float bf16_bits_to_f32(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

ENGINE_HD uint16_t f32_to_f16_bits(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const int32_t exp = int32_t((x >> 23) & 0xff) - 127 + 15;
  uint32_t mant = x & 0x7fffffu;
  if (((x >> 23) & 0xff) == 0xff) return uint16_t(sign | 0x7c00u | (mant ? 0x200u : 0));  // inf/nan
  if (exp >= 31) return uint16_t(sign | 0x7c00u);                                        // overflow
  if (exp <= 0) {                                                                          // subnormal
    if (exp < -10) return uint16_t(sign);
    mant |= 0x800000u;
    const int shift = 14 - exp;
    uint32_t half = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1), halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (half & 1u))) ++half;
    return uint16_t(sign | half);
  }
  uint32_t half = sign | (uint32_t(exp) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) ++half;  // may carry into the exponent: fine
  return uint16_t(half);
}

ENGINE_HD float f16_bits_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ffu;
  uint32_t x;
  if (exp == 0) {
    if (mant == 0) {
      x = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do { ++e; mant <<= 1; } while (!(mant & 0x400u));
      x = sign | (uint32_t(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    x = sign | 0x7f800000u | (mant << 13);
  } else {
    x = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  memcpy(&f, &x, 4);
  return f;
}

ENGINE_HD double load_as_double(const void* p, int code) {
  switch (code) {
    case kF32: return *static_cast<const float*>(p);
    case kF64: return *static_cast<const double*>(p);
    case kBf16: return bf16_bits_to_f32(*static_cast<const uint16_t*>(p));
    case kF16: return f16_bits_to_f32(*static_cast<const uint16_t*>(p));
    case kI32: return *static_cast<const int32_t*>(p);
    case kI64: return double(*static_cast<const int64_t*>(p));
    case kU8: return *static_cast<const uint8_t*>(p);
    case kBool: return *static_cast<const uint8_t*>(p) ? 1.0 : 0.0;
  }
  return 0;
}

ENGINE_HD void store_from_double(void* p, int code, double v) {
  switch (code) {
    case kF32: *static_cast<float*>(p) = float(v); break;
    case kF64: *static_cast<double*>(p) = v; break;
    case kBf16: *static_cast<uint16_t*>(p) = f32_to_bf16_bits(float(v)); break;
    case kF16: *static_cast<uint16_t*>(p) = f32_to_f16_bits(float(v)); break;
    case kI32: *static_cast<int32_t*>(p) = int32_t(v); break;
    case kI64: *static_cast<int64_t*>(p) = int64_t(v); break;
    case kU8: *static_cast<uint8_t*>(p) = uint8_t(v); break;
    case kBool: *static_cast<uint8_t*>(p) = v != 0 ? 1 : 0; break;
  }
}

}  // namespace engine::kernels

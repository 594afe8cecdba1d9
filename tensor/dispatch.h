// dispatch.h: from a runtime DType to a C++ element type.
//
//   dispatch_floating(x.dtype(), "exp", [&](auto zero) { using T = decltype(zero); ... });
// Compute kernels take f32 and f64 (bf16/f16 are storage types: convert with to_dtype first).
#pragma once
#include <cstdint>

#include "tensor/dtype.h"
#include "tensor/error.h"

namespace engine {

template <typename F>
decltype(auto) dispatch_floating(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: return f(float{});
    case DType::f64: return f(double{});
    default:
      throw Error(fmt::format("{}: unsupported dtype {} (expected f32 or f64)", op, dtype_name(t)));
  }
}

// Floating and integer types that kernels compute in (not bf16/f16).
template <typename F>
decltype(auto) dispatch_numeric(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: return f(float{});
    case DType::f64: return f(double{});
    case DType::i32: return f(int32_t{});
    case DType::i64: return f(int64_t{});
    case DType::u8: return f(uint8_t{});
    case DType::boolean: return f(uint8_t{});
    default:
      throw Error(fmt::format("{}: unsupported dtype {}", op, dtype_name(t)));
  }
}

}  // namespace engine

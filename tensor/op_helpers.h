// op_helpers.h: small checks and the profiling scope shared by every op implementation.
#pragma once
#include <string>

#include "autograd/grad_mode.h"
#include "tensor/memory/profiler.h"
#include "tensor/tensor.h"

namespace engine {

// "[2,3] [3]" for the profiler; only built when profiling is on.
inline void append_shapes(std::string&) {}
template <typename... Rest>
void append_shapes(std::string& s, const Tensor& t, const Rest&... rest) {
  if (!s.empty()) s += ' ';
  s += t.defined() ? t.sizes().str() : "-";
  append_shapes(s, rest...);
}
template <typename... Ts>
std::string shapes_of(const Ts&... ts) {
  std::string s;
  if (memory::Profiler::enabled()) append_shapes(s, ts...);
  return s;
}

// ENGINE_OP("conv2d", x, w): the op's OpScope, named `op_scope`.
#define ENGINE_OP(name, ...) ::engine::memory::OpScope op_scope(name, ::engine::shapes_of(__VA_ARGS__))

// Which backend runs an op: true when `t` lives on a CUDA device (the op then calls its launcher
// in tensor/cuda/, inside `#if ENGINE_WITH_CUDA`), false for the CPU. A build without the CUDA
// backend cannot make CUDA tensors, but says so clearly if one arrives anyway.
//
//   if (use_cuda("sum", x)) {
//   #if ENGINE_WITH_CUDA
//     cuda::sum_dims(out, x, plan);
//   #endif
//   } else {
//     cpu::reduce_dims(...);
//   }
inline bool use_cuda(const char* op, const Tensor& t) {
  if (!t.defined() || !t.device().is_cuda()) return false;
#if ENGINE_WITH_CUDA
  (void)op;
  return true;
#else
  throw Error(fmt::format("{}: tensor on {} but this build has no CUDA backend (configure with "
                          "-DENGINE_CUDA=ON)", op, t.device().str()));
#endif
}

// For ops (or parts of ops) that have no CUDA kernel: a clear error naming the op.
inline void check_cpu(const char* op, const Tensor& t) {
  ENGINE_CHECK(!t.defined() || t.device().is_cpu(), "{}: no {} kernel yet (tensor on {})", op,
               t.device().str(), t.device().str());
}
inline void check_same(const char* op, const Tensor& a, const Tensor& b) {
  ENGINE_CHECK(a.dtype() == b.dtype(), "{}: dtype mismatch, {} vs {}", op, dtype_name(a.dtype()),
               dtype_name(b.dtype()));
  ENGINE_CHECK(a.device() == b.device(), "{}: device mismatch, {} vs {}", op, a.device().str(), b.device().str());
}
inline void check_floating(const char* op, const Tensor& t) {
  ENGINE_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64,
               "{}: expected an f32 or f64 tensor, got {} (convert bf16/f16 with to_dtype first)", op,
               dtype_name(t.dtype()));
}

}  // namespace engine

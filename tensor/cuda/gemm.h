// gemm.h (cuda): the one place the CUDA backend multiplies matrices: a strided-batched GEMM on
// device pointers through cuBLASLt (DESIGN.md section 4: GEMM is a backend-specific wrapper).
//
//   for i in [0, batch):  C_i[m, n] = op(A_i)[m, k] op(B_i)[k, n] + beta * C_i
//   X_i = X + i * stride_x   (a stride of 0 broadcasts one matrix over the batch)
//
// Same row-major convention as cpu::GemmCall (tensor/cpu/gemm.h): A is stored [m, k] with row
// stride lda, or [k, m] when trans_a (a transposed view costs a flag, not a copy); B likewise.
// cuBLASLt is column-major: a row-major C = op(A) op(B) is the column-major C^T = op(B)^T op(A)^T,
// so the call passes B as cuBLASLt's first operand and A as its second, with m and n swapped.
//
// Modes (tensor/precision.h):
//   f32   A, B, C f32, CUBLAS_COMPUTE_32F
//   tf32  A, B, C f32, CUBLAS_COMPUTE_32F_FAST_TF32 (inputs rounded to TF32 inside the GEMM)
//   bf16  A, B bf16 (CUDA_R_16BF), C f32, CUBLAS_COMPUTE_32F: bf16 products, f32 accumulation
//   f64   A, B, C f64, CUBLAS_COMPUTE_64F
//
// One cuBLASLt handle per device, created on first use. The algorithm comes from cuBLASLt's
// heuristic and is cached per (device, mode, shape, strides, pointer alignment), so a training
// step pays the heuristic once per distinct GEMM. Its workspace comes from the device arena
// (an empty() tensor of Kind::workspace: the profiler charges it to the calling op as transient
// bytes), never from cudaMalloc; the block is released after the call is enqueued, which is safe
// because everything that can reuse it runs later on the same compute stream.
//
// Emulated-device build (ENGINE_CUDA_EMULATION): no cuBLASLt. The same function runs the CPU GEMM
// (OpenBLAS, tensor/cpu/gemm.h) on the (host) pointers; bf16 inputs are widened to f32 first, so
// the emulated bf16 mode is exactly "bf16 inputs, f32 accumulation", as on the GPU.
#pragma once
#include <cstdint>

#include "tensor/device.h"

namespace engine::cuda {

enum class GemmMode : uint8_t { f32, tf32, bf16, f64 };
const char* gemm_mode_name(GemmMode mode);

struct GemmDesc {
  GemmMode mode = GemmMode::f32;
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  int64_t batch = 1;
  const void* a = nullptr;
  int64_t lda = 0, stride_a = 0;
  const void* b = nullptr;
  int64_t ldb = 0, stride_b = 0;
  void* c = nullptr;
  int64_t ldc = 0, stride_c = 0;
  // 0: C is overwritten; 1: the product is added to C (linear's and conv2d's bias, a sum over
  // samples of the weight gradient). Other values are not needed and are rejected.
  double beta = 0;
};

// Enqueues the GEMMs on the compute stream of `device` (asynchronous). `op` names the calling op
// in error messages.
void gemm(Device device, const GemmDesc& d, const char* op);

// Number of distinct GEMM configurations whose algorithm is cached (for tests; 0 when emulated).
int64_t gemm_cached_algorithms();

}  // namespace engine::cuda

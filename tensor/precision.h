// precision.h: the matmul precision policy (DESIGN.md section 9): in which arithmetic the GEMMs
// of matmul, bmm, linear, conv2d, conv_transpose2d and conv2d_weight run when their inputs are f32.
//
//   MatmulPrecision::f32   exact f32 GEMMs (the default).
//   MatmulPrecision::tf32  on CUDA, cuBLASLt's TF32 tensor-core mode (inputs rounded to a 10-bit
//                          mantissa inside the GEMM, f32 accumulation). On the CPU there is no TF32
//                          arithmetic: the GEMMs stay f32.
//   MatmulPrecision::bf16  the GEMM inputs are rounded to bf16 (to_dtype: round to nearest even) and
//                          multiplied with f32 accumulation into an f32 output, on both devices. The
//                          op's backward Node saves the bf16 copies (half the memory of f32), and the
//                          backward GEMMs run in the same mode (each Node remembers the policy it was
//                          recorded under, so backward() outside the scope still uses it).
//
// f64 inputs ignore the policy. bf16 operands passed in directly select the bf16 mode whatever the
// policy says. The policy is per thread: each thread starts at f32.
//
// The saved-activation policy (SavedActivationScope) is the second half of mixed precision: while
// it is bf16, the f32 activations that autograd Nodes save for backward are stored as bf16 copies
// (Note [bf16 saved activations] in autograd/node.h). The trainer turns it on with the bf16
// matmul policy for G_main and D_main, not for D_r1 (R1 stays f32 and needs saved tensors that
// carry their graph).
//
//   {
//     MatmulPrecisionScope bf16(MatmulPrecision::bf16);
//     y = model(x);                 // GEMMs in bf16 x bf16 -> f32
//     { MatmulPrecisionScope f32(MatmulPrecision::f32); logits = router(y); }  // the MoE router in f32
//   }
#pragma once
#include <cstdint>

#include "tensor/dtype.h"

namespace engine {

enum class MatmulPrecision : uint8_t { f32, tf32, bf16 };

// The calling thread's current policy (f32 unless a MatmulPrecisionScope is alive).
MatmulPrecision matmul_precision();
// Sets the calling thread's policy; prefer MatmulPrecisionScope.
void set_matmul_precision(MatmulPrecision p);
// "f32", "tf32", "bf16".
const char* matmul_precision_name(MatmulPrecision p);

// Sets the policy for its lifetime and restores the previous one on exit (scopes nest).
class MatmulPrecisionScope {
 public:
  explicit MatmulPrecisionScope(MatmulPrecision p) : previous_(matmul_precision()) { set_matmul_precision(p); }
  ~MatmulPrecisionScope() { set_matmul_precision(previous_); }
  MatmulPrecisionScope(const MatmulPrecisionScope&) = delete;
  MatmulPrecisionScope& operator=(const MatmulPrecisionScope&) = delete;

 private:
  MatmulPrecision previous_;
};

// The calling thread's saved-activation dtype: f32 (the default: saved tensors are kept as they
// are) or bf16 (f32 activations are saved as bf16 copies).
DType saved_activation_dtype();
void set_saved_activation_dtype(DType t);  // f32 or bf16; prefer SavedActivationScope

// Sets the saved-activation dtype for its lifetime and restores the previous one on exit.
class SavedActivationScope {
 public:
  explicit SavedActivationScope(DType t) : previous_(saved_activation_dtype()) { set_saved_activation_dtype(t); }
  ~SavedActivationScope() { set_saved_activation_dtype(previous_); }
  SavedActivationScope(const SavedActivationScope&) = delete;
  SavedActivationScope& operator=(const SavedActivationScope&) = delete;

 private:
  DType previous_;
};

// The arithmetic one GEMM op call runs in, from its operands' dtypes and the current policy:
// f64 when both are f64 (the policy is ignored); bf16 when either operand is bf16 or the policy is
// bf16; tf32 when the policy is tf32; else f32. Throws, naming `op`, for other dtypes or an f64
// operand mixed with another dtype. (Same order as cuda::GemmMode, tensor/cuda/gemm.h.)
enum class GemmArith : uint8_t { f32, tf32, bf16, f64 };
GemmArith gemm_arith(const char* op, DType a, DType b);

}  // namespace engine

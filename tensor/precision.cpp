// precision.cpp: the thread-local matmul precision and saved-activation policies (tensor/precision.h).
#include "tensor/precision.h"

#include "tensor/error.h"

namespace engine {

namespace {
thread_local MatmulPrecision current = MatmulPrecision::f32;
thread_local DType saved_dtype = DType::f32;
}  // namespace

DType saved_activation_dtype() { return saved_dtype; }
void set_saved_activation_dtype(DType t) {
  ENGINE_CHECK(t == DType::f32 || t == DType::bf16, "saved activations: expected f32 or bf16, got {}", dtype_name(t));
  saved_dtype = t;
}

MatmulPrecision matmul_precision() { return current; }
void set_matmul_precision(MatmulPrecision p) { current = p; }

const char* matmul_precision_name(MatmulPrecision p) {
  switch (p) {
    case MatmulPrecision::f32: return "f32";
    case MatmulPrecision::tf32: return "tf32";
    case MatmulPrecision::bf16: return "bf16";
  }
  return "?";
}

GemmArith gemm_arith(const char* op, DType a, DType b) {
  const auto ok = [](DType t) { return t == DType::f32 || t == DType::f64 || t == DType::bf16; };
  ENGINE_CHECK(ok(a) && ok(b), "{}: expected f32, f64 or bf16 operands, got {} and {}", op, dtype_name(a),
               dtype_name(b));
  if (a == DType::f64 || b == DType::f64) {
    ENGINE_CHECK(a == b, "{}: dtype mismatch, {} vs {} (f64 operands cannot be mixed with other dtypes)", op,
                 dtype_name(a), dtype_name(b));
    return GemmArith::f64;
  }
  const MatmulPrecision p = matmul_precision();
  if (a == DType::bf16 || b == DType::bf16 || p == MatmulPrecision::bf16) return GemmArith::bf16;
  return p == MatmulPrecision::tf32 ? GemmArith::tf32 : GemmArith::f32;
}

}  // namespace engine

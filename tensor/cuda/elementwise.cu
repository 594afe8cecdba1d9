// elementwise.cu: the strided elementwise kernels, instantiated with the portable functors of
// tensor/kernels/elementwise.h (the same bodies the CPU loops call), for f32 and f64.
//
// One thread per output element, grid-stride loop. Two kernels per arity:
//   contiguous  every operand is one unit-stride run (the common case after coalescing):
//               offsets are the linear index itself;
//   strided     N-d index -> per-operand offsets (strided.h), which covers broadcasting
//               (stride 0), transposes and slices without any copy.
// Indices are 64-bit so tensors above 2^31 elements work; a 32-bit fast path is a later
// optimisation. Launch: launch.cuh (a grid-stride kernel, or a host loop in the emulated build).
#include "tensor/cuda/elementwise_launch.h"
#include "tensor/cuda/launch.cuh"
#include "tensor/kernels/elementwise.h"

namespace engine::cuda {

template <typename OutT, typename InT, typename F>
void launch_map_unary(const StridedGeometry<2>& g, OutT* out, const InT* x, F f, Stream stream) {
  if (g.contiguous) {
    launch_elements(g.numel, [=] ENGINE_KERNEL(int64_t i) { out[i] = OutT(f(x[i])); }, stream);
  } else {
    launch_elements(
        g.numel,
        [=] ENGINE_KERNEL(int64_t i) {
          int64_t o[2];
          strided_offsets<2>(g, i, o);
          out[o[0]] = OutT(f(x[o[1]]));
        },
        stream);
  }
}

template <typename OutT, typename InT, typename F>
void launch_map_binary(const StridedGeometry<3>& g, OutT* out, const InT* x, const InT* y, F f,
                       Stream stream) {
  if (g.contiguous) {
    launch_elements(g.numel, [=] ENGINE_KERNEL(int64_t i) { out[i] = OutT(f(x[i], y[i])); }, stream);
  } else {
    launch_elements(
        g.numel,
        [=] ENGINE_KERNEL(int64_t i) {
          int64_t o[3];
          strided_offsets<3>(g, i, o);
          out[o[0]] = OutT(f(x[o[1]], y[o[2]]));
        },
        stream);
  }
}

template <typename OutT, typename AT, typename BT, typename CT, typename F>
void launch_map_ternary(const StridedGeometry<4>& g, OutT* out, const AT* a, const BT* b, const CT* c, F f,
                        Stream stream) {
  if (g.contiguous) {
    launch_elements(g.numel, [=] ENGINE_KERNEL(int64_t i) { out[i] = OutT(f(a[i], b[i], c[i])); }, stream);
  } else {
    launch_elements(
        g.numel,
        [=] ENGINE_KERNEL(int64_t i) {
          int64_t o[4];
          strided_offsets<4>(g, i, o);
          out[o[0]] = OutT(f(a[o[1]], b[o[2]], c[o[3]]));
        },
        stream);
  }
}

// ---- instantiations: one line per functor; see elementwise.h ----

#define ENGINE_CUDA_UNARY(OutT, InT, F) \
  template void launch_map_unary<OutT, InT, kernels::F>(const StridedGeometry<2>&, OutT*, const InT*, kernels::F, Stream);
#define ENGINE_CUDA_BINARY(OutT, InT, F)                                                                  \
  template void launch_map_binary<OutT, InT, kernels::F>(const StridedGeometry<3>&, OutT*, const InT*, const InT*, \
                                                         kernels::F, Stream);
#define ENGINE_CUDA_TERNARY(OutT, AT, BT, CT, F)                                                         \
  template void launch_map_ternary<OutT, AT, BT, CT, kernels::F>(const StridedGeometry<4>&, OutT*, const AT*, \
                                                                 const BT*, const CT*, kernels::F, Stream);

// Floating functors T -> T (ops_elementwise.cpp: unary_float, binary_float, pointwise_backward).
#define ENGINE_CUDA_FLOAT_UNARY(F) ENGINE_CUDA_UNARY(float, float, F) ENGINE_CUDA_UNARY(double, double, F)
#define ENGINE_CUDA_FLOAT_BINARY(F) ENGINE_CUDA_BINARY(float, float, F) ENGINE_CUDA_BINARY(double, double, F)
// Comparisons: any numeric input type -> bool (uint8_t).
#define ENGINE_CUDA_COMPARE(MACRO, F)                                                          \
  MACRO(uint8_t, float, F) MACRO(uint8_t, double, F) MACRO(uint8_t, int32_t, F) MACRO(uint8_t, int64_t, F) \
  MACRO(uint8_t, uint8_t, F)

ENGINE_CUDA_FLOAT_BINARY(AddFn)
ENGINE_CUDA_FLOAT_BINARY(AddScaledFn)
ENGINE_CUDA_FLOAT_BINARY(SubFn)
ENGINE_CUDA_FLOAT_BINARY(MulFn)
ENGINE_CUDA_FLOAT_BINARY(DivFn)
ENGINE_CUDA_FLOAT_BINARY(MaximumFn)
ENGINE_CUDA_FLOAT_BINARY(MinimumFn)
ENGINE_CUDA_FLOAT_BINARY(LeakyReluGradFn)
ENGINE_CUDA_FLOAT_BINARY(ReluGradFn)
ENGINE_CUDA_FLOAT_BINARY(ClampGradFn)
ENGINE_CUDA_FLOAT_BINARY(AbsGradFn)
ENGINE_CUDA_FLOAT_BINARY(SquareGradFn)
ENGINE_CUDA_FLOAT_BINARY(SinGradFn)
ENGINE_CUDA_FLOAT_BINARY(CosGradFn)
ENGINE_CUDA_FLOAT_BINARY(ErfGradFn)
ENGINE_CUDA_FLOAT_BINARY(GeluGradFn)
ENGINE_CUDA_FLOAT_BINARY(GeluTanhGradFn)
ENGINE_CUDA_FLOAT_BINARY(SoftplusGradFn)
ENGINE_CUDA_FLOAT_BINARY(SqrtGradFn)
ENGINE_CUDA_FLOAT_BINARY(RsqrtGradFn)
ENGINE_CUDA_FLOAT_BINARY(SigmoidGradFn)
ENGINE_CUDA_FLOAT_BINARY(TanhGradFn)

ENGINE_CUDA_FLOAT_UNARY(NegFn)
ENGINE_CUDA_FLOAT_UNARY(ExpFn)
ENGINE_CUDA_FLOAT_UNARY(LogFn)
ENGINE_CUDA_FLOAT_UNARY(SqrtFn)
ENGINE_CUDA_FLOAT_UNARY(RsqrtFn)
ENGINE_CUDA_FLOAT_UNARY(SquareFn)
ENGINE_CUDA_FLOAT_UNARY(AbsFn)
ENGINE_CUDA_FLOAT_UNARY(SignFn)
ENGINE_CUDA_FLOAT_UNARY(SinFn)
ENGINE_CUDA_FLOAT_UNARY(CosFn)
ENGINE_CUDA_FLOAT_UNARY(SigmoidFn)
ENGINE_CUDA_FLOAT_UNARY(TanhFn)
ENGINE_CUDA_FLOAT_UNARY(ErfFn)
ENGINE_CUDA_FLOAT_UNARY(GeluFn)
ENGINE_CUDA_FLOAT_UNARY(GeluTanhFn)
ENGINE_CUDA_FLOAT_UNARY(ReluFn)
ENGINE_CUDA_FLOAT_UNARY(SoftplusFn)
ENGINE_CUDA_FLOAT_UNARY(LeakyReluFn)
ENGINE_CUDA_FLOAT_UNARY(ClampFn)
ENGINE_CUDA_FLOAT_UNARY(PowFn)
ENGINE_CUDA_FLOAT_UNARY(OnesFn)
ENGINE_CUDA_FLOAT_UNARY(IdentityFn)
// Same-dtype copies (copy.cpp): whole words of every element width.
ENGINE_CUDA_UNARY(uint8_t, uint8_t, IdentityFn)
ENGINE_CUDA_UNARY(uint16_t, uint16_t, IdentityFn)
ENGINE_CUDA_UNARY(int32_t, int32_t, IdentityFn)
ENGINE_CUDA_UNARY(int64_t, int64_t, IdentityFn)
ENGINE_CUDA_FLOAT_UNARY(CubeFn)
ENGINE_CUDA_FLOAT_UNARY(InvSquareFn)
ENGINE_CUDA_FLOAT_UNARY(AddScalarFn)
ENGINE_CUDA_FLOAT_UNARY(MulScalarFn)
ENGINE_CUDA_FLOAT_UNARY(RSubScalarFn)
ENGINE_CUDA_FLOAT_UNARY(RDivScalarFn)

ENGINE_CUDA_COMPARE(ENGINE_CUDA_BINARY, EqFn)
ENGINE_CUDA_COMPARE(ENGINE_CUDA_BINARY, NeFn)
ENGINE_CUDA_COMPARE(ENGINE_CUDA_BINARY, LtFn)
ENGINE_CUDA_COMPARE(ENGINE_CUDA_BINARY, LeFn)
ENGINE_CUDA_COMPARE(ENGINE_CUDA_BINARY, GtFn)
ENGINE_CUDA_COMPARE(ENGINE_CUDA_BINARY, GeFn)
ENGINE_CUDA_COMPARE(ENGINE_CUDA_UNARY, GtScalarFn)
ENGINE_CUDA_COMPARE(ENGINE_CUDA_UNARY, LtScalarFn)
ENGINE_CUDA_COMPARE(ENGINE_CUDA_UNARY, GeScalarFn)
ENGINE_CUDA_COMPARE(ENGINE_CUDA_UNARY, LeScalarFn)
ENGINE_CUDA_COMPARE(ENGINE_CUDA_UNARY, LogicalNotFn)

ENGINE_CUDA_TERNARY(float, uint8_t, float, float, WhereFn)
ENGINE_CUDA_TERNARY(double, uint8_t, double, double, WhereFn)
ENGINE_CUDA_TERNARY(int32_t, uint8_t, int32_t, int32_t, WhereFn)
ENGINE_CUDA_TERNARY(int64_t, uint8_t, int64_t, int64_t, WhereFn)
ENGINE_CUDA_TERNARY(uint8_t, uint8_t, uint8_t, uint8_t, WhereFn)
ENGINE_CUDA_TERNARY(float, float, float, float, MaxGradFn)
ENGINE_CUDA_TERNARY(double, double, double, double, MaxGradFn)
ENGINE_CUDA_TERNARY(float, float, float, float, MinGradFn)
ENGINE_CUDA_TERNARY(double, double, double, double, MinGradFn)

#undef ENGINE_CUDA_COMPARE
#undef ENGINE_CUDA_FLOAT_BINARY
#undef ENGINE_CUDA_FLOAT_UNARY
#undef ENGINE_CUDA_TERNARY
#undef ENGINE_CUDA_BINARY
#undef ENGINE_CUDA_UNARY

}  // namespace engine::cuda

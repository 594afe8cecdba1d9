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

// ---- instantiations: one line per (dtype, functor); see elementwise.h ----

#define ENGINE_CUDA_UNARY(T, F) \
  template void launch_map_unary<T, T, kernels::F>(const StridedGeometry<2>&, T*, const T*, kernels::F, Stream);
#define ENGINE_CUDA_BINARY(T, F)                                                                 \
  template void launch_map_binary<T, T, kernels::F>(const StridedGeometry<3>&, T*, const T*, const T*, \
                                                    kernels::F, Stream);
#define ENGINE_CUDA_FLOATING(MACRO, F) MACRO(float, F) MACRO(double, F)

ENGINE_CUDA_FLOATING(ENGINE_CUDA_BINARY, AddFn)
ENGINE_CUDA_FLOATING(ENGINE_CUDA_BINARY, SubFn)
ENGINE_CUDA_FLOATING(ENGINE_CUDA_BINARY, MulFn)
ENGINE_CUDA_FLOATING(ENGINE_CUDA_BINARY, DivFn)

ENGINE_CUDA_FLOATING(ENGINE_CUDA_UNARY, NegFn)
ENGINE_CUDA_FLOATING(ENGINE_CUDA_UNARY, ExpFn)
ENGINE_CUDA_FLOATING(ENGINE_CUDA_UNARY, LogFn)
ENGINE_CUDA_FLOATING(ENGINE_CUDA_UNARY, AddScalarFn)
ENGINE_CUDA_FLOATING(ENGINE_CUDA_UNARY, MulScalarFn)
ENGINE_CUDA_FLOATING(ENGINE_CUDA_UNARY, RSubScalarFn)
ENGINE_CUDA_FLOATING(ENGINE_CUDA_UNARY, RDivScalarFn)

#undef ENGINE_CUDA_FLOATING
#undef ENGINE_CUDA_BINARY
#undef ENGINE_CUDA_UNARY

}  // namespace engine::cuda

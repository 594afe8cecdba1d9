// elementwise.cu: the strided elementwise kernels, instantiated with the portable functors of
// tensor/kernels/elementwise.h (the same bodies the CPU loops call), for f32 and f64.
//
// One thread per output element, grid-stride loop. Two kernels per arity:
//   contiguous  every operand is one unit-stride run (the common case after coalescing):
//               offsets are the linear index itself;
//   strided     N-d index -> per-operand offsets (strided.h), which covers broadcasting
//               (stride 0), transposes and slices without any copy.
// Indices are 64-bit so tensors above 2^31 elements work; a 32-bit fast path is a later
// optimisation.
#include <cuda_runtime.h>

#include "tensor/cuda/elementwise_launch.h"
#include "tensor/kernels/elementwise.h"

namespace engine::cuda {

namespace {

__device__ __forceinline__ int64_t first_index() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t grid_step() { return int64_t(gridDim.x) * blockDim.x; }

template <typename OutT, typename InT, typename F>
__global__ void unary_contiguous(int64_t n, OutT* out, const InT* x, F f) {
  for (int64_t i = first_index(); i < n; i += grid_step()) out[i] = OutT(f(x[i]));
}

template <typename OutT, typename InT, typename F>
__global__ void unary_strided(StridedGeometry<2> g, OutT* out, const InT* x, F f) {
  for (int64_t i = first_index(); i < g.numel; i += grid_step()) {
    int64_t o[2];
    strided_offsets<2>(g, i, o);
    out[o[0]] = OutT(f(x[o[1]]));
  }
}

template <typename OutT, typename InT, typename F>
__global__ void binary_contiguous(int64_t n, OutT* out, const InT* x, const InT* y, F f) {
  for (int64_t i = first_index(); i < n; i += grid_step()) out[i] = OutT(f(x[i], y[i]));
}

template <typename OutT, typename InT, typename F>
__global__ void binary_strided(StridedGeometry<3> g, OutT* out, const InT* x, const InT* y, F f) {
  for (int64_t i = first_index(); i < g.numel; i += grid_step()) {
    int64_t o[3];
    strided_offsets<3>(g, i, o);
    out[o[0]] = OutT(f(x[o[1]], y[o[2]]));
  }
}

}  // namespace

template <typename OutT, typename InT, typename F>
void launch_map_unary(const StridedGeometry<2>& g, OutT* out, const InT* x, F f, Stream stream) {
  if (g.numel == 0) return;
  const unsigned int blocks = blocks_for(g.numel);
  if (g.contiguous)
    unary_contiguous<OutT, InT, F><<<blocks, kThreadsPerBlock, 0, stream>>>(g.numel, out, x, f);
  else
    unary_strided<OutT, InT, F><<<blocks, kThreadsPerBlock, 0, stream>>>(g, out, x, f);
  ENGINE_CUDA_CHECK(cudaGetLastError());  // launch errors (bad configuration, no device image)
}

template <typename OutT, typename InT, typename F>
void launch_map_binary(const StridedGeometry<3>& g, OutT* out, const InT* x, const InT* y, F f,
                       Stream stream) {
  if (g.numel == 0) return;
  const unsigned int blocks = blocks_for(g.numel);
  if (g.contiguous)
    binary_contiguous<OutT, InT, F><<<blocks, kThreadsPerBlock, 0, stream>>>(g.numel, out, x, y, f);
  else
    binary_strided<OutT, InT, F><<<blocks, kThreadsPerBlock, 0, stream>>>(g, out, x, y, f);
  ENGINE_CUDA_CHECK(cudaGetLastError());
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

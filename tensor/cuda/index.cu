// index.cu: the indexing kernels (gather, index_select, scatter_add, index_add, one_hot) over the
// portable bodies of tensor/kernels/index.h, for every element size / addable type and i32 / i64
// indices.
//
// One thread per element of the iteration shape (index_launch.h). Gathers never collide. The
// scatters add into shared outputs with atomic adds (tensor/cuda/launch.cuh): with duplicate
// indices the order of the additions is the hardware's, so f32/f64 results can differ in the last
// bits from run to run and from the CPU (whose loops add in a fixed order, Note [deterministic
// scatter]); integer results are exact.
#include "tensor/cuda/index_launch.h"
#include "tensor/cuda/launch.cuh"
#include "tensor/kernels/index.h"

namespace engine::cuda {

template <typename T, typename I>
void launch_gather(const StridedGeometry<3>& g, T* out, const T* x, const I* index, int64_t x_stride_dim, int64_t n,
                   int32_t* bad, Stream stream) {
  launch_elements(
      g.numel,
      [=] ENGINE_KERNEL(int64_t i) {
        int64_t o[3];
        strided_offsets<3>(g, i, o);
        if (!kernels::gather_one(out + o[0], x, o[1], index[o[2]], x_stride_dim, n)) *bad = 1;
      },
      stream);
}

template <typename T, typename I>
void launch_scatter_add(const StridedGeometry<3>& g, T* out, const T* src, const I* index, int64_t out_stride_dim,
                        int64_t n, int32_t* bad, Stream stream) {
  launch_elements(
      g.numel,
      [=] ENGINE_KERNEL(int64_t i) {
        int64_t o[3];
        strided_offsets<3>(g, i, o);
        const int64_t k = int64_t(index[o[2]]);
        if (!kernels::index_in_range(k, n)) {
          *bad = 1;
          return;
        }
        atomic_add(out + o[0] + k * out_stride_dim, src[o[1]]);
      },
      stream);
}

template <typename T, typename I>
void launch_one_hot(int64_t rows, int64_t classes, T* out, const I* index, int32_t* bad, Stream stream) {
  launch_elements(
      rows * classes,
      [=] ENGINE_KERNEL(int64_t i) {
        const int64_t r = i / classes, c = i % classes;
        const int64_t k = int64_t(index[r]);
        out[i] = T(k == c ? 1 : 0);
        if (c == 0 && !kernels::index_in_range(k, classes)) *bad = 1;
      },
      stream);
}

#define ENGINE_CUDA_GATHER(T, I) \
  template void launch_gather<T, I>(const StridedGeometry<3>&, T*, const T*, const I*, int64_t, int64_t, int32_t*, Stream);
#define ENGINE_CUDA_SCATTER(T, I)                                                                                   \
  template void launch_scatter_add<T, I>(const StridedGeometry<3>&, T*, const T*, const I*, int64_t, int64_t, int32_t*, \
                                         Stream);
#define ENGINE_CUDA_ONE_HOT(T, I) template void launch_one_hot<T, I>(int64_t, int64_t, T*, const I*, int32_t*, Stream);
#define ENGINE_CUDA_INDEX_TYPES(MACRO, T) MACRO(T, int32_t) MACRO(T, int64_t)

ENGINE_CUDA_INDEX_TYPES(ENGINE_CUDA_GATHER, uint8_t)
ENGINE_CUDA_INDEX_TYPES(ENGINE_CUDA_GATHER, uint16_t)
ENGINE_CUDA_INDEX_TYPES(ENGINE_CUDA_GATHER, uint32_t)
ENGINE_CUDA_INDEX_TYPES(ENGINE_CUDA_GATHER, uint64_t)
ENGINE_CUDA_INDEX_TYPES(ENGINE_CUDA_SCATTER, float)
ENGINE_CUDA_INDEX_TYPES(ENGINE_CUDA_SCATTER, double)
ENGINE_CUDA_INDEX_TYPES(ENGINE_CUDA_SCATTER, int32_t)
ENGINE_CUDA_INDEX_TYPES(ENGINE_CUDA_SCATTER, int64_t)
ENGINE_CUDA_INDEX_TYPES(ENGINE_CUDA_ONE_HOT, float)
ENGINE_CUDA_INDEX_TYPES(ENGINE_CUDA_ONE_HOT, double)
ENGINE_CUDA_INDEX_TYPES(ENGINE_CUDA_ONE_HOT, int32_t)
ENGINE_CUDA_INDEX_TYPES(ENGINE_CUDA_ONE_HOT, int64_t)
ENGINE_CUDA_INDEX_TYPES(ENGINE_CUDA_ONE_HOT, uint8_t)

#undef ENGINE_CUDA_INDEX_TYPES
#undef ENGINE_CUDA_ONE_HOT
#undef ENGINE_CUDA_SCATTER
#undef ENGINE_CUDA_GATHER

}  // namespace engine::cuda

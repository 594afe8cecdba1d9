// index.cpp (cpu): the non-template helpers of tensor/cpu/index.h: locating a bad index for an
// error message, and the raw element copy that cat and stack use.
#include "tensor/cpu/index.h"

namespace engine::cpu {

std::optional<BadIndex> find_bad_index(const Tensor& index, int64_t n) {
  // Runs only after a loop has reported a bad value, so a plain serial walk is fine.
  const std::vector<double> values = index.to_vector();  // i32/i64 values are exact in a double
  for (size_t p = 0; p < values.size(); ++p) {
    const int64_t v = int64_t(values[p]);
    if (kernels::index_in_range(v, n)) continue;
    BadIndex bad;
    bad.value = v;
    bad.position.resize(index.dim());
    int64_t rem = int64_t(p);
    for (int d = index.dim() - 1; d >= 0; --d) {
      bad.position[d] = rem % index.sizes()[d];
      rem /= index.sizes()[d];
    }
    return bad;
  }
  return std::nullopt;
}

namespace {

template <typename E>
void copy_typed(const Tensor& dst, const Tensor& src) {
  E* d = static_cast<E*>(dst.raw_data());
  const E* s = static_cast<const E*>(src.raw_data());
  const Dims& shape = dst.sizes();
  const StridedShape<2> c = coalesce<2>(shape, {dst.strides(), src.strides()});
  if (c.ndim >= 1 && c.strides[0][c.ndim - 1] == 1 && c.strides[1][c.ndim - 1] == 1) {
    // Contiguous rows on both sides (always the case for contiguous inputs to cat).
    const int nd = c.ndim;
    const int64_t inner = c.sizes[nd - 1];
    const int64_t rows = shape.product() / inner;
#pragma omp parallel for schedule(static) if (rows * inner >= kParallelGrain && rows > 1)
    for (int64_t r = 0; r < rows; ++r) {
      int64_t rem = r, od = 0, os = 0;
      for (int k = nd - 2; k >= 0; --k) {
        const int64_t i = rem % c.sizes[k];
        rem /= c.sizes[k];
        od += i * c.strides[0][k];
        os += i * c.strides[1][k];
      }
      std::memcpy(d + od, s + os, size_t(inner) * sizeof(E));
    }
    return;
  }
  for_each_strided<2>(shape, {dst.strides(), src.strides()},
                      [&](const std::array<int64_t, 2>& o) { d[o[0]] = s[o[1]]; });
}

}  // namespace

void copy_elements(const Tensor& dst, const Tensor& src) {
  ENGINE_CHECK(dst.dtype() == src.dtype() && dst.sizes() == src.sizes(),
               "copy_elements: {} {} vs {} {}", dtype_name(dst.dtype()), dst.sizes().str(), dtype_name(src.dtype()),
               src.sizes().str());
  if (dst.numel() == 0) return;
  switch (dtype_size(dst.dtype())) {
    case 1: copy_typed<uint8_t>(dst, src); break;
    case 2: copy_typed<uint16_t>(dst, src); break;
    case 4: copy_typed<uint32_t>(dst, src); break;
    case 8: copy_typed<uint64_t>(dst, src); break;
    default: throw Error(fmt::format("copy_elements: unsupported element size for {}", dtype_name(dst.dtype())));
  }
}

}  // namespace engine::cpu

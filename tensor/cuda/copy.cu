// copy.cu: strided copies between dtypes and fills on the GPU. Same-dtype copies move whole
// elements of the right width (elementwise.cu's identity kernel, instantiated for 1/2/4/8-byte
// words); this file has the converting copy (kernels/convert.h: the CPU copy_'s own conversion
// bodies, so both devices give identical bits) and the pattern fill.
#include <cstring>

#include "tensor/cuda/copy_launch.h"
#include "tensor/cuda/launch.cuh"
#include "tensor/kernels/convert.h"

namespace engine::cuda {

void launch_copy_convert(const StridedGeometry<2>& g, void* dst, int dst_code, int dst_size, const void* src,
                         int src_code, int src_size, Stream stream) {
  char* d = static_cast<char*>(dst);
  const char* s = static_cast<const char*>(src);
  if (g.contiguous) {  // both operands one unit-stride run: offsets are the index itself
    launch_elements(
        g.numel,
        [=] ENGINE_KERNEL(int64_t i) {
          kernels::store_from_double(d + i * dst_size, dst_code, kernels::load_as_double(s + i * src_size, src_code));
        },
        stream);
    return;
  }
  launch_elements(
      g.numel,
      [=] ENGINE_KERNEL(int64_t i) {
        int64_t o[2];
        strided_offsets<2>(g, i, o);
        kernels::store_from_double(d + o[0] * dst_size, dst_code,
                                   kernels::load_as_double(s + o[1] * src_size, src_code));
      },
      stream);
}

namespace {
template <typename Word>
void fill_words(const StridedGeometry<1>& g, void* dst, uint64_t pattern, Stream stream) {
  Word value;
  memcpy(&value, &pattern, sizeof(Word));  // little-endian: the low bytes hold the element
  Word* d = static_cast<Word*>(dst);
  launch_elements(
      g.numel,
      [=] ENGINE_KERNEL(int64_t i) {
        int64_t o[1];
        strided_offsets<1>(g, i, o);
        d[o[0]] = value;
      },
      stream);
}
}  // namespace

void launch_fill_pattern(const StridedGeometry<1>& g, void* dst, int element_size, uint64_t pattern, Stream stream) {
  switch (element_size) {
    case 1: fill_words<uint8_t>(g, dst, pattern, stream); break;
    case 2: fill_words<uint16_t>(g, dst, pattern, stream); break;
    case 4: fill_words<uint32_t>(g, dst, pattern, stream); break;
    default: fill_words<uint64_t>(g, dst, pattern, stream); break;
  }
}

}  // namespace engine::cuda

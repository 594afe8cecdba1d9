// copy_launch.h (cuda): the copy, conversion and fill launchers (copy.cu), plain types only.
#pragma once
#include <cstdint>

#include "tensor/cuda/device.h"
#include "tensor/cuda/strided.h"

namespace engine::cuda {

// dst[o0] = convert(src[o1]) for every element of the geometry (operand 0 = dst); codes are
// kernels/convert.h's DTypeCode, element sizes in bytes.
void launch_copy_convert(const StridedGeometry<2>& g, void* dst, int dst_code, int dst_size, const void* src,
                         int src_code, int src_size, Stream stream);
// dst[o0] = the `element_size`-byte pattern (1, 2, 4 or 8 bytes) for every element.
void launch_fill_pattern(const StridedGeometry<1>& g, void* dst, int element_size, uint64_t pattern, Stream stream);

}  // namespace engine::cuda

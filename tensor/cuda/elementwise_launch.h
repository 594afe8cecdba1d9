// elementwise_launch.h (cuda): declarations of the strided elementwise launchers, shared by the
// nvcc side (elementwise.cu, which defines and explicitly instantiates them) and the C++ side
// (elementwise.h, which builds the geometry from Tensors and calls them). Plain types only, so
// nvcc never has to parse tensor.h.
#pragma once
#include "tensor/cuda/device.h"
#include "tensor/cuda/strided.h"

namespace engine::cuda {

// Operand 0 of the geometry is the output; the launch is asynchronous on `stream`.
template <typename OutT, typename InT, typename F>
void launch_map_unary(const StridedGeometry<2>& g, OutT* out, const InT* x, F f, Stream stream);
template <typename OutT, typename InT, typename F>
void launch_map_binary(const StridedGeometry<3>& g, OutT* out, const InT* x, const InT* y, F f,
                       Stream stream);
template <typename OutT, typename AT, typename BT, typename CT, typename F>
void launch_map_ternary(const StridedGeometry<4>& g, OutT* out, const AT* a, const BT* b, const CT* c, F f,
                        Stream stream);

}  // namespace engine::cuda

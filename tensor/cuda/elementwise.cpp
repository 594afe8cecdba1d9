// elementwise.cpp (cuda): host side of the strided CUDA launchers: checks and the geometry
// (elementwise.h). The coalescing is the CPU loop's own (cpu::coalesce), so both backends visit
// the same merged shape.
#include "tensor/cuda/elementwise.h"

#include "tensor/cpu/loops.h"

namespace engine::cuda {

static_assert(kStridedMaxDims == kMaxDims, "StridedGeometry must hold every tensor rank");

namespace {

void check_operand(const char* op, const char* role, const Tensor& t, const Tensor& out, DType dtype) {
  ENGINE_CHECK(t.defined(), "{}: {} is an undefined tensor", op, role);
  ENGINE_CHECK(t.device() == out.device(), "{}: {} is on {} but the output is on {}", op, role,
               t.device().str(), out.device().str());
  ENGINE_CHECK(t.dtype() == dtype, "{}: {} has dtype {}, expected {}", op, role, dtype_name(t.dtype()),
               dtype_name(dtype));
  if (&t == &out) {
    // Two threads must never write the same element: no broadcast (stride-0) output dims.
    for (int d = 0; d < out.dim(); ++d)
      ENGINE_CHECK(out.sizes()[d] <= 1 || out.strides()[d] != 0,
                   "{}: the output has stride 0 in dim {} (an expanded view); write to a real tensor",
                   op, d);
  } else {
    // NumPy rule against a fixed result: align trailing dims; each is 1 or equals out's.
    bool ok = t.dim() <= out.dim();
    for (int d = 0; ok && d < t.dim(); ++d) {
      const int64_t size = t.sizes()[d], target = out.sizes()[d + out.dim() - t.dim()];
      ok = size == 1 || size == target;
    }
    ENGINE_CHECK(ok, "{}: {} of shape {} does not broadcast to the output shape {}", op, role,
                 t.sizes().str(), out.sizes().str());
  }
}

}  // namespace

template <int N>
StridedGeometry<N> strided_geometry(const Dims& shape, const std::array<Dims, N>& strides) {
  const cpu::StridedShape<N> s = cpu::coalesce<N>(shape, strides);
  StridedGeometry<N> g;
  g.ndim = s.ndim;
  g.numel = shape.product();
  bool unit = s.ndim <= 1;
  for (int d = 0; d < s.ndim; ++d) {
    g.sizes[d] = s.sizes[d];
    for (int k = 0; k < N; ++k) {
      g.strides[k][d] = s.strides[k][d];
      if (s.strides[k][d] != 1) unit = false;
    }
  }
  g.contiguous = unit;
  return g;
}

template StridedGeometry<2> strided_geometry<2>(const Dims&, const std::array<Dims, 2>&);
template StridedGeometry<3> strided_geometry<3>(const Dims&, const std::array<Dims, 3>&);

StridedGeometry<2> unary_geometry(const char* op, const Tensor& out, const Tensor& x, DType out_dtype,
                                  DType in_dtype) {
  check_device(out.device(), op);
  check_operand(op, "output", out, out, out_dtype);
  check_operand(op, "input", x, out, in_dtype);
  return strided_geometry<2>(out.sizes(), {out.strides(), cpu::broadcast_strides(x, out.sizes())});
}

StridedGeometry<3> binary_geometry(const char* op, const Tensor& out, const Tensor& x, const Tensor& y,
                                   DType out_dtype, DType in_dtype) {
  check_device(out.device(), op);
  check_operand(op, "output", out, out, out_dtype);
  check_operand(op, "first input", x, out, in_dtype);
  check_operand(op, "second input", y, out, in_dtype);
  return strided_geometry<3>(out.sizes(), {out.strides(), cpu::broadcast_strides(x, out.sizes()),
                                cpu::broadcast_strides(y, out.sizes())});
}

}  // namespace engine::cuda

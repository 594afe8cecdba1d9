// elementwise.cpp (cuda): host side of the strided CUDA launchers: checks and the geometry
// (elementwise.h). The coalescing is the CPU loop's own (cpu::coalesce), so both backends visit
// the same merged shape.
#include "tensor/cuda/elementwise.h"

#include "tensor/cpu/loops.h"

namespace engine::cuda {

static_assert(kStridedMaxDims == kMaxDims, "StridedGeometry must hold every tensor rank");

namespace {

void check_operand(const char* op, const char* role, const Tensor& t, const Tensor& out, bool dtype_ok) {
  ENGINE_CHECK(t.defined(), "{}: {} is an undefined tensor", op, role);
  ENGINE_CHECK(t.device() == out.device(), "{}: {} is on {} but the output is on {}", op, role,
               t.device().str(), out.device().str());
  ENGINE_CHECK(dtype_ok, "{}: {} has dtype {}, which the kernel was not instantiated for", op, role,
               dtype_name(t.dtype()));
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

template <int N>
StridedGeometry<N> elementwise_geometry(const char* op, const Tensor& out,
                                        const std::array<const Tensor*, N - 1>& inputs,
                                        const std::array<bool, N>& dtype_ok) {
  check_device(out.device(), op);
  check_operand(op, "the output", out, out, dtype_ok[0]);
  std::array<Dims, N> strides;
  strides[0] = out.strides();
  for (int k = 0; k + 1 < N; ++k) {
    const std::string role = fmt::format("input {}", k);
    check_operand(op, role.c_str(), *inputs[size_t(k)], out, dtype_ok[size_t(k + 1)]);
    strides[size_t(k + 1)] = cpu::broadcast_strides(*inputs[size_t(k)], out.sizes());
  }
  return strided_geometry<N>(out.sizes(), strides);
}

template StridedGeometry<1> strided_geometry<1>(const Dims&, const std::array<Dims, 1>&);
template StridedGeometry<2> strided_geometry<2>(const Dims&, const std::array<Dims, 2>&);
template StridedGeometry<3> strided_geometry<3>(const Dims&, const std::array<Dims, 3>&);
template StridedGeometry<4> strided_geometry<4>(const Dims&, const std::array<Dims, 4>&);
template StridedGeometry<2> elementwise_geometry<2>(const char*, const Tensor&, const std::array<const Tensor*, 1>&,
                                                    const std::array<bool, 2>&);
template StridedGeometry<3> elementwise_geometry<3>(const char*, const Tensor&, const std::array<const Tensor*, 2>&,
                                                    const std::array<bool, 3>&);
template StridedGeometry<4> elementwise_geometry<4>(const char*, const Tensor&, const std::array<const Tensor*, 3>&,
                                                    const std::array<bool, 4>&);

}  // namespace engine::cuda

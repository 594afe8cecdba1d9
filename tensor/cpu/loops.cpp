// loops.cpp: broadcasting strides for the CPU strided loop.
#include "tensor/cpu/loops.h"

namespace engine::cpu {

Dims broadcast_strides(const Tensor& t, const Dims& shape) {
  Dims st;
  st.resize(shape.size());
  const int lead = shape.size() - t.dim();
  for (int d = 0; d < shape.size(); ++d) {
    const int td = d - lead;
    st[d] = (td < 0 || t.sizes()[td] == 1) ? 0 : t.strides()[td];
  }
  return st;
}

}  // namespace engine::cpu

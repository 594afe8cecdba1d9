// reduce.cpp (cpu): planning a reduction (which dims fold, which stay).
#include "tensor/cpu/reduce.h"

namespace engine::cpu {

ReducePlan plan_reduce(const Tensor& x, const Dims& dims, bool keepdim, const char* op) {
  ReducePlan p;
  bool reduced[kMaxDims] = {false};
  if (dims.empty()) {
    for (int d = 0; d < x.dim(); ++d) reduced[d] = true;
  } else {
    for (int64_t d : dims) {
      const int w = wrap_dim(d, x.dim(), op);
      ENGINE_CHECK(!reduced[w] || x.dim() == 0, "{}: dim {} repeated in {}", op, w, dims.str());
      reduced[w] = true;
    }
  }
  for (int d = 0; d < x.dim(); ++d) {
    if (reduced[d]) {
      p.red_sizes.push_back(x.sizes()[d]);
      p.red_strides.push_back(x.strides()[d]);
      p.count *= x.sizes()[d];
      if (keepdim) p.out_sizes.push_back(1);
    } else {
      p.kept_sizes.push_back(x.sizes()[d]);
      p.kept_strides.push_back(x.strides()[d]);
      p.out_sizes.push_back(x.sizes()[d]);
    }
  }
  return p;
}

}  // namespace engine::cpu

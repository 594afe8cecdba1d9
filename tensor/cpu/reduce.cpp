// reduce.cpp (cpu): planning a reduction: which dims fold, which stay, and their coalesced
// geometry (see reduce.h).
#include "tensor/cpu/reduce.h"

namespace engine::cpu {

namespace {

// Drop size-1 dims and merge an outer dim into the next one when it continues it linearly
// (outer stride = inner stride * inner size). Order is preserved.
void coalesce_dims(Dims& sizes, Dims& strides) {
  Dims s, t;
  for (int d = 0; d < sizes.size(); ++d) {
    if (sizes[d] == 1) continue;
    if (!s.empty() && t[t.size() - 1] == strides[d] * sizes[d]) {
      s[s.size() - 1] *= sizes[d];
      t[t.size() - 1] = strides[d];
      continue;
    }
    s.push_back(sizes[d]);
    t.push_back(strides[d]);
  }
  sizes = s;
  strides = t;
}

}  // namespace

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
  p.n_out = p.kept_sizes.product();
  if (p.n_out > 0 && p.count > 0) {  // empty tensors keep their zero sizes for the loop guards
    coalesce_dims(p.kept_sizes, p.kept_strides);
    coalesce_dims(p.red_sizes, p.red_strides);
  }
  return p;
}

}  // namespace engine::cpu

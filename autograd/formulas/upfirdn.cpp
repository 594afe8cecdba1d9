// upfirdn.cpp: backward of upfirdn2d (StyleGAN2's Upfirdn2d backward).
//
// upfirdn2d is linear in x; its adjoint is upfirdn2d itself with the filter flipped, up and down
// swapped, the same gain, and the padding chosen so that the output has x's size:
//
//   dx = upfirdn2d(g, flip(f), up = (down_x, down_y), down = (up_x, up_y), gain,
//                  pad_x0' = kw - pad_x0 - 1,  pad_x1' = W*up_x - Wo*down_x + pad_x0 - up_x + 1,
//                  pad_y0' = kh - pad_y0 - 1,  pad_y1' = H*up_y - Ho*down_y + pad_y0 - up_y + 1)
//   (output size: (Wo*down_x + pad_x0' + pad_x1' - kw) / up_x + 1 = W, and likewise H)
//   df: none (the filter is a constant; the op rejects a filter that requires grad).
//
// Because the backward is the same op, the recorded backward is itself differentiable: the
// backward of the backward is upfirdn2d with the original filter and factors again, and so on to
// any order (R1's double backward goes through every up/down-sampling of D). flip(f) reverses
// both axes of a 2-D filter (and the one axis of a separable 1-D filter).
#include "autograd/formulas/upfirdn.h"

#include <algorithm>
#include <vector>

#include "autograd/node.h"

namespace engine::autograd::formulas {

namespace {

// flip(f) as a new constant tensor: reversing the row-major values flips every axis.
Tensor flipped(const Tensor& f) {
  // A constant of a few taps; a CUDA filter's values are read on the host (copied there).
  std::vector<double> v = (f.device().is_cpu() ? f : f.to(Device::cpu())).to_vector();
  std::reverse(v.begin(), v.end());
  return from_vector(v, f.sizes(), opts(f.dtype(), f.device()));
}

}  // namespace

void upfirdn2d(const Tensor& x, const Tensor& f, const UpFirDnParams& p, const Tensor& out) {
  auto node = record("UpFirDn2dBackward", {x}, {out});
  if (!node) return;
  node->save(f);  // a constant, but saved so that an in-place change of it is detected
  const int64_t H = x.size(2), W = x.size(3), Ho = out.size(2), Wo = out.size(3);
  const int64_t kh = f.size(0), kw = f.size(f.dim() - 1);
  UpFirDnParams q;
  q.up_x = p.down_x, q.up_y = p.down_y, q.down_x = p.up_x, q.down_y = p.up_y;
  q.pad_x0 = kw - p.pad_x0 - 1;
  q.pad_x1 = W * p.up_x - Wo * p.down_x + p.pad_x0 - p.up_x + 1;
  q.pad_y0 = kh - p.pad_y0 - 1;
  q.pad_y1 = H * p.up_y - Ho * p.down_y + p.pad_y0 - p.up_y + 1;
  q.gain = p.gain;
  node->backward_fn = [q](Node& n, const TensorList& g) -> TensorList {
    return {engine::upfirdn2d(g[0], flipped(n.saved(0)), q)};
  };
}

}  // namespace engine::autograd::formulas

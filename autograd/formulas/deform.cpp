// deform.cpp: backward of deform_conv2d (modulated deformable convolution, DCNv2).
//
// With columns[n][(c, k), p] = m[n, g(c), k, p] * s[n, c, k, p], s = bilinear(x[n, c], pos(k, p))
// (tensor/ops_deform.cpp, tensor/kernels/deform.h), out = W_g columns_g + b, and G = grad_out:
//
//   grad_columns_g = W_g^T G_g
//   dx[n, c]       = sum_{k, p} m * grad_columns[(c, k), p] * d s / d x[n, c]    (bilinear weights)
//   d dy[n, g, k, p] = sum_{c in g} grad_columns[(c, k), p] * m * d s / d y
//   d dx[n, g, k, p] = sum_{c in g} grad_columns[(c, k), p] * m * d s / d x
//   d m[n, g, k, p]  = sum_{c in g} grad_columns[(c, k), p] * s
//   dW_g           = sum_n G_g columns_g^T
//   db[o]          = sum_{n, p} G[n, o, p]
//
// All of it runs in one primitive, deform_conv2d_backward (tensor/ops_deform.cpp), which has no
// backward of its own: the Node is once-differentiable, so a backward with create_graph through
// it (a double backward) raises an error naming DeformConv2dBackward. Aurora needs only first
// order through MTM; R1's double backward goes through the discriminator, which has no
// deformable convolution.
#include "autograd/formulas/deform.h"

#include "autograd/node.h"

namespace engine::autograd::formulas {

void deform_conv2d(const Tensor& x, const Tensor& offset, const Tensor& weight, const Tensor& bias, const Tensor& mask,
                   const Conv2dParams& p, const Tensor& out) {
  auto node = record("DeformConv2dBackward", {x, offset, weight, bias, mask}, {out});
  if (!node) return;
  node->once_differentiable = true;
  // Which saved tensors each gradient reads: x for the weight, offset and mask gradients; the
  // weight for the input, offset and mask gradients; offset and mask for all of them. The
  // gradients' shapes are those of the saved tensors, so the unsaved x or weight must not be
  // needed (a placeholder keeps the indices fixed).
  const bool need_x_saved = node->needs_input_grad(1) || node->needs_input_grad(2) || node->needs_input_grad(4);
  const bool need_w_saved = node->needs_input_grad(0) || node->needs_input_grad(1) || node->needs_input_grad(4);
  node->save(need_x_saved ? x : Tensor());
  node->save(offset, SaveMode::exact);  // sampling positions: Note [bf16 saved activations]
  node->save(need_w_saved ? weight : Tensor());
  node->save(mask, SaveMode::exact);
  const Dims x_sizes = x.sizes(), w_sizes = weight.sizes();
  node->backward_fn = [p, x_sizes, w_sizes](Node& n, const TensorList& g) -> TensorList {
    const std::array<bool, 5> needed = {n.needs_input_grad(0), n.needs_input_grad(1), n.needs_input_grad(2),
                                        n.needs_input_grad(3), n.needs_input_grad(4)};
    Tensor xs = n.saved(0), ws = n.saved(2);
    // The primitive checks shapes on all its inputs: stand-ins of the right shape for the ones
    // that were not saved (their values are not read for the requested gradients).
    if (!xs.defined()) xs = expand(scalar_tensor(0.0, opts(g[0].dtype(), g[0].device())), x_sizes);
    if (!ws.defined()) ws = expand(scalar_tensor(0.0, opts(g[0].dtype(), g[0].device())), w_sizes);
    DeformConv2dGrads r = deform_conv2d_backward(g[0], xs, n.saved(1), ws, n.saved(3), p, needed);
    return {r.x, r.offset, r.weight, r.bias, r.mask};
  };
}

}  // namespace engine::autograd::formulas

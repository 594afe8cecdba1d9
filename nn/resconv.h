// resconv.h: Aurora's residual conv block (docs/aurora-spec.md section 2 "ResConv block", 11.6).
//
//   out = (conv2(conv1(x, w), w) + skip(x)) * residual_gain          residual_gain = 0.4
//   conv1: 3x3 adaptive ModulatedConv2d Cin -> Cout, demodulated, lrelu; upsamples (fused, 2x) in
//          the first block of a resolution.
//   conv2: 3x3 adaptive ModulatedConv2d Cout -> Cout, demodulated, lrelu; the only conv that may
//          get MTM (at r <= 16).
//   skip:  identity when Cin == Cout and no upsampling; otherwise a 1x1 equalized-lr conv without
//          bias, then (when upsampling) Up2 = upfirdn2d(FIR [1,3,3,1], up 2, pad (2,1,2,1), gain 4).
// The gain multiplies the SUM (spec 11.6), not only the branch.
//
// MTM hook: conv2 is a plain ModulatedConv2d; the generator attaches MTM with
//   block.conv2.attach_mtm<SomeMTM>(args...)    (Note [MTM hook], nn/modconv.h)
// before materialize; conv2's parameters then include conv2.mtm.*. ResConv needs no change.
//
// Parameter names as the released ResidualConvBlock: conv1.*, conv2.* (nn/modconv.h), and
// skip_connection.weight [Cout, Cin, 1, 1] when the skip is a conv.
#pragma once
#include "nn/layers.h"
#include "nn/modconv.h"

namespace engine::nn {

struct ResConvConfig {
  int64_t in_channels = 0, out_channels = 0, w_dim = 0;
  int64_t num_kernels = 1;
  bool upsample = false;
  double residual_gain = 0.4;
  double lr_mul = 1.0;
  double eps = 1e-8;
};

class ResConv : public Module {
 public:
  explicit ResConv(const ResConvConfig& config);
  // x [B, Cin, H, W], w [B, w_dim] -> [B, Cout, H', W'] (H' = 2H when upsampling).
  Tensor forward(const Tensor& x, const Tensor& w) const;
  Tensor skip(const Tensor& x) const;  // identity, or 1x1 conv (+ Up2)

  ResConvConfig config;
  ModulatedConv2d& conv1;
  ModulatedConv2d& conv2;
  EqualConv2d* skip_connection = nullptr;  // undefined for the identity skip
};

}  // namespace engine::nn

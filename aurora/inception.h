// inception.h: the Inception-v3 of the FID convention, forward only (docs/eval-data-formats.md
// section 2; used by aurora/fid.h).
//
// The network is the TF graph inception-2015-12-05 as pytorch-fid rebuilds it (FIDInceptionA, C,
// E_1, E_2 on top of torchvision's Inception3 layout), not torchvision's ImageNet model:
//   stem     Conv2d_1a_3x3 (3->32, s2), Conv2d_2a_3x3 (32->32), Conv2d_2b_3x3 (32->64, p1),
//            max_pool 3 s2, Conv2d_3b_1x1 (64->80), Conv2d_4a_3x3 (80->192), max_pool 3 s2
//   35x35    Mixed_5b, 5c, 5d   (A: 1x1 | 1x1,5x5 | 1x1,3x3,3x3 | avg_pool,1x1)
//   17x17    Mixed_6a (B: grid reduction with a max-pool branch), Mixed_6b..6e (C: factorised 7x7)
//   8x8      Mixed_7a (D: reduction), Mixed_7b (E_1), Mixed_7c (E_2)
//   pool3    the global average over Mixed_7c's 8x8 map: the 2048-d FID feature
//   fc       Linear(2048, 1008) (the TF graph's 1008 classes), for logits (Inception score)
// The FID variants differ from torchvision in two places: every avg-pool branch (A, C, E_1)
// averages with count_include_pad = false, and Mixed_7c's pool branch is a 3x3 stride-1 MAX pool.
// Each BasicConv2d is conv (no bias) -> BatchNorm (eval, eps 1e-3) -> ReLU; the BatchNorm is
// folded into the conv at load:  w' = w gamma / sqrt(var + eps),  b' = beta - mean gamma / sqrt(var + eps).
// 1x1 convs that read the same input inside a block (e.g. A's branch1x1, branch5x5_1,
// branch3x3dbl_1 and, pooled after the conv, branch_pool) are concatenated into one conv at load,
// so they run as one GEMM.
//
// Weights: a safetensors file with pytorch-fid's state-dict names, e.g.
//   Conv2d_1a_3x3.conv.weight, Conv2d_1a_3x3.bn.{weight,bias,running_mean,running_var},
//   Mixed_5b.branch1x1.conv.weight, ..., Mixed_7c.branch_pool.bn.running_var, fc.weight [1008, 2048],
//   fc.bias [1008]. Extra names (num_batches_tracked, AuxLogits.*) are ignored. The real weights
// (pt_inception-2015-12-05-6726825d.pth) are converted by aurora/tools/convert_fid_inception.py.
//
// Input: f32 [N, 3, H, W] already resized and scaled to [-1, 1] (aurora/fid.h does that: 299x299
// for FID). Any H, W >= 75 runs (the network's minimum), which the tests use to stay fast.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"
#include "tensor/ops.h"

namespace engine::aurora {

class FidInception {
 public:
  static constexpr int64_t kFeatureDim = 2048;
  static constexpr int64_t kNumClasses = 1008;
  static constexpr double kBatchNormEps = 1e-3;

  // Folds and fuses the weights of `file`; every name of parameter_shapes() must be present with
  // that shape (errors name the file and the key).
  explicit FidInception(const io::SafetensorsFile& file);
  // Reads `path`; a missing file is an error that says how to make it (missing_weights_message).
  static FidInception load(const std::string& path);

  // pool3 features f32 [N, 2048]. Runs under NoGradGuard (forward only).
  Tensor features(const Tensor& x) const;
  // pool3 features and the 1008 logits.
  std::pair<Tensor, Tensor> features_and_logits(const Tensor& x) const;

  // Every tensor the weight file must hold, in forward order, with its shape (tests write random
  // files from this list; the PyTorch reference reads them by name on its own).
  static std::vector<std::pair<std::string, Dims>> parameter_shapes();

  const std::string& source() const { return source_; }

 private:
  // One conv (possibly several fused BasicConv2d) with folded BatchNorm, followed by ReLU.
  struct Conv {
    Tensor weight, bias;  // f32, contiguous
    Conv2dParams params;
    std::vector<int64_t> splits;  // output channels of each fused member
    bool pool_last = false;       // the last member is an avg-pool branch (pooled after the conv)
  };
  Tensor run(const Conv& c, const Tensor& x) const;                    // conv + bias + ReLU
  TensorList run_split(const Conv& c, const Tensor& x) const;          // the same, split per member
  const Conv& conv(const std::string& name) const;

  Tensor block_a(const std::string& n, const Tensor& x) const;
  Tensor block_b(const std::string& n, const Tensor& x) const;
  Tensor block_c(const std::string& n, const Tensor& x) const;
  Tensor block_d(const std::string& n, const Tensor& x) const;
  Tensor block_e(const std::string& n, const Tensor& x, bool max_pool_branch) const;

  std::string source_;
  std::map<std::string, Conv> convs_;  // by pytorch-fid name, or "Mixed_5b.fused_1x1" for a fused group
  Tensor fc_weight_, fc_bias_;
};

// The text of the error when the weights are missing: which file, and how to make it.
std::string missing_weights_message(const std::string& path);

}  // namespace engine::aurora

// inception.cpp: the FID Inception-v3 (aurora/inception.h has the architecture and the weight
// names). The table below is the single statement of the layer shapes: parameter_shapes(), the
// loader and the forward pass all read it.
#include "aurora/inception.h"

#include <cmath>
#include <filesystem>

#include "autograd/grad_mode.h"
#include "tensor/error.h"

namespace engine::aurora {

namespace {

// One BasicConv2d: conv (no bias) + BatchNorm + ReLU.
struct ConvSpec {
  std::string name;
  int64_t cin, cout, kh, kw, stride, ph, pw;
};

std::vector<ConvSpec> architecture() {
  std::vector<ConvSpec> s;
  auto add = [&s](const std::string& name, int64_t cin, int64_t cout, int64_t kh, int64_t kw, int64_t stride = 1,
                  int64_t ph = 0, int64_t pw = 0) { s.push_back({name, cin, cout, kh, kw, stride, ph, pw}); };
  add("Conv2d_1a_3x3", 3, 32, 3, 3, 2);
  add("Conv2d_2a_3x3", 32, 32, 3, 3);
  add("Conv2d_2b_3x3", 32, 64, 3, 3, 1, 1, 1);
  add("Conv2d_3b_1x1", 64, 80, 1, 1);
  add("Conv2d_4a_3x3", 80, 192, 3, 3);
  auto a = [&](const std::string& n, int64_t cin, int64_t pool) {
    add(n + ".branch1x1", cin, 64, 1, 1);
    add(n + ".branch5x5_1", cin, 48, 1, 1);
    add(n + ".branch5x5_2", 48, 64, 5, 5, 1, 2, 2);
    add(n + ".branch3x3dbl_1", cin, 64, 1, 1);
    add(n + ".branch3x3dbl_2", 64, 96, 3, 3, 1, 1, 1);
    add(n + ".branch3x3dbl_3", 96, 96, 3, 3, 1, 1, 1);
    add(n + ".branch_pool", cin, pool, 1, 1);
  };
  a("Mixed_5b", 192, 32);
  a("Mixed_5c", 256, 64);
  a("Mixed_5d", 288, 64);
  add("Mixed_6a.branch3x3", 288, 384, 3, 3, 2);
  add("Mixed_6a.branch3x3dbl_1", 288, 64, 1, 1);
  add("Mixed_6a.branch3x3dbl_2", 64, 96, 3, 3, 1, 1, 1);
  add("Mixed_6a.branch3x3dbl_3", 96, 96, 3, 3, 2);
  auto c = [&](const std::string& n, int64_t c7) {
    add(n + ".branch1x1", 768, 192, 1, 1);
    add(n + ".branch7x7_1", 768, c7, 1, 1);
    add(n + ".branch7x7_2", c7, c7, 1, 7, 1, 0, 3);
    add(n + ".branch7x7_3", c7, 192, 7, 1, 1, 3, 0);
    add(n + ".branch7x7dbl_1", 768, c7, 1, 1);
    add(n + ".branch7x7dbl_2", c7, c7, 7, 1, 1, 3, 0);
    add(n + ".branch7x7dbl_3", c7, c7, 1, 7, 1, 0, 3);
    add(n + ".branch7x7dbl_4", c7, c7, 7, 1, 1, 3, 0);
    add(n + ".branch7x7dbl_5", c7, 192, 1, 7, 1, 0, 3);
    add(n + ".branch_pool", 768, 192, 1, 1);
  };
  c("Mixed_6b", 128);
  c("Mixed_6c", 160);
  c("Mixed_6d", 160);
  c("Mixed_6e", 192);
  add("Mixed_7a.branch3x3_1", 768, 192, 1, 1);
  add("Mixed_7a.branch3x3_2", 192, 320, 3, 3, 2);
  add("Mixed_7a.branch7x7x3_1", 768, 192, 1, 1);
  add("Mixed_7a.branch7x7x3_2", 192, 192, 1, 7, 1, 0, 3);
  add("Mixed_7a.branch7x7x3_3", 192, 192, 7, 1, 1, 3, 0);
  add("Mixed_7a.branch7x7x3_4", 192, 192, 3, 3, 2);
  auto e = [&](const std::string& n, int64_t cin) {
    add(n + ".branch1x1", cin, 320, 1, 1);
    add(n + ".branch3x3_1", cin, 384, 1, 1);
    add(n + ".branch3x3_2a", 384, 384, 1, 3, 1, 0, 1);
    add(n + ".branch3x3_2b", 384, 384, 3, 1, 1, 1, 0);
    add(n + ".branch3x3dbl_1", cin, 448, 1, 1);
    add(n + ".branch3x3dbl_2", 448, 384, 3, 3, 1, 1, 1);
    add(n + ".branch3x3dbl_3a", 384, 384, 1, 3, 1, 0, 1);
    add(n + ".branch3x3dbl_3b", 384, 384, 3, 1, 1, 1, 0);
    add(n + ".branch_pool", cin, 192, 1, 1);
  };
  e("Mixed_7b", 1280);
  e("Mixed_7c", 2048);
  return s;
}

// The 1x1 convs of one block that read the block's input, in output order: fused into one conv
// called "<block>.fused_1x1" (their outputs are split again by run_split). An avg-pool branch
// joins the group as its last member: avg-pooling with count_include_pad = false is linear with
// weights summing to 1, so  relu(W avg(x) + b) = relu(avg(W x + b)),  and pooling the branch's
// 32..192 output channels is cheaper than pooling the block's 192..2048 input channels. (Mixed_7c
// max-pools, which does not commute with the conv, so its pool branch stays separate.)
std::vector<std::pair<std::string, std::vector<std::string>>> fused_groups() {
  std::vector<std::pair<std::string, std::vector<std::string>>> g;
  for (const char* n : {"Mixed_5b", "Mixed_5c", "Mixed_5d"})
    g.push_back({n, {"branch1x1", "branch5x5_1", "branch3x3dbl_1", "branch_pool"}});
  for (const char* n : {"Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"})
    g.push_back({n, {"branch1x1", "branch7x7_1", "branch7x7dbl_1", "branch_pool"}});
  g.push_back({"Mixed_7a", {"branch3x3_1", "branch7x7x3_1"}});
  g.push_back({"Mixed_7b", {"branch1x1", "branch3x3_1", "branch3x3dbl_1", "branch_pool"}});
  g.push_back({"Mixed_7c", {"branch1x1", "branch3x3_1", "branch3x3dbl_1"}});
  return g;
}

// The tensor `key` of `file` as contiguous f64 after checking its shape.
Tensor fetch(const io::SafetensorsFile& file, const std::string& key, const Dims& shape) {
  const Tensor& t = file.at(key);
  ENGINE_CHECK(t.sizes() == shape, "FID Inception weights {}: tensor {} has shape {}, expected {}", file.source,
               key, t.sizes().str(), shape.str());
  ENGINE_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64 || t.dtype() == DType::f16 ||
                   t.dtype() == DType::bf16,
               "FID Inception weights {}: tensor {} has dtype {}, expected a floating type", file.source, key,
               dtype_name(t.dtype()));
  return contiguous(to_dtype(t, DType::f64));
}

}  // namespace

std::vector<std::pair<std::string, Dims>> FidInception::parameter_shapes() {
  std::vector<std::pair<std::string, Dims>> out;
  for (const ConvSpec& s : architecture()) {
    out.push_back({s.name + ".conv.weight", Dims{s.cout, s.cin, s.kh, s.kw}});
    for (const char* bn : {"weight", "bias", "running_mean", "running_var"})
      out.push_back({s.name + ".bn." + bn, Dims{s.cout}});
  }
  out.push_back({"fc.weight", Dims{kNumClasses, kFeatureDim}});
  out.push_back({"fc.bias", Dims{kNumClasses}});
  return out;
}

FidInception::FidInception(const io::SafetensorsFile& file) : source_(file.source) {
  autograd::NoGradGuard no_grad;
  for (const ConvSpec& s : architecture()) {
    const Tensor w = fetch(file, s.name + ".conv.weight", Dims{s.cout, s.cin, s.kh, s.kw});
    const Tensor gamma = fetch(file, s.name + ".bn.weight", Dims{s.cout});
    const Tensor beta = fetch(file, s.name + ".bn.bias", Dims{s.cout});
    const Tensor mean = fetch(file, s.name + ".bn.running_mean", Dims{s.cout});
    const Tensor var = fetch(file, s.name + ".bn.running_var", Dims{s.cout});
    // Fold in f64: scale = gamma / sqrt(var + eps), w' = w scale, b' = beta - mean scale.
    Tensor wf = contiguous(w), bf = empty({s.cout}, opts(DType::f64));
    const double* g = gamma.data<double>();
    const double* b = beta.data<double>();
    const double* m = mean.data<double>();
    const double* v = var.data<double>();
    double* wp = wf.data<double>();
    double* bp = bf.data<double>();
    const int64_t per_out = s.cin * s.kh * s.kw;
    for (int64_t o = 0; o < s.cout; ++o) {
      ENGINE_CHECK(v[o] + kBatchNormEps > 0, "FID Inception weights {}: {}.bn.running_var[{}] = {} is not > -eps",
                   file.source, s.name, o, v[o]);
      const double scale = g[o] / std::sqrt(v[o] + kBatchNormEps);
      for (int64_t i = 0; i < per_out; ++i) wp[o * per_out + i] *= scale;
      bp[o] = b[o] - m[o] * scale;
    }
    Conv c;
    c.weight = contiguous(to_dtype(wf, DType::f32));
    c.bias = contiguous(to_dtype(bf, DType::f32));
    c.params = Conv2dParams{s.stride, s.stride, s.ph, s.pw, 1, 1, 1};
    c.splits = {s.cout};
    convs_[s.name] = std::move(c);
  }
  for (const auto& [block, members] : fused_groups()) {
    TensorList ws, bs;
    Conv fused;
    for (const std::string& m : members) {
      auto it = convs_.find(block + "." + m);
      ws.push_back(it->second.weight);
      bs.push_back(it->second.bias);
      fused.splits.push_back(it->second.weight.size(0));
      convs_.erase(it);
    }
    fused.pool_last = members.back() == "branch_pool";
    fused.weight = contiguous(cat(ws, 0));
    fused.bias = contiguous(cat(bs, 0));
    convs_[block + ".fused_1x1"] = std::move(fused);
  }
  fc_weight_ = contiguous(to_dtype(fetch(file, "fc.weight", Dims{kNumClasses, kFeatureDim}), DType::f32));
  fc_bias_ = contiguous(to_dtype(fetch(file, "fc.bias", Dims{kNumClasses}), DType::f32));
}

std::string missing_weights_message(const std::string& path) {
  return "FID Inception weights not found: '" + path +
         "'. They are pytorch-fid's TF inception-2015-12-05 weights converted to safetensors: download "
         "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth "
         "and run '/usr/bin/python3 aurora/tools/convert_fid_inception.py pt_inception-2015-12-05-6726825d.pth " +
         path + "' (needs torch only; see docs/evaluation.md)";
}

FidInception FidInception::load(const std::string& path) {
  ENGINE_CHECK(std::filesystem::is_regular_file(path), "{}", missing_weights_message(path));
  return FidInception(io::read_safetensors(path));
}

const FidInception::Conv& FidInception::conv(const std::string& name) const {
  auto it = convs_.find(name);
  ENGINE_CHECK(it != convs_.end(), "FidInception: no conv {}", name);
  return it->second;
}

namespace {

// ReLU in place on channels [c0, c1) of a fresh contiguous [N, C, H, W] f32 tensor (NaN stays NaN,
// as torch.relu).
void relu_channels(const Tensor& y, int64_t c0, int64_t c1) {
  float* p = y.data<float>();
  const int64_t n = y.size(0), c = y.size(1), hw = y.size(2) * y.size(3);
  const int64_t len = (c1 - c0) * hw;
#pragma omp parallel for schedule(static) if (n * len >= (1 << 16))
  for (int64_t b = 0; b < n; ++b) {
    float* q = p + (b * c + c0) * hw;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) q[i] = q[i] < 0.0f ? 0.0f : q[i];
  }
}

// The pool branches of the FID blocks: 3x3 stride 1 pad 1.
Tensor avg3(const Tensor& x) { return avg_pool2d(x, Pool2dParams::make(3, 1, 1), /*count_include_pad=*/false); }

}  // namespace

// conv + bias, then ReLU in place on the conv's fresh output (no second tensor, one pass less).
Tensor FidInception::run(const Conv& c, const Tensor& x) const {
  Tensor y = conv2d(x, c.weight, c.bias, c.params);
  relu_channels(y, 0, y.size(1));
  return y;
}

// A fused group: one conv, ReLU on every member but a pooled last one, which is averaged first.
TensorList FidInception::run_split(const Conv& c, const Tensor& x) const {
  Tensor y = conv2d(x, c.weight, c.bias, c.params);
  const int64_t last = c.pool_last ? c.splits.back() : 0;
  relu_channels(y, 0, y.size(1) - last);
  TensorList parts = split_sizes(y, c.splits, 1);
  if (c.pool_last) {
    parts.back() = avg3(parts.back());
    relu_channels(parts.back(), 0, parts.back().size(1));
  }
  return parts;
}

Tensor FidInception::block_a(const std::string& n, const Tensor& x) const {
  const TensorList f = run_split(conv(n + ".fused_1x1"), x);
  const Tensor b5 = run(conv(n + ".branch5x5_2"), f[1]);
  const Tensor dbl = run(conv(n + ".branch3x3dbl_3"), run(conv(n + ".branch3x3dbl_2"), f[2]));
  return cat({f[0], b5, dbl, f[3]}, 1);  // f[3]: the pool branch (fused)
}

Tensor FidInception::block_b(const std::string& n, const Tensor& x) const {
  const Tensor b3 = run(conv(n + ".branch3x3"), x);
  Tensor dbl = run(conv(n + ".branch3x3dbl_1"), x);
  dbl = run(conv(n + ".branch3x3dbl_3"), run(conv(n + ".branch3x3dbl_2"), dbl));
  const Tensor pool = max_pool2d(x, Pool2dParams::make(3, 2));
  return cat({b3, dbl, pool}, 1);
}

Tensor FidInception::block_c(const std::string& n, const Tensor& x) const {
  const TensorList f = run_split(conv(n + ".fused_1x1"), x);
  const Tensor b7 = run(conv(n + ".branch7x7_3"), run(conv(n + ".branch7x7_2"), f[1]));
  Tensor dbl = f[2];
  for (const char* m : {".branch7x7dbl_2", ".branch7x7dbl_3", ".branch7x7dbl_4", ".branch7x7dbl_5"})
    dbl = run(conv(n + m), dbl);
  return cat({f[0], b7, dbl, f[3]}, 1);  // f[3]: the pool branch (fused)
}

Tensor FidInception::block_d(const std::string& n, const Tensor& x) const {
  const TensorList f = run_split(conv(n + ".fused_1x1"), x);
  const Tensor b3 = run(conv(n + ".branch3x3_2"), f[0]);
  Tensor b7 = f[1];
  for (const char* m : {".branch7x7x3_2", ".branch7x7x3_3", ".branch7x7x3_4"}) b7 = run(conv(n + m), b7);
  const Tensor pool = max_pool2d(x, Pool2dParams::make(3, 2));
  return cat({b3, b7, pool}, 1);
}

Tensor FidInception::block_e(const std::string& n, const Tensor& x, bool max_pool_branch) const {
  const TensorList f = run_split(conv(n + ".fused_1x1"), x);
  const Tensor b3 = cat({run(conv(n + ".branch3x3_2a"), f[1]), run(conv(n + ".branch3x3_2b"), f[1])}, 1);
  const Tensor d = run(conv(n + ".branch3x3dbl_2"), f[2]);
  const Tensor dbl = cat({run(conv(n + ".branch3x3dbl_3a"), d), run(conv(n + ".branch3x3dbl_3b"), d)}, 1);
  // Mixed_7c (E_2) max-pools where every other block averages (pytorch-fid's FIDInceptionE_2);
  // the average-pool branch of Mixed_7b is part of the fused conv (f[3]).
  const Tensor pool = max_pool_branch ? run(conv(n + ".branch_pool"), max_pool2d(x, Pool2dParams::make(3, 1, 1)))
                                      : f[3];
  return cat({f[0], b3, dbl, pool}, 1);
}

std::pair<Tensor, Tensor> FidInception::features_and_logits(const Tensor& input) const {
  const Tensor pool3 = features(input);
  autograd::NoGradGuard no_grad;
  return {pool3, linear(pool3, fc_weight_, fc_bias_)};
}

Tensor FidInception::features(const Tensor& input) const {
  autograd::NoGradGuard no_grad;
  ENGINE_CHECK(input.defined() && input.dim() == 4 && input.size(1) == 3,
               "FidInception: expected input [N, 3, H, W], got {}", input.defined() ? input.sizes().str() : "-");
  ENGINE_CHECK(input.size(2) >= 75 && input.size(3) >= 75,
               "FidInception: input {} is smaller than the network's minimum 75x75 (FID resizes to 299x299)",
               input.sizes().str());
  ENGINE_CHECK(input.dtype() == DType::f32, "FidInception: expected f32 input, got {}", dtype_name(input.dtype()));
  Tensor x = input;
  x = run(conv("Conv2d_1a_3x3"), x);
  x = run(conv("Conv2d_2a_3x3"), x);
  x = run(conv("Conv2d_2b_3x3"), x);
  x = max_pool2d(x, Pool2dParams::make(3, 2));
  x = run(conv("Conv2d_3b_1x1"), x);
  x = run(conv("Conv2d_4a_3x3"), x);
  x = max_pool2d(x, Pool2dParams::make(3, 2));
  x = block_a("Mixed_5b", x);
  x = block_a("Mixed_5c", x);
  x = block_a("Mixed_5d", x);
  x = block_b("Mixed_6a", x);
  x = block_c("Mixed_6b", x);
  x = block_c("Mixed_6c", x);
  x = block_c("Mixed_6d", x);
  x = block_c("Mixed_6e", x);
  x = block_d("Mixed_7a", x);
  x = block_e("Mixed_7b", x, false);
  x = block_e("Mixed_7c", x, true);
  return mean(x, {2, 3});  // pool3: the global average, [N, 2048]
}

}  // namespace engine::aurora

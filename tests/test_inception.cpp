// Tests of the FID Inception-v3 (aurora/inception.h):
//   * PyTorch parity (tests/parity/ref_inception.py, an independent module with unfolded
//     BatchNorm loading the same safetensors file strictly by name): pool3 features and logits of
//     a random-weight network on inputs of 299x299 (the FID size), 75x75 (the minimum) and 107x93;
//   * the weight file: names and shapes of parameter_shapes() (the full pytorch-fid state dict, 94
//     BasicConv2d + fc), a missing file names itself and the conversion command, a wrong shape names
//     the key, extra names (num_batches_tracked) are ignored.
// Random weights: conv He-normal (std sqrt(2 / fan_in)), BN gamma U[0.5, 1.5], beta N(0, 0.1),
// running_mean N(0, 0.1), running_var U[0.5, 1.5], fc N(0, 1/2048): activations stay O(1) through
// the 48 conv layers, so the comparison is meaningful.
// Tolerance (f32 through ~50 layers of sums up to 2048*9 long, with BN folded on our side and not on
// PyTorch's): |ours - ref| <= 2e-5 max|ref| + 1e-5 |ref| per element (measured: below 1e-6 max|ref|).
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "aurora/inception.h"
#include "io/safetensors.h"
#include "tensor/ops.h"
#include "tests/parity/script_runner.h"

using namespace engine;
using aurora::FidInception;

namespace {

io::NamedTensors random_weights(uint64_t seed) {
  Generator g(seed);
  io::NamedTensors out;
  for (const auto& [name, shape] : FidInception::parameter_shapes()) {
    const auto ends_with = [&](const char* s) {
      const std::string suf(s);
      return name.size() >= suf.size() && name.compare(name.size() - suf.size(), suf.size(), suf) == 0;
    };
    Tensor t;
    if (ends_with("conv.weight")) {
      const double fan_in = double(shape[1] * shape[2] * shape[3]);
      t = mul(randn(shape, g), std::sqrt(2.0 / fan_in));
    } else if (ends_with("bn.weight") || ends_with("bn.running_var")) {
      t = add(rand(shape, g), 0.5);
    } else if (ends_with("bn.bias") || ends_with("bn.running_mean")) {
      t = mul(randn(shape, g), 0.1);
    } else if (name == "fc.weight") {
      t = mul(randn(shape, g), 1.0 / std::sqrt(2048.0));
    } else {
      t = mul(randn(shape, g), 0.1);
    }
    out.emplace_back(name, t);
  }
  return out;
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

void check_close(const Tensor& ours, const Tensor& ref, const std::string& what) {
  REQUIRE_MESSAGE(ours.sizes() == ref.sizes(), what << ": shape " << ours.sizes().str() << " vs " << ref.sizes().str());
  const std::vector<double> a = ours.to_vector(), b = ref.to_vector();
  const double scale = max_abs(b);
  double worst = 0;
  size_t bad = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double err = std::fabs(a[i] - b[i]);
    worst = std::max(worst, err / scale);
    if (!(err <= 2e-5 * scale + 1e-5 * std::fabs(b[i]))) ++bad;
  }
  MESSAGE(what << ": max |ours - torch| / max|torch| = " << worst << " (max|torch| = " << scale << ")");
  CHECK(scale > 1e-3);  // not a degenerate (all-zero) network
  CHECK_MESSAGE(bad == 0, what << ": " << bad << " of " << a.size() << " elements out of tolerance");
}

}  // namespace

TEST_CASE("inception: PyTorch parity of pool3 and logits on random weights") {
  const std::string dir = parity::make_tmpdir("inception");
  io::NamedTensors weights = random_weights(2015);
  // pytorch-fid's file also has num_batches_tracked; the loader must ignore it.
  weights.emplace_back("Conv2d_1a_3x3.bn.num_batches_tracked", zeros({}, opts(DType::i64)));
  io::save_safetensors(dir + "/weights.safetensors", weights);
  struct Case {
    std::string name;
    Dims shape;
  };
  const std::vector<Case> cases = {{"full299", {2, 3, 299, 299}}, {"min75", {1, 3, 75, 75}}, {"rect", {2, 3, 107, 93}}};
  Generator g(3);
  std::vector<Tensor> inputs;
  for (const Case& c : cases) {
    inputs.push_back(sub(mul(rand(c.shape, g), 2.0), 1.0));  // in [-1, 1] like the resized images
    io::save_safetensors(dir + "/" + c.name + ".in.safetensors", {{"x", inputs.back()}});
  }
  std::vector<std::string> names;
  for (const Case& c : cases) names.push_back(c.name);
  if (!parity::run_script("ref_inception.py", dir, names)) return;

  const FidInception net = FidInception::load(dir + "/weights.safetensors");
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto [pool3, logits] = net.features_and_logits(inputs[i]);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    MESSAGE(cases[i].name << ": " << inputs[i].size(0) << " images in " << s << " s");
    const auto ref = io::load_safetensors(dir + "/" + cases[i].name + ".out.safetensors");
    CHECK(pool3.sizes() == Dims{inputs[i].size(0), 2048});
    check_close(pool3, ref.at("pool3"), cases[i].name + " pool3");
    check_close(logits, ref.at("logits"), cases[i].name + " logits");
  }
  std::system(("rm -rf " + dir).c_str());
}

TEST_CASE("inception: the weight file") {
  const auto shapes = FidInception::parameter_shapes();
  CHECK(shapes.size() == 94 * 5 + 2);  // 94 BasicConv2d (conv.weight + 4 BN tensors) and fc
  CHECK(shapes.front().first == "Conv2d_1a_3x3.conv.weight");
  CHECK(shapes.front().second == Dims{32, 3, 3, 3});
  int64_t params = 0;
  for (const auto& [name, shape] : shapes)
    if (name.find("running_") == std::string::npos) params += shape.product();
  // torchvision's inception_v3(aux_logits=False, num_classes=1008) counts 23,850,960 parameters.
  CHECK(params == 23850960);

  const std::string dir = parity::make_tmpdir("inception_file");
  CHECK_THROWS_WITH_AS(FidInception::load(dir + "/nope.safetensors"),
                       doctest::Contains("convert_fid_inception.py pt_inception-2015-12-05-6726825d.pth"), Error);
  io::NamedTensors w = random_weights(1);
  for (auto& [name, t] : w)
    if (name == "Mixed_6c.branch7x7_2.conv.weight") t = zeros({160, 160, 7, 1});
  io::save_safetensors(dir + "/bad.safetensors", w);
  CHECK_THROWS_WITH_AS(FidInception::load(dir + "/bad.safetensors"),
                       doctest::Contains("Mixed_6c.branch7x7_2.conv.weight has shape [160,160,7,1]"), Error);
  std::system(("rm -rf " + dir).c_str());
}

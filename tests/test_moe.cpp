// Tests of nn/moe (docs/aurora-spec.md section 6): PyTorch parity of the whole layer (forward,
// both losses, first gradients w.r.t. x, w and every parameter), idle experts, routing statistics,
// the deterministic dispatch order, gradcheck and gradgradcheck in f64, and bad-input errors.
//
// Parity: this test materializes the module with a fixed seed, writes its state_dict with
// nn::save_state_dict and the inputs (x, w, grad_output gy, loss weights gz, gaux) with
// io/safetensors, and runs tests/parity/ref_moe.py (a DENSE evaluation: every expert on every
// token, top-1 by one-hot mask; router as a grouped conv1d), which writes its results back.
// Tolerances: element ok when |ours - ref| <= atol + rtol |ref|, the project defaults:
//   f32: rtol 1e-4, atol 1e-5 (measured worst: about 7% of the allowance);
//   f64: rtol 1e-9, atol 1e-11 (measured max |diff| about 1e-15: only summation order differs).
// Each case prints max |diff| per tensor.
// The test also REQUIREs that the smallest top-1/top-2 logit gap is far above the f32 rounding
// error, so both sides must route every token identically; expert ids are compared exactly.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "tests/model_parity.h"
#include "tests/parity/script_runner.h"
#include "autograd/engine.h"
#include "autograd/gradcheck.h"
#include "autograd/grad_mode.h"
#include "io/safetensors.h"
#include "nn/moe.h"
#include "nn/state_dict.h"
#include "tensor/ops.h"

#ifndef ENGINE_PYTHON
#error "ENGINE_PYTHON must be defined (tests/CMakeLists.txt does)"
#endif

using namespace engine;
using namespace engine::nn;

namespace {

struct Case {
  std::string name;
  MoEConfig cfg;
  int64_t B = 2, T = 4;
  DType dtype = DType::f32;
  uint64_t seed = 1;
  std::vector<double> router_bias;  // overrides router.bias (stored values) when not empty
};

MoEConfig make_config(int64_t C, int64_t H, int64_t E, int64_t w_dim, double lr_mul = 1.0) {
  MoEConfig c;
  c.channels = C;
  c.hidden = H;
  c.num_experts = E;
  c.w_dim = w_dim;
  c.lr_mul = lr_mul;
  return c;
}

struct Built {
  std::unique_ptr<MoE> moe;
  ParameterStore store;
  Tensor x, w, gy, gz, gaux;
};

// The module and inputs of a case (deterministic in the seed).
void build(const Case& c, Built& b) {
  b.moe = std::make_unique<MoE>(c.cfg);
  b.store.materialize(*b.moe, c.seed, TensorOptions{c.dtype, Device::cpu(), memory::Kind::param});
  if (!c.router_bias.empty()) {
    autograd::NoGradGuard ng;
    copy_(b.moe->router.bias.value, from_vector(c.router_bias, {c.cfg.num_experts}, opts(c.dtype)));
  }
  Generator g(c.seed + 1000);
  b.x = randn({c.B, c.T, c.cfg.channels}, g, opts(c.dtype)).requires_grad_(true);
  b.w = randn({c.B, c.cfg.w_dim}, g, opts(c.dtype)).requires_grad_(true);
  b.gy = randn({c.B, c.T, c.cfg.channels}, g, opts(c.dtype));
  b.gz = scalar_tensor(0.7, opts(c.dtype));
  b.gaux = scalar_tensor(-1.3, opts(c.dtype));
}

using model_parity::max_abs;

std::string g_report;  // max errors per case, printed once per case

// ours (undefined = zeros) vs ref with the file's tolerance rule.
void check_close(const std::string& what, const Tensor& ours, const Tensor& ref, DType dt) {
  model_parity::check_close(what, ours, ref, dt, g_report);
}

const std::vector<Case>& parity_cases() {
  static const std::vector<Case> cases = [] {
    std::vector<Case> v;
    {
      Case c;  // a small layer, 4x4 pixels per image
      c.name = "basic";
      c.cfg = make_config(16, 24, 4, 8);
      c.B = 3, c.T = 16, c.seed = 11;
      v.push_back(c);
    }
    {
      Case c = v[0];  // the same in f64: only summation order may differ
      c.name = "basic_f64";
      c.dtype = DType::f64;
      v.push_back(c);
    }
    {
      Case c;  // experts 1 and 3 receive no token (bias -30 on their logits); lr_mul != 1
      c.name = "idle";
      c.cfg = make_config(8, 12, 5, 6, 0.5);
      c.B = 2, c.T = 9, c.seed = 5;
      // stored values; the effective bias is value * lr_mul
      c.router_bias = {4.0, -60.0, 4.0, -60.0, 3.0};
      v.push_back(c);
    }
    {
      Case c;  // wider, 8x8 pixels, 8 experts (several BLAS-sized segments)
      c.name = "wide";
      c.cfg = make_config(64, 128, 8, 32);
      c.B = 2, c.T = 64, c.seed = 3;
      v.push_back(c);
    }
    return v;
  }();
  return cases;
}

// Run every case through the reference once per process.
const std::string& parity_dir() {
  static std::string dir;
  static bool done = false;
  if (!done) {
    done = true;
    dir = parity::make_tmpdir("test_moe");
    std::vector<std::string> names;
    for (const Case& c : parity_cases()) {
      Built b;
      build(c, b);
      save_state_dict(*b.moe, dir + "/" + c.name + ".weights.safetensors");
      io::save_safetensors(dir + "/" + c.name + ".inputs.safetensors",
                           {{"x", b.x}, {"w", b.w}, {"gy", b.gy}, {"gz", b.gz}, {"gaux", b.gaux}},
                           {{"num_experts", std::to_string(c.cfg.num_experts)},
                            {"hidden", std::to_string(c.cfg.hidden)},
                            {"lr_mul", fmt::format("{:.17g}", c.cfg.lr_mul)},
                            {"demod_eps", fmt::format("{:.17g}", c.cfg.demod_eps)}});
      names.push_back(c.name);
    }
    if (!parity::run_script("ref_moe.py", dir, names)) dir.clear();
  }
  return dir;
}

void run_parity(const Case& c) {
  const std::string& dir = parity_dir();
  REQUIRE_MESSAGE(!dir.empty(), "the PyTorch reference did not run");
  INFO("case " << c.name);
  g_report.clear();
  const auto ref = io::load_safetensors(dir + "/" + c.name + ".out.safetensors");
  Built b;
  build(c, b);
  MoEOutput out = b.moe->forward(b.x, b.w);
  const int64_t E = c.cfg.num_experts;

  // Routing must be identical, and robust: the smallest top-1/top-2 gap far above rounding.
  const double gap = ref.at("out/top2_gap").item();
  REQUIRE_MESSAGE(gap > 1e-3, "case " << c.name << " has a near-tie in the router (gap " << gap << "); pick another seed");
  CHECK(out.expert_ids.dtype() == DType::i64);
  CHECK(out.expert_ids.to_vector() == ref.at("out/expert_ids").to_vector());
  // Routing statistics against the reference's one-hot count, and against a count of expert_ids.
  const std::vector<double> ref_counts = ref.at("out/counts").to_vector();  // [B, E]
  std::vector<int64_t> per_expert(size_t(E), 0);
  for (int64_t bb = 0; bb < c.B; ++bb)
    for (int64_t e = 0; e < E; ++e) {
      CHECK(out.tokens_per_image_expert[size_t(bb * E + e)] == int64_t(ref_counts[size_t(bb * E + e)]));
      per_expert[size_t(e)] += int64_t(ref_counts[size_t(bb * E + e)]);
    }
  CHECK(out.tokens_per_expert == per_expert);
  std::vector<int64_t> recount(size_t(E), 0);
  for (double id : out.expert_ids.to_vector()) ++recount[size_t(id)];
  CHECK(out.tokens_per_expert == recount);

  check_close("y", out.y, ref.at("out/y"), c.dtype);
  check_close("z_loss", out.z_loss, ref.at("out/z_loss"), c.dtype);
  check_close("aux_loss", out.aux_loss, ref.at("out/aux_loss"), c.dtype);
  // The combined loss with the default weights.
  const double want_loss = 1e-3 * ref.at("out/z_loss").item() + 1e-3 * ref.at("out/aux_loss").item();
  CHECK(out.loss.item() == doctest::Approx(want_loss).epsilon(c.dtype == DType::f64 ? 1e-12 : 1e-5));

  // First gradients of S = <y, gy> + gz L_z + gaux L_aux w.r.t. x, w and every parameter.
  TensorList inputs{b.x, b.w};
  std::vector<std::string> names{"x", "w"};
  for (auto& [name, p] : b.store.parameters()) {
    inputs.push_back(p->value);
    names.push_back(name);
  }
  const TensorList g = autograd::grad({out.y, out.z_loss, out.aux_loss}, inputs, {b.gy, b.gz, b.gaux}, false, true);
  REQUIRE(ref.size() == 7 + names.size());  // every parameter has a reference gradient
  for (size_t i = 0; i < names.size(); ++i) check_close("grad/" + names[i], g[i], ref.at("grad/" + names[i]), c.dtype);
  MESSAGE("MoE parity, case " << c.name << " (" << std::string(dtype_name(c.dtype)) << ", min top-2 gap " << gap << "):" << g_report);
}

}  // namespace

TEST_CASE("MoE: parameter names and counts") {
  MoE m(make_config(8, 12, 3, 6));
  std::vector<std::string> names;
  for (auto& [n, p] : m.named_parameters()) names.push_back(n);
  const std::vector<std::string> want = {
      "experts.0.w1.weight", "experts.0.w1.bias", "experts.0.w2.weight", "experts.0.w2.bias",
      "experts.1.w1.weight", "experts.1.w1.bias", "experts.1.w2.weight", "experts.1.w2.bias",
      "experts.2.w1.weight", "experts.2.w1.bias", "experts.2.w2.weight", "experts.2.w2.bias",
      "router.weight",       "router.bias",       "router.style.weight", "router.style.bias"};
  CHECK(names == want);
  // experts: 3 * (8*24 + 24 + 12*8 + 8); router: 3*8 + 3 + 8*6 + 8
  CHECK(m.num_parameters() == 3 * (8 * 24 + 24 + 12 * 8 + 8) + 3 * 8 + 3 + 8 * 6 + 8);
  // The released layer: 512 -> 2*2048 -> 512 GEGLU is about 3.15 M parameters (spec 6).
  MoE big(make_config(512, 2048, 1, 1024));
  const int64_t expert = big.experts.items[0]->w1.weight.shape.product() + 2 * 2048 +
                         big.experts.items[0]->w2.weight.shape.product() + 512;
  CHECK(expert == 3150336);
}

TEST_CASE("MoE parity with PyTorch: basic f32") { run_parity(parity_cases()[0]); }
TEST_CASE("MoE parity with PyTorch: basic f64") { run_parity(parity_cases()[1]); }
TEST_CASE("MoE parity with PyTorch: idle experts (zero tokens), lr_mul 0.5") {
  const Case& c = parity_cases()[2];
  run_parity(c);
  // The forced routing really leaves experts 1 and 3 idle.
  Built b;
  build(c, b);
  MoEOutput out = b.moe->forward(b.x, b.w);
  CHECK(out.tokens_per_expert[1] == 0);
  CHECK(out.tokens_per_expert[3] == 0);
  CHECK(out.tokens_per_expert[0] + out.tokens_per_expert[2] + out.tokens_per_expert[4] == c.B * c.T);
  CHECK(out.tokens_per_expert[0] > 0);
  CHECK(out.tokens_per_expert[2] > 0);
  // backward() into the flat gradient buffer: idle experts' gradients are exactly zero, the
  // active ones are not.
  autograd::backward({out.y, out.loss}, {b.gy, scalar_tensor(1.0)});
  for (auto& [name, p] : b.store.parameters()) {
    const bool idle = name.rfind("experts.1.", 0) == 0 || name.rfind("experts.3.", 0) == 0;
    const double m = max_abs(p->value.grad());
    if (idle)
      CHECK_MESSAGE(m == 0.0, name);
    else
      CHECK_MESSAGE(m > 0.0, name);
  }
}
TEST_CASE("MoE parity with PyTorch: wide f32 (64 channels, 8 experts, 8x8 tokens)") { run_parity(parity_cases()[3]); }

TEST_CASE("MoE: the dispatch is a stable sort by expert id") {
  Case c;
  c.cfg = make_config(8, 8, 4, 4);
  c.B = 3, c.T = 25, c.seed = 9;
  Built b;
  build(c, b);
  const MoERouting rt = b.moe->route(b.x, b.w);
  const std::vector<double> ids = rt.expert_ids.to_vector();
  const int64_t N = c.B * c.T;
  REQUIRE(int64_t(rt.perm.size()) == N);
  for (int64_t j = 1; j < N; ++j) {
    const double a = ids[size_t(rt.perm[size_t(j - 1)])], z = ids[size_t(rt.perm[size_t(j)])];
    CHECK((a < z || (a == z && rt.perm[size_t(j - 1)] < rt.perm[size_t(j)])));
  }
  for (int64_t n = 0; n < N; ++n) CHECK(rt.perm[size_t(rt.inv_perm[size_t(n)])] == n);
  for (int64_t e = 0; e < 4; ++e) CHECK(rt.offsets[size_t(e + 1)] - rt.offsets[size_t(e)] == rt.tokens_per_expert[size_t(e)]);
  // p is a softmax of r, and e* its argmax.
  const std::vector<double> p = rt.probs.to_vector();
  for (int64_t n = 0; n < N; ++n) {
    double s = 0, best = -1;
    int64_t arg = 0;
    for (int64_t e = 0; e < 4; ++e) {
      const double v = p[size_t(n * 4 + e)];
      s += v;
      if (v > best) best = v, arg = e;
    }
    CHECK(s == doctest::Approx(1.0).epsilon(1e-6));
    CHECK(arg == int64_t(ids[size_t(n)]));
  }
  // Same inputs, same routing and output (bit-exact).
  MoEOutput o1 = b.moe->forward(b.x, b.w), o2 = b.moe->forward(b.x, b.w);
  CHECK(o1.y.to_vector() == o2.y.to_vector());
}

namespace {
// The whole layer as one function of (x, w, params...) for gradcheck: [y, z, aux, loss] flattened.
std::string check_grads(const Case& c, bool second_order) {
  Built b;
  build(c, b);
  // Routing must not flip under the eps = 1e-6 perturbations of gradcheck.
  {
    autograd::NoGradGuard ng;
    const MoERouting rt = b.moe->route(b.x, b.w);
    const std::vector<double> r = rt.logits.to_vector();
    const int64_t E = c.cfg.num_experts;
    double gap = INFINITY;
    for (size_t n = 0; n * size_t(E) < r.size(); ++n) {
      std::vector<double> row(r.begin() + long(n * E), r.begin() + long((n + 1) * E));
      std::sort(row.rbegin(), row.rend());
      gap = std::min(gap, row[0] - row[1]);
    }
    REQUIRE_MESSAGE(gap > 1e-3, "near-tie in the router (gap " << gap << ")");
  }
  TensorList inputs{b.x, b.w};
  for (auto& [name, p] : b.store.parameters()) inputs.push_back(p->value);
  MoE* m = b.moe.get();
  auto f = [m](const TensorList& in) {
    MoEOutput o = m->forward(in[0], in[1]);
    return cat({reshape(o.y, {-1}), reshape(o.z_loss, {1}), reshape(o.aux_loss, {1}), reshape(o.loss, {1})}, 0);
  };
  return second_order ? autograd::gradgradcheck(f, inputs) : autograd::gradcheck(f, inputs);
}

Case tiny_case(bool idle) {
  Case c;
  c.cfg = make_config(4, 6, 3, 5);
  c.B = 2, c.T = 5, c.seed = 21;
  c.dtype = DType::f64;
  if (idle) c.router_bias = {3.0, -40.0, 3.0};  // expert 1 idle
  return c;
}
}  // namespace

TEST_CASE("MoE gradcheck (f64, B=2 T=5 C=4 H=6 E=3), output and both losses") {
  CHECK(check_grads(tiny_case(false), false) == "");
  CHECK(check_grads(tiny_case(true), false) == "");
}

TEST_CASE("MoE gradgradcheck (f64, tiny): double backward through dispatch, gate and losses") {
  CHECK(check_grads(tiny_case(false), true) == "");
}

TEST_CASE("MoE: a single expert is a GEGLU FFN scaled by p = 1") {
  Case c;
  c.cfg = make_config(6, 5, 1, 3);
  c.B = 2, c.T = 3, c.seed = 4;
  Built b;
  build(c, b);
  MoEOutput o = b.moe->forward(b.x, b.w);
  const Tensor want = b.moe->experts.items[0]->forward(reshape(b.x, {6, 6}));
  const std::vector<double> y = o.y.to_vector(), yw = want.to_vector();
  for (size_t i = 0; i < y.size(); ++i) CHECK(y[i] == doctest::Approx(yw[i]).epsilon(1e-6));
  CHECK(o.aux_loss.item() == doctest::Approx(1.0));  // E^2 * f * P = 1 * 1 * 1
  // With one expert lse = r, so L_z = mean(r^2).
  const MoERouting rt = b.moe->route(b.x, b.w);
  double z = 0;
  for (double v : rt.logits.to_vector()) z += v * v / 6.0;
  CHECK(o.z_loss.item() == doctest::Approx(z).epsilon(1e-5));
}

TEST_CASE("MoE: bad inputs are reported") {
  MoE m(make_config(8, 4, 2, 3));
  ParameterStore store;
  store.materialize(m, 1);
  Generator g(1);
  CHECK_THROWS_WITH_AS(m.forward(randn({2, 5, 7}, g), randn({2, 3}, g)), doctest::Contains("expected tokens [B, T, 8]"),
                       Error);
  CHECK_THROWS_WITH_AS(m.forward(randn({2, 5, 8}, g), randn({3, 3}, g)), doctest::Contains("expected w [2, 3]"), Error);
  CHECK_THROWS_WITH_AS(m.forward(randn({2, 0, 8}, g), randn({2, 3}, g)), doctest::Contains("empty"), Error);
  CHECK_THROWS_WITH_AS(MoE(make_config(8, 4, 0, 3)), doctest::Contains("num_experts"), Error);
}

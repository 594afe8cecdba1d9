// Tests of nn/attention (docs/aurora-spec.md section 5, quirk 11.2):
//   * the L2 logits against a naive double loop (-||q - k|| / sqrt(d)), their value and gradient
//     at coincident q = k (Note [L2 attention logits]), finite f32 gradients under cancellation;
//   * gradcheck (f64) of l2_attention, also with coincident queries and keys, and gradgradcheck
//     (f64) of l2_attention at coincidence and of SelfAttention (R1 double-backs through attention);
//   * PyTorch parity (tests/parity/ref_attention.py, torch.cdist logits, grouped-conv modulation,
//     F.conv2d 1x1 convs) of SelfAttention, CrossAttention, AttentionBlock (dense GEGLU FFN) and
//     ResidualAttn: forward and the first gradients w.r.t. the inputs x, w, t_seq and EVERY
//     parameter. All parameters are perturbed away from their initial values first (the zero-init
//     proj_out, unit LayerNorm weights...), so no gradient is trivially zero;
//   * names, released parameter counts (spec 10, with the MoE of nn/moe.h plugged in), the
//     zero-init identity of ResidualAttn, and error messages.
// Tolerances: element ok when |ours - ref| <= atol + rtol |ref|;
//   f32: rtol 1e-4, atol 1e-5 (the project default);  f64: rtol 1e-9, atol 1e-11.
// Both sides differ in summation order, and in the logits: cdist vs our GEMM form with eps = 1e-6
// under the square root (a logit shift of ~d^-1/2 eps / (2 ||q - k||), ~1e-8 here: fine for f32,
// so the f32 cases use the default eps; the f64 cases use eps = 1e-14, see kF64ParityEps). Each
// case prints max |diff| and the worst fraction of the allowance per tensor.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "tests/model_parity.h"
#include "tests/parity/script_runner.h"
#include "autograd/engine.h"
#include "autograd/gradcheck.h"
#include "autograd/grad_mode.h"
#include "io/safetensors.h"
#include "nn/attention.h"
#include "nn/moe.h"
#include "nn/state_dict.h"
#include "tensor/ops.h"

#ifndef ENGINE_PYTHON
#error "ENGINE_PYTHON must be defined (tests/CMakeLists.txt does)"
#endif

using namespace engine;
using namespace engine::nn;

namespace {

using model_parity::max_abs;

bool all_finite(const Tensor& t) {
  for (double v : t.to_vector())
    if (!std::isfinite(v)) return false;
  return true;
}

// Moves every parameter away from its initial value: p += scale * N(0, 1) / lr_mul (stored units,
// Note [equalized lr]), so zero-initialised weights and unit LayerNorm weights become generic.
void perturb_parameters(ParameterStore& store, uint64_t seed, double scale) {
  autograd::NoGradGuard ng;
  Generator g(seed);
  for (auto& [name, p] : store.parameters()) {
    const Tensor noise = randn(p->value.sizes(), g, opts(p->value.dtype()));
    copy_(p->value, add(p->value, mul(noise, scale / p->lr_mul)));
  }
}

// ---- Parity harness ---------------------------------------------------------------------------

enum class Kind { self, cross, block, resattn };
const char* kind_name(Kind k) {
  switch (k) {
    case Kind::self: return "self";
    case Kind::cross: return "cross";
    case Kind::block: return "block";
    case Kind::resattn: return "resattn";
  }
  return "?";
}

struct Case {
  std::string name;
  Kind kind = Kind::self;
  AttentionConfig cfg;
  int64_t B = 2, T = 8, L = 5;   // tokens T (= H*W for resattn), text tokens L
  int64_t C = 0, Hpx = 0, Wpx = 0, depth = 1, groups = 1;  // resattn
  int64_t hidden = 24;           // dense GEGLU
  double gain = 0.3;
  DType dtype = DType::f32;
  uint64_t seed = 1;
};

AttentionConfig make_cfg(int64_t width, int64_t heads, int64_t head_dim, int64_t context_dim, int64_t w_dim,
                         double lr_mul = 1.0) {
  AttentionConfig c;
  c.width = width;
  c.heads = heads;
  c.head_dim = head_dim;
  c.context_dim = context_dim;
  c.w_dim = w_dim;
  c.lr_mul = lr_mul;
  return c;
}

struct Built {
  std::unique_ptr<Module> module;
  std::function<Tensor(const Tensor&, const Tensor&, const Tensor&)> fwd;  // (x, w, t) -> y
  ParameterStore store;
  Tensor x, w, t, gy;
};

void build(const Case& c, Built& b) {
  switch (c.kind) {
    case Kind::self: {
      auto m = std::make_unique<SelfAttention>(c.cfg);
      SelfAttention* p = m.get();
      b.fwd = [p](const Tensor& x, const Tensor& w, const Tensor&) { return p->forward(x, w); };
      b.module = std::move(m);
      break;
    }
    case Kind::cross: {
      auto m = std::make_unique<CrossAttention>(c.cfg);
      CrossAttention* p = m.get();
      b.fwd = [p](const Tensor& x, const Tensor&, const Tensor& t) { return p->forward(x, t); };
      b.module = std::move(m);
      break;
    }
    case Kind::block: {
      auto m = std::make_unique<AttentionBlock>(c.cfg, dense_geglu_ffn(c.hidden));
      AttentionBlock* p = m.get();
      b.fwd = [p](const Tensor& x, const Tensor& w, const Tensor& t) { return p->forward(x, w, t).x; };
      b.module = std::move(m);
      break;
    }
    case Kind::resattn: {
      ResidualAttnConfig rc;
      rc.channels = c.C;
      rc.depth = c.depth;
      rc.groups = c.groups;
      rc.gain = c.gain;
      rc.attn = c.cfg;
      auto m = std::make_unique<ResidualAttn>(rc, dense_geglu_ffn(c.hidden));
      ResidualAttn* p = m.get();
      b.fwd = [p](const Tensor& x, const Tensor& w, const Tensor& t) { return p->forward(x, w, t).x; };
      b.module = std::move(m);
      break;
    }
  }
  b.store.materialize(*b.module, c.seed, TensorOptions{c.dtype, Device::cpu(), memory::Kind::param});
  perturb_parameters(b.store, c.seed + 7, 0.3);
  Generator g(c.seed + 1000);
  const TensorOptions o = opts(c.dtype);
  const Dims xs = c.kind == Kind::resattn ? Dims{c.B, c.C, c.Hpx, c.Wpx} : Dims{c.B, c.T, c.cfg.width};
  b.x = randn(xs, g, o).requires_grad_(true);
  if (c.kind != Kind::cross) b.w = randn({c.B, c.cfg.w_dim}, g, o).requires_grad_(true);
  if (c.kind != Kind::self) b.t = randn({c.B, c.L, c.cfg.context_dim}, g, o).requires_grad_(true);
  b.gy = randn(xs, g, o);
}

std::string g_report;

void check_close(const std::string& what, const Tensor& ours, const Tensor& ref, DType dt) {
  model_parity::check_close(what, ours, ref, dt, g_report);
}

// The f64 parity cases compare at rtol 1e-9, below the effect of the default eps (a logit shift
// of ~1e-8 at the small distances of these tiny heads), so they run with eps = 1e-14: at f64
// tolerance they test the algebra; the f32 cases (default eps) and the tests above cover eps.
constexpr double kF64ParityEps = 1e-14;

const std::vector<Case>& parity_cases() {
  static const std::vector<Case> cases = [] {
    std::vector<Case> v;
    {
      Case c;  // 30 tokens: torch.cdist takes its GEMM path (> 25 rows), as at real sizes
      c.name = "self";
      c.kind = Kind::self;
      c.cfg = make_cfg(16, 2, 8, 12, 6);
      c.B = 2, c.T = 30, c.seed = 11;
      v.push_back(c);
    }
    {
      Case c = v[0];  // few tokens: cdist's direct path
      c.name = "self_f64";
      c.dtype = DType::f64;
      c.cfg.eps = kF64ParityEps;
      c.T = 7;
      v.push_back(c);
    }
    {
      Case c;  // the released widths: 8 heads x 64, w 1024, 8x8 pixels as tokens
      c.name = "self_wide";
      c.kind = Kind::self;
      c.cfg = make_cfg(512, 8, 64, 1024, 1024);
      c.B = 2, c.T = 64, c.seed = 12;
      v.push_back(c);
    }
    {
      Case c;  // inner width (3 x 4) differs from the token width: the projections must map it
      c.name = "cross";
      c.kind = Kind::cross;
      c.cfg = make_cfg(10, 3, 4, 12, 6, 0.5);
      c.B = 2, c.T = 9, c.L = 7, c.seed = 13;
      v.push_back(c);
    }
    {
      Case c;  // released widths: 76 text tokens of 1024
      c.name = "cross_wide";
      c.kind = Kind::cross;
      c.cfg = make_cfg(512, 8, 64, 1024, 1024);
      c.B = 2, c.T = 64, c.L = 76, c.seed = 14;
      v.push_back(c);
    }
    {
      Case c;
      c.name = "block";
      c.kind = Kind::block;
      c.cfg = make_cfg(16, 2, 8, 12, 6, 0.5);
      c.B = 2, c.T = 9, c.L = 5, c.hidden = 24, c.seed = 15;
      v.push_back(c);
    }
    {
      Case c = v.back();
      c.name = "block_f64";
      c.dtype = DType::f64;
      c.cfg.eps = kF64ParityEps;
      v.push_back(c);
    }
    {
      Case c;  // 24 channels in 8 groups, 4x5 pixels, two blocks
      c.name = "resattn";
      c.kind = Kind::resattn;
      c.cfg = make_cfg(16, 2, 8, 12, 6);
      c.C = 24, c.Hpx = 4, c.Wpx = 5, c.T = 20, c.depth = 2, c.groups = 8, c.hidden = 20;
      c.B = 2, c.L = 6, c.seed = 16;
      v.push_back(c);
    }
    {
      Case c;  // the released 64x64 stage's module (C 256, GroupNorm 32, depth 1) with a dense
               // GEGLU FFN 512 -> 2 x 2048 -> 512 in place of the MoE, at 8x8 pixels
      c.name = "resattn_wide";
      c.kind = Kind::resattn;
      c.cfg = make_cfg(512, 8, 64, 1024, 1024);
      c.C = 256, c.Hpx = 8, c.Wpx = 8, c.T = 64, c.depth = 1, c.groups = 32, c.hidden = 2048;
      c.B = 2, c.L = 76, c.seed = 17;
      v.push_back(c);
    }
    return v;
  }();
  return cases;
}

const std::string& parity_dir() {
  static std::string dir;
  static bool done = false;
  if (!done) {
    done = true;
    dir = parity::make_tmpdir("test_attention");
    std::vector<std::string> names;
    for (const Case& c : parity_cases()) {
      Built b;
      build(c, b);
      save_state_dict(*b.module, dir + "/" + c.name + ".weights.safetensors");
      io::NamedTensors in{{"x", b.x}, {"gy", b.gy}};
      if (b.w.defined()) in.push_back({"w", b.w});
      if (b.t.defined()) in.push_back({"t", b.t});
      io::save_safetensors(dir + "/" + c.name + ".inputs.safetensors", in,
                           {{"kind", kind_name(c.kind)},
                            {"heads", std::to_string(c.cfg.heads)},
                            {"head_dim", std::to_string(c.cfg.head_dim)},
                            {"lr_mul", fmt::format("{:.17g}", c.cfg.lr_mul)},
                            {"demod_eps", fmt::format("{:.17g}", c.cfg.demod_eps)},
                            {"hidden", std::to_string(c.hidden)},
                            {"groups", std::to_string(c.groups)},
                            {"gain", fmt::format("{:.17g}", c.gain)},
                            {"depth", std::to_string(c.depth)}});
      names.push_back(c.name);
    }
    if (!parity::run_script("ref_attention.py", dir, names)) dir.clear();
    for (const std::string& n : names) {  // the wide cases' weights are tens of MB
      std::remove((dir + "/" + n + ".weights.safetensors").c_str());
      std::remove((dir + "/" + n + ".inputs.safetensors").c_str());
    }
  }
  return dir;
}

void run_parity(const std::string& name) {
  const Case* cp = nullptr;
  for (const Case& c : parity_cases())
    if (c.name == name) cp = &c;
  REQUIRE(cp != nullptr);
  const Case& c = *cp;
  const std::string& dir = parity_dir();
  REQUIRE_MESSAGE(!dir.empty(), "the PyTorch reference did not run");
  INFO("case " << c.name);
  g_report.clear();
  const std::string out_path = dir + "/" + c.name + ".out.safetensors";
  const auto ref = io::load_safetensors(out_path);
  std::remove(out_path.c_str());
  Built b;
  build(c, b);
  const Tensor y = b.fwd(b.x, b.w, b.t);
  check_close("y", y, ref.at("out/y"), c.dtype);

  TensorList inputs{b.x};
  std::vector<std::string> names{"x"};
  if (b.w.defined()) inputs.push_back(b.w), names.push_back("w");
  if (b.t.defined()) inputs.push_back(b.t), names.push_back("t");
  for (auto& [pname, p] : b.store.parameters()) {
    inputs.push_back(p->value);
    names.push_back(pname);
  }
  const TensorList g = autograd::grad({y}, inputs, {b.gy}, false, true);
  REQUIRE(ref.size() == 1 + names.size());  // every input and parameter has a reference gradient
  for (size_t i = 0; i < names.size(); ++i) {
    // Every gradient is non-trivial (parameters were perturbed), so a dropped path cannot pass.
    CHECK_MESSAGE(max_abs(ref.at("grad/" + names[i])) > 0, "reference gradient of " << names[i] << " is zero");
    check_close("grad/" + names[i], g[i], ref.at("grad/" + names[i]), c.dtype);
  }
  MESSAGE("attention parity, case " << c.name << " (" << std::string(dtype_name(c.dtype)) << "):" << g_report);
}

// ---- Naive L2 logits --------------------------------------------------------------------------

// -sqrt(||q_i - k_j||^2 + eps) / sqrt(d) by a double loop over [B, T, heads, d] tensors ->
// [B, heads, Tq, Tk] (eps = 0: the plain distance of spec 5.1).
std::vector<double> naive_logits(const Tensor& q, const Tensor& k, double eps) {
  const int64_t B = q.size(0), Tq = q.size(1), H = q.size(2), d = q.size(3), Tk = k.size(1);
  const std::vector<double> qv = q.to_vector(), kv = k.to_vector();
  std::vector<double> out;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Tq; ++i)
        for (int64_t j = 0; j < Tk; ++j) {
          double s = 0;
          for (int64_t c = 0; c < d; ++c) {
            const double diff = qv[size_t(((b * Tq + i) * H + h) * d + c)] - kv[size_t(((b * Tk + j) * H + h) * d + c)];
            s += diff * diff;
          }
          out.push_back(-std::sqrt(s + eps) / std::sqrt(double(d)));
        }
  return out;
}

double max_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
  return worst;
}

}  // namespace

// ---- L2 attention core ------------------------------------------------------------------------

TEST_CASE("l2_attention_logits: -||q - k|| / sqrt(d), plain distance, against a double loop") {
  Generator g(3);
  for (DType dt : {DType::f32, DType::f64}) {
    const Tensor q = randn({2, 5, 3, 8}, g, opts(dt)), k = randn({2, 7, 3, 8}, g, opts(dt));
    const Tensor l = l2_attention_logits(q, k);
    REQUIRE(l.sizes() == Dims{2, 3, 5, 7});
    const std::vector<double> ours = l.to_vector();
    // The same function (eps under the root): only rounding differs (f32: |q|^2 ~ 8, cancellation).
    CHECK(max_diff(ours, naive_logits(q, k, kL2AttentionEps)) < (dt == DType::f64 ? 1e-13 : 2e-6));
    // The plain distance of spec 5.1: eps shifts a logit by ~eps / (2 ||q - k|| sqrt(d)).
    CHECK(max_diff(ours, naive_logits(q, k, 0.0)) < (dt == DType::f64 ? 1e-6 : 3e-6));
    // Not squared: doubling q - k doubles the logit.
    const Tensor l2 = l2_attention_logits(mul(q, 2.0), mul(k, 2.0));
    const std::vector<double> twice = l2.to_vector();
    for (size_t i = 0; i < ours.size(); i += 17) CHECK(twice[i] == doctest::Approx(2 * ours[i]).epsilon(1e-5));
  }
}

TEST_CASE("l2_attention_logits at coincident q = k: value -sqrt(eps / d), gradient exactly 0") {
  // Small integers / powers of two: |q|^2 + |k|^2 - 2 q.k is exact, so u = c eps exactly.
  const int64_t d = 4;
  const Tensor q = from_vector({1, -2, 0.5, 3}, {1, 1, 1, d}, opts(DType::f64)).requires_grad_(true);
  const Tensor k = from_vector({1, -2, 0.5, 3, 0, 1, 1, -1}, {1, 2, 1, d}, opts(DType::f64)).requires_grad_(true);
  const Tensor l = l2_attention_logits(q, k);
  const std::vector<double> lv = l.to_vector();
  CHECK(lv[0] == doctest::Approx(-std::sqrt(kL2AttentionEps / d)).epsilon(1e-7));
  // Row 2: ||(1, -3, -0.5, 4)|| = sqrt(26.25); the eps shifts it by ~eps / (2 * 5.1 * 2).
  CHECK(lv[1] == doctest::Approx(-std::sqrt(26.25 + kL2AttentionEps) / 2).epsilon(1e-12));
  const TensorList g = autograd::grad({l}, {q, k}, {from_vector({1.0, 0.0}, {1, 1, 1, 2}, opts(DType::f64))});
  CHECK(max_abs(g[0]) < 1e-12);  // d l_00 / dq at q = k: -(q - k) / sqrt((||q - k||^2 + eps) d) = 0
  CHECK(max_abs(g[1]) < 1e-12);
  // Second order: the Hessian of -sqrt(||q - k||^2 + eps) / sqrt(d) w.r.t. q at q = k is
  // -I / sqrt(eps d): finite (1/sqrt(eps) = 1000 here).
  const Tensor l_again = l2_attention_logits(q, k);
  const TensorList g1 = autograd::grad({l_again}, {q}, {from_vector({1.0, 0.0}, {1, 1, 1, 2}, opts(DType::f64))}, true);
  const TensorList g2 = autograd::grad({sum(mul(g1[0], from_vector({1, 0, 0, 0}, {1, 1, 1, d}, opts(DType::f64))))}, {q});
  const std::vector<double> h = g2[0].to_vector();
  CHECK(h[0] == doctest::Approx(-1.0 / std::sqrt(kL2AttentionEps * d)).epsilon(1e-9));
  CHECK(std::fabs(h[1]) < 1e-9);
}

TEST_CASE("l2_attention: f32 gradients stay finite where the GEMM form cancels (q = k, |q| ~ 100)") {
  // |q|^2 ~ 9000 here: the f32 rounding of u = c (|q|^2 + |k|^2 - 2 q.k + eps) is ~1e-3 c, far
  // above c eps, so at q = k the computed u is noise of either sign. The clamp of Note [L2
  // attention logits] keeps the sqrt argument >= c eps / 2: every gradient is finite, and each
  // |dl_ij/dq_i| <= 2 c (|q_i| + |k_j|) / (2 sqrt(c eps / 2)).
  Generator g(5);
  const int64_t T = 6, d = 64;
  const Tensor base = mul(randn({1, T, 2, d}, g, opts(DType::f32)), 12.0);
  const Tensor q = base.detach().requires_grad_(true);
  const Tensor k = clone(base).detach().requires_grad_(true);
  const Tensor v = randn({1, T, 2, d}, g, opts(DType::f32)).requires_grad_(true);
  const Tensor o = l2_attention(q, k, v);
  const Tensor go = randn(o.sizes(), g, opts(DType::f32));
  const TensorList gr = autograd::grad({o}, {q, k, v}, {go});
  for (const Tensor& t : gr) CHECK(all_finite(t));
  const Tensor l = l2_attention_logits(q, k);
  CHECK(all_finite(l));
  const TensorList gl = autograd::grad({l}, {q, k}, {ones_like(l)});
  CHECK(all_finite(gl[0]));
  CHECK(all_finite(gl[1]));
  double norm_max = 0;  // the largest |q_i| of any head
  const std::vector<double> bv = base.to_vector();
  for (int64_t r = 0; r < 2 * T; ++r) {
    double s = 0;
    for (int64_t c = 0; c < d; ++c) s += bv[size_t(r * d + c)] * bv[size_t(r * d + c)];
    norm_max = std::max(norm_max, std::sqrt(s));
  }
  const double c = 1.0 / double(d);
  const double bound = double(T) * 2 * c * 2 * norm_max / (2 * std::sqrt(c * kL2AttentionEps / 2));
  CHECK(max_abs(gl[0]) <= bound);
  CHECK(max_abs(gl[1]) <= bound);
}

TEST_CASE("l2_attention gradcheck (f64): random, and with coincident and duplicated keys") {
  Generator g(7);
  const TensorOptions o = opts(DType::f64);
  const Tensor q = randn({2, 3, 2, 3}, g, o).requires_grad_(true);
  const Tensor k = randn({2, 4, 2, 3}, g, o).requires_grad_(true);
  const Tensor v = randn({2, 4, 2, 2}, g, o).requires_grad_(true);
  auto f = [](const TensorList& in) { return l2_attention(in[0], in[1], in[2]); };
  CHECK(autograd::gradcheck(f, {q, k, v}) == "");

  // Coincidences: key 0 = query 0 (every head, both batches), key 3 = query 2 in batch 1, and
  // keys 1 and 2 equal (a zero distance between keys does not matter, but two keys tied in the
  // softmax do). Values are multiples of 1/4 so the coincident squared distances are exactly 0.
  std::vector<double> qv(2 * 3 * 2 * 3), kv(2 * 4 * 2 * 3);
  for (size_t i = 0; i < qv.size(); ++i) qv[i] = double(int64_t(i * 7 % 11) - 5) / 4.0;
  for (size_t i = 0; i < kv.size(); ++i) kv[i] = double(int64_t(i * 5 % 13) - 6) / 4.0;
  auto qi = [](int64_t b, int64_t t, int64_t h, int64_t c) { return size_t(((b * 3 + t) * 2 + h) * 3 + c); };
  auto ki = [](int64_t b, int64_t t, int64_t h, int64_t c) { return size_t(((b * 4 + t) * 2 + h) * 3 + c); };
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t c = 0; c < 3; ++c) {
        kv[ki(b, 0, h, c)] = qv[qi(b, 0, h, c)];
        kv[ki(b, 2, h, c)] = kv[ki(b, 1, h, c)];
        if (b == 1) kv[ki(b, 3, h, c)] = qv[qi(b, 2, h, c)];
      }
  const Tensor qc = from_vector(qv, {2, 3, 2, 3}, o).requires_grad_(true);
  const Tensor kc = from_vector(kv, {2, 4, 2, 3}, o).requires_grad_(true);
  const Tensor vc = randn({2, 4, 2, 2}, g, o).requires_grad_(true);
  // The coincident logits are the eps value exactly (the set-up really is coincident).
  const std::vector<double> l = l2_attention_logits(qc, kc).to_vector();  // [2, 2, 3, 4]
  CHECK(l[0] == doctest::Approx(-std::sqrt(kL2AttentionEps / 3)).epsilon(1e-6));
  CHECK(l[((1 * 2 + 1) * 3 + 2) * 4 + 3] == doctest::Approx(-std::sqrt(kL2AttentionEps / 3)).epsilon(1e-6));
  CHECK(autograd::gradcheck(f, {qc, kc, vc}) == "");
  CHECK(autograd::gradgradcheck(f, {qc, kc, vc}) == "");
  // And the logits alone (the softmax does not hide anything).
  auto fl = [](const TensorList& in) { return l2_attention_logits(in[0], in[1]); };
  CHECK(autograd::gradcheck(fl, {qc, kc}) == "");
  CHECK(autograd::gradgradcheck(fl, {qc, kc}) == "");
}

TEST_CASE("SelfAttention gradgradcheck (f64, tiny): double backward w.r.t. h, w and every parameter") {
  Case c;
  c.kind = Kind::self;
  c.cfg = make_cfg(4, 2, 2, 3, 3, 0.5);
  c.B = 2, c.T = 3, c.seed = 31;
  c.dtype = DType::f64;
  Built b;
  build(c, b);
  TensorList inputs{b.x, b.w};
  for (auto& [name, p] : b.store.parameters()) inputs.push_back(p->value);
  SelfAttention* m = static_cast<SelfAttention*>(b.module.get());
  auto f = [m](const TensorList& in) { return m->forward(in[0], in[1]); };
  CHECK(autograd::gradcheck(f, inputs) == "");
  CHECK(autograd::gradgradcheck(f, inputs) == "");
}

TEST_CASE("ResidualAttn (with an AttentionBlock) gradcheck and gradgradcheck (f64, tiny)") {
  Case c;
  c.kind = Kind::resattn;
  c.cfg = make_cfg(4, 2, 2, 3, 3);
  c.C = 4, c.Hpx = 2, c.Wpx = 2, c.T = 4, c.depth = 1, c.groups = 2, c.hidden = 3;
  c.B = 2, c.L = 2, c.seed = 41;
  c.dtype = DType::f64;
  Built b;
  build(c, b);
  TensorList inputs{b.x, b.w, b.t};
  for (auto& [name, p] : b.store.parameters()) inputs.push_back(p->value);
  auto f = [&b](const TensorList& in) { return b.fwd(in[0], in[1], in[2]); };
  CHECK(autograd::gradcheck(f, inputs) == "");
  // Second order w.r.t. the inputs only (R1's first pass differentiates w.r.t. the image).
  CHECK(autograd::gradgradcheck(f, {b.x, b.w, b.t}) == "");
}

// ---- Parity ------------------------------------------------------------------------------------

TEST_CASE("SelfAttention parity with PyTorch: f32, 30 tokens") { run_parity("self"); }
TEST_CASE("SelfAttention parity with PyTorch: f64") { run_parity("self_f64"); }
TEST_CASE("SelfAttention parity with PyTorch: released widths (8 x 64 heads, w 1024), 64 tokens") {
  run_parity("self_wide");
}
TEST_CASE("CrossAttention parity with PyTorch: f32, lr_mul 0.5, inner width != token width") { run_parity("cross"); }
TEST_CASE("CrossAttention parity with PyTorch: released widths, 76 text tokens of 1024") { run_parity("cross_wide"); }
TEST_CASE("AttentionBlock parity with PyTorch (dense GEGLU FFN): f32") { run_parity("block"); }
TEST_CASE("AttentionBlock parity with PyTorch (dense GEGLU FFN): f64") { run_parity("block_f64"); }
TEST_CASE("ResidualAttn parity with PyTorch: depth 2, GroupNorm 8, 4x5 pixels") { run_parity("resattn"); }
TEST_CASE("ResidualAttn parity with PyTorch: released 64x64-stage widths (C 256, GN 32, 512 inner), 8x8") {
  run_parity("resattn_wide");
}

// ---- Structure ---------------------------------------------------------------------------------

TEST_CASE("ResidualAttn: parameter names (released order), zero-initialised proj_out gives out = 0.3 x") {
  ResidualAttnConfig rc;
  rc.channels = 8;
  rc.depth = 2;
  rc.groups = 4;
  rc.attn = make_cfg(4, 2, 2, 3, 5);
  ResidualAttn m(rc, dense_geglu_ffn(6));
  std::vector<std::string> names;
  for (auto& [n, p] : m.named_parameters()) names.push_back(n);
  const std::vector<std::string> block = {
      "norm1.weight",         "norm1.bias",         "self_attn.to_qk.weight",        "self_attn.to_v.weight",
      "self_attn.proj_out.weight", "self_attn.proj_out.bias", "self_attn.proj_out.style.weight",
      "self_attn.proj_out.style.bias", "norm2.weight", "norm2.bias", "cross_attn.to_q.weight",
      "cross_attn.to_kv.weight", "cross_attn.proj_out.weight", "cross_attn.proj_out.bias", "norm3.weight",
      "norm3.bias", "ff.w1.weight", "ff.w1.bias", "ff.w2.weight", "ff.w2.bias"};
  std::vector<std::string> want = {"norm.weight", "norm.bias", "proj_in.weight"};
  for (const char* b : {"block0.", "block1."})
    for (const auto& n : block) want.push_back(b + n);
  want.push_back("proj_out.weight");
  CHECK(names == want);
  ParameterStore store;
  store.materialize(m, 3);
  CHECK(store.find("proj_out.weight")->value.sizes() == Dims{8, 4, 1, 1});
  CHECK(store.find("proj_in.weight")->value.sizes() == Dims{4, 8, 1, 1});
  CHECK(store.find("block0.self_attn.to_qk.weight")->value.sizes() == Dims{8, 4});
  CHECK(store.find("block0.cross_attn.to_kv.weight")->value.sizes() == Dims{8, 3});
  CHECK(max_abs(store.find("proj_out.weight")->value) == 0.0);
  CHECK(store.find("block0.self_attn.proj_out.style.bias")->value.to_vector() == std::vector<double>(4, 1.0));
  Generator g(2);
  const Tensor x = randn({2, 8, 3, 3}, g), w = randn({2, 5}, g), t = randn({2, 4, 3}, g);
  const ResidualAttnOutput o = m.forward(x, w, t);
  CHECK(!o.loss.defined());  // the dense FFN has no auxiliary loss
  const std::vector<double> ov = o.x.to_vector(), xv = x.to_vector();
  for (size_t i = 0; i < ov.size(); ++i) CHECK(ov[i] == doctest::Approx(0.3 * xv[i]).epsilon(1e-7));
}

namespace {
// The MoE of nn/moe.h plugged into the FFN slot (what the synthesis network does).
FfnFactory moe_ffn(int64_t num_experts) {
  return [num_experts](Module& b, const AttentionConfig& c) -> FfnForward {
    MoEConfig mc;
    mc.channels = c.width;
    mc.hidden = 4 * c.width;
    mc.num_experts = num_experts;
    mc.w_dim = c.w_dim;
    mc.lr_mul = c.lr_mul;
    MoE& m = b.register_module<MoE>("moe", mc);
    return [&m](const Tensor& h, const Tensor& w) {
      MoEOutput o = m.forward(h, w);
      return FfnOutput{o.y, o.loss, o.expert_ids};
    };
  };
}
}  // namespace

TEST_CASE("ResidualAttn with the MoE FFN: released parameter counts (spec 10) and the summed MoE loss") {
  // Meta mode: nothing is allocated. Released stages: attention + MoE of 8x8 = 102.6 M
  // (3 modules of depth 2, C 1600, 4 experts), 64x64 = 108.7 M (2 modules of depth 1, C 256, 16 experts).
  auto stage = [](int64_t C, int64_t depth, int64_t experts) {
    ResidualAttnConfig rc;
    rc.channels = C;
    rc.depth = depth;
    rc.attn = AttentionConfig{};
    ResidualAttn m(rc, moe_ffn(experts));
    return m.num_parameters();
  };
  CHECK(std::llround(3 * stage(1600, 2, 4) / 1e5) == 1026);  // 102.6 M
  CHECK(std::llround(3 * stage(1024, 2, 8) / 1e5) == 1764);  // 176.4 M at 16x16
  CHECK(std::llround(2 * stage(512, 2, 16) / 1e5) == 2174);  // 217.4 M at 32x32
  CHECK(std::llround(2 * stage(256, 1, 16) / 1e5) == 1087);  // 108.7 M at 64x64
  {
    ResidualAttnConfig rc;
    rc.channels = 1600;
    rc.depth = 2;
    ResidualAttn m(rc, moe_ffn(4));
    bool found = false;
    for (auto& [n, p] : m.named_parameters()) found |= n == "block1.moe.experts.3.w1.weight";
    CHECK(found);  // the project's name, e.g. synthesis.b16.attn0.block1.moe.experts.3.w1.weight
  }
  // A small materialised module: its loss is the sum of the blocks' MoE losses.
  ResidualAttnConfig rc;
  rc.channels = 8;
  rc.depth = 2;
  rc.groups = 4;
  rc.attn = make_cfg(8, 2, 4, 6, 5);
  ResidualAttn m(rc, moe_ffn(3));
  ParameterStore store;
  store.materialize(m, 9);
  perturb_parameters(store, 10, 0.3);
  Generator g(4);
  const Tensor x = randn({2, 8, 3, 3}, g), w = randn({2, 5}, g), t = randn({2, 4, 6}, g);
  const ResidualAttnOutput o = m.forward(x, w, t);
  REQUIRE(o.loss.defined());
  // Recompute the blocks' losses by hand from the module's own pieces.
  Tensor h = m.proj_in.to_tokens(m.norm.forward(x));
  double want = 0;
  for (AttentionBlock* blk : m.blocks) {
    Tensor h1 = add(h, blk->self_attn.forward(blk->norm1.forward(h), w));
    h1 = add(h1, blk->cross_attn.forward(blk->norm2.forward(h1), t));
    const FfnOutput f = blk->ffn(blk->norm3.forward(h1), w);
    want += f.loss.item();
    h = add(h1, f.y);
  }
  CHECK(o.loss.item() == doctest::Approx(want).epsilon(1e-6));
  CHECK(o.loss.item() > 0);
}

TEST_CASE("attention: bad shapes and configs are reported") {
  AttentionConfig c = make_cfg(8, 2, 4, 6, 5);
  SelfAttention sa(c);
  CrossAttention ca(c);
  ParameterStore s1, s2;
  s1.materialize(sa, 1);
  s2.materialize(ca, 1);
  Generator g(1);
  CHECK_THROWS_WITH_AS(sa.forward(randn({2, 3, 7}, g), randn({2, 5}, g)), doctest::Contains("expected h [B, T, 8]"), Error);
  CHECK_THROWS_WITH_AS(sa.forward(randn({2, 3, 8}, g), randn({3, 5}, g)), doctest::Contains("expected w [2, 5]"), Error);
  CHECK_THROWS_WITH_AS(ca.forward(randn({2, 3, 8}, g), randn({2, 4, 5}, g)),
                       doctest::Contains("expected t_seq [B, T, 6]"), Error);
  CHECK_THROWS_WITH_AS(ca.forward(randn({2, 3, 8}, g), randn({1, 4, 6}, g)), doctest::Contains("batch of h"), Error);
  CHECK_THROWS_WITH_AS(l2_attention_logits(randn({1, 2, 2, 3}, g), randn({1, 2, 2, 4}, g)),
                       doctest::Contains("head dim"), Error);
  CHECK_THROWS_WITH_AS(l2_attention_logits(randn({1, 2, 2, 3}, g), randn({1, 2, 2, 3}, g), 0.0),
                       doctest::Contains("eps must be positive"), Error);
  CHECK_THROWS_WITH_AS(SelfAttention(make_cfg(8, 0, 4, 6, 5)), doctest::Contains("heads (0)"), Error);
  ResidualAttnConfig rc;
  rc.channels = 10;
  rc.groups = 4;
  rc.attn = c;
  CHECK_THROWS_WITH_AS(ResidualAttn(rc, dense_geglu_ffn(4)), doctest::Contains("not divisible into 4 groups"), Error);
  CHECK_THROWS_WITH_AS(AttentionBlock(c, FfnFactory()), doctest::Contains("no FFN factory"), Error);
}

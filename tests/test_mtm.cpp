// Tests of the modulated transformation module (nn/mtm.h; docs/aurora-spec.md section 4).
//  - At initialisation (sigma = beta = 0: offsets 0, mask 1) a ModulatedConv2d with MTM attached
//    equals the same ModulatedConv2d without it (same seed: MTM's parameters are registered last,
//    so the host's initial values are identical), to 1e-6 in f32.
//  - gradcheck (f64, B = 2, C = 3, 5x5) of the host conv with MTM w.r.t. x, w and every parameter,
//    with sigma and beta set non-zero so offsets and mask are generic (fractional offsets: the
//    bilinear sampling is smooth there; a kink would need a sample exactly on a grid line).
//  - Offsets/mask layout: offsets = o[:, :18], mask = 2 sigmoid(o[:, 18:]); names and counts.
//  - Parity with PyTorch (tests/parity/ref_mtm.py: the host conv and MTM written literally from
//    spec sections 3 and 4 with torchvision.ops.deform_conv2d, batch folded into channels): every
//    parameter perturbed by 0.3 N(0, 1) (so sigma, beta != 0: offsets of a fraction of a pixel,
//    generic mask), our state_dict and inputs written to safetensors, y and the gradients of
//    <y, gy> w.r.t. x, w and every parameter compared with the project tolerances
//    (f32: rtol 1e-4, atol 1e-5; f64: rtol 1e-9, atol 1e-11).
#include <doctest/doctest.h>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "autograd/engine.h"
#include "autograd/gradcheck.h"
#include "io/safetensors.h"
#include "nn/state_dict.h"
#include "autograd/grad_mode.h"
#include "nn/mtm.h"
#include "tensor/ops.h"

#ifndef ENGINE_PYTHON
#error "ENGINE_PYTHON must be defined (tests/CMakeLists.txt does)"
#endif

using namespace engine;
using namespace engine::nn;

namespace {
ModConvConfig host_config(int64_t cin, int64_t cout, int64_t w_dim, int64_t n) {
  ModConvConfig c;
  c.in_channels = cin, c.out_channels = cout, c.w_dim = w_dim, c.num_kernels = n;
  c.kernel_size = 3, c.demodulate = true, c.activation = Activation::lrelu;
  return c;
}
}  // namespace

TEST_CASE("MTM at initialisation equals the plain modulated conv (offsets 0, mask 1)") {
  for (int64_t n : {1, 2}) {
    ModulatedConv2d a(host_config(4, 5, 6, n)), b(host_config(4, 5, 6, n));
    MTM& mtm = b.attach_mtm<MTM>(4, 6);
    ParameterStore sa, sb;
    sa.materialize(a, 11);
    sb.materialize(b, 11);
    Generator g(3);
    const Tensor x = randn({2, 4, 6, 7}, g), w = randn({2, 6}, g);
    autograd::NoGradGuard ng;
    const auto [off, mask] = mtm.offsets_and_mask(x, w);
    CHECK(off.sizes() == Dims{2, 18, 6, 7});
    CHECK(mask.sizes() == Dims{2, 9, 6, 7});
    for (double v : off.to_vector()) CHECK(v == 0.0);
    for (double v : mask.to_vector()) CHECK(v == doctest::Approx(1.0).epsilon(1e-7));
    const auto ya = a.forward(x, w).to_vector(), yb = b.forward(x, w).to_vector();
    REQUIRE(ya.size() == yb.size());
    double md = 0;
    for (size_t i = 0; i < ya.size(); ++i) md = std::max(md, std::abs(ya[i] - yb[i]));
    MESSAGE("N = " << n << ": max |mtm - plain| = " << md);
    CHECK(md <= 1e-6);
  }
}

TEST_CASE("MTM names, parameter count, layout of offsets and mask") {
  ModulatedConv2d m(host_config(3, 2, 4, 1));
  MTM& mtm = m.attach_mtm<MTM>(3, 4);
  std::vector<std::string> names;
  for (auto& [nm, p] : m.named_parameters()) names.push_back(nm);
  CHECK(names == std::vector<std::string>{"weight", "bias", "style.weight", "style.bias", "mtm.out_scale", "mtm.out_bias",
                                          "mtm.offset_conv.weight", "mtm.offset_conv.style.weight",
                                          "mtm.offset_conv.style.bias"});
  CHECK(mtm.num_parameters() == 27 * 3 * 9 + 4 * 3 + 3 + 54);
  ParameterStore s;
  s.materialize(m, 2, TensorOptions{DType::f64, Device::cpu(), memory::Kind::param});
  Generator g(5);
  autograd::NoGradGuard ng;
  copy_(mtm.out_scale.value, randn({1, 27, 1, 1}, g, opts(DType::f64)));
  copy_(mtm.out_bias.value, randn({1, 27, 1, 1}, g, opts(DType::f64)));
  const Tensor x = randn({2, 3, 4, 4}, g, opts(DType::f64)), w = randn({2, 4}, g, opts(DType::f64));
  const auto o = add(mul(mtm.offset_conv.forward(x, w), mtm.out_scale.value), mtm.out_bias.value).to_vector();
  const auto [off, mask] = mtm.offsets_and_mask(x, w);
  const auto ov = off.to_vector(), mv = mask.to_vector();
  // o [2, 27, 4, 4]: offsets are channels 0..17, mask logits 18..26, per sample.
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t c = 0; c < 27; ++c)
      for (int64_t p = 0; p < 16; ++p) {
        const double v = o[size_t((b * 27 + c) * 16 + p)];
        if (c < 18)
          CHECK(ov[size_t((b * 18 + c) * 16 + p)] == v);
        else
          CHECK(mv[size_t((b * 9 + c - 18) * 16 + p)] == doctest::Approx(2.0 / (1.0 + std::exp(-v))));
      }
}

TEST_CASE("MTM gradcheck (f64, B = 2, C = 3, 5x5) with sigma, beta non-zero") {
  for (int64_t n : {1, 2}) {
    ModulatedConv2d m(host_config(3, 2, 4, n));
    MTM& mtm = m.attach_mtm<MTM>(3, 4);
    ParameterStore s;
    s.materialize(m, 7, TensorOptions{DType::f64, Device::cpu(), memory::Kind::param});
    Generator g(8);
    // Offsets of order 0.3 px and a generic mask.
    {
      autograd::NoGradGuard ng;
      copy_(mtm.out_scale.value, mul(randn({1, 27, 1, 1}, g, opts(DType::f64)), 0.3));
      copy_(mtm.out_bias.value, mul(randn({1, 27, 1, 1}, g, opts(DType::f64)), 0.3));
    }
    TensorList in = {randn({2, 3, 5, 5}, g, opts(DType::f64)).requires_grad_(true),
                     randn({2, 4}, g, opts(DType::f64)).requires_grad_(true)};
    for (auto& [nm, p] : s.parameters()) in.push_back(p->value);
    ModulatedConv2d* mp = &m;
    const std::string err = autograd::gradcheck([mp](const TensorList& i) { return mp->forward(i[0], i[1]); }, in);
    CHECK_MESSAGE(err.empty(), err);
  }
}

TEST_CASE("MTM errors") {
  CHECK_THROWS_AS(MTM(0, 4), Error);
  CHECK_THROWS_AS(MTM(3, 4, 2), Error);
  ModConvConfig c = host_config(3, 2, 4, 1);
  c.upsample = true;
  CHECK_THROWS_AS(ModulatedConv2d(c).attach_mtm<MTM>(3, 4), Error);
}

// ---- Parity with PyTorch ----------------------------------------------------------------------

namespace {

struct ParityCase {
  std::string name;
  int64_t cin, cout, w_dim, n, B, H;
  DType dtype;
  uint64_t seed;
};

struct ParityBuilt {
  std::unique_ptr<ModulatedConv2d> m;
  ParameterStore store;
  Tensor x, w, gy;
};

void build_parity(const ParityCase& c, ParityBuilt& b) {
  b.m = std::make_unique<ModulatedConv2d>(host_config(c.cin, c.cout, c.w_dim, c.n));
  b.m->attach_mtm<MTM>(c.cin, c.w_dim);
  b.store.materialize(*b.m, c.seed, TensorOptions{c.dtype, Device::cpu(), memory::Kind::param});
  Generator g(c.seed + 1);
  {
    autograd::NoGradGuard ng;
    for (auto& [name, p] : b.store.parameters()) add_(p->value, randn(p->shape, g, opts(c.dtype)), 0.3);
  }
  b.x = randn({c.B, c.cin, c.H, c.H}, g, opts(c.dtype)).requires_grad_(true);
  b.w = randn({c.B, c.w_dim}, g, opts(c.dtype)).requires_grad_(true);
  b.gy = randn({c.B, c.cout, c.H, c.H}, g, opts(c.dtype));
}

const std::vector<ParityCase>& parity_cases() {
  static const std::vector<ParityCase> v = {
      {"mtm_n1", 6, 5, 7, 1, 3, 6, DType::f32, 1},
      {"mtm_n2", 6, 5, 7, 2, 2, 7, DType::f32, 2},
      {"mtm_n4_wide", 16, 12, 8, 4, 2, 5, DType::f32, 3},
      {"mtm_n2_f64", 5, 4, 6, 2, 2, 5, DType::f64, 4},
  };
  return v;
}

// Writes every case, runs the reference once; returns the directory ("" on failure).
const std::string& parity_dir() {
  static std::string dir;
  static bool done = false;
  if (done) return dir;
  done = true;
  char tmpl[] = "/tmp/test_mtm_XXXXXX";
  const char* d = mkdtemp(tmpl);
  REQUIRE_MESSAGE(d != nullptr, "mkdtemp failed");
  dir = d;
  std::string cmd = std::string(ENGINE_PYTHON) + " " + ENGINE_SOURCE_DIR + "/tests/parity/ref_mtm.py " + dir;
  for (const ParityCase& c : parity_cases()) {
    ParityBuilt b;
    build_parity(c, b);
    save_state_dict(*b.m, dir + "/" + c.name + ".weights.safetensors");
    io::save_safetensors(dir + "/" + c.name + ".inputs.safetensors", {{"in/x", b.x}, {"in/w", b.w}, {"gy", b.gy}},
                         {{"config", "{}"}});
    cmd += " " + c.name;
  }
  const std::string log = dir + "/ref.log";
  const int rc = std::system((cmd + " > " + log + " 2>&1").c_str());
  if (rc != 0) {
    std::ifstream f(log);
    std::stringstream ss;
    ss << f.rdbuf();
    FAIL_CHECK("PyTorch reference failed (rc " << rc << "): " << cmd << "\n"
                                               << ss.str() << "\n(needs " ENGINE_PYTHON " with torch and torchvision)");
    dir.clear();
  }
  return dir;
}

std::string check_close(const std::string& what, const Tensor& ours_in, const Tensor& ref, DType dt) {
  const Tensor ours = ours_in.defined() ? ours_in : zeros(ref.sizes(), opts(ref.dtype()));
  REQUIRE_MESSAGE(ours.sizes() == ref.sizes(), what << ": shape " << ours.sizes().str() << " vs " << ref.sizes().str());
  const double rtol = dt == DType::f64 ? 1e-9 : 1e-4, atol = dt == DType::f64 ? 1e-11 : 1e-5;
  const std::vector<double> a = ours.to_vector(), r = ref.to_vector();
  double worst = 0, worst_abs = 0;
  size_t wi = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double diff = std::fabs(a[i] - r[i]);
    const double ratio = std::isnan(diff) ? INFINITY : diff / (atol + rtol * std::fabs(r[i]));
    if (ratio > worst) worst = ratio, wi = i;
    worst_abs = std::max(worst_abs, diff);
  }
  CHECK_MESSAGE(worst <= 1.0, what << ": element " << wi << " ours " << (a.empty() ? 0 : a[wi]) << " ref "
                                   << (r.empty() ? 0 : r[wi]) << " (worst/allowed " << worst << ")");
  char buf[200];
  std::snprintf(buf, sizeof buf, "\n  %-34s max|diff| %.3g  worst/allowed %.3f", what.c_str(), worst_abs, worst);
  return buf;
}

}  // namespace

TEST_CASE("MTM parity with PyTorch (torchvision deform_conv2d, batch folded into channels)") {
  for (const ParityCase& c : parity_cases()) {
    SUBCASE(c.name.c_str()) {
      const std::string& dir = parity_dir();
      REQUIRE_MESSAGE(!dir.empty(), "the PyTorch reference did not run");
      const auto ref = io::load_safetensors(dir + "/" + c.name + ".out.safetensors");
      ParityBuilt b;
      build_parity(c, b);
      const Tensor y = b.m->forward(b.x, b.w);
      std::string report = check_close("y", y, ref.at("out/y"), c.dtype);
      TensorList wrt = {b.x, b.w};
      std::vector<std::string> names = {"x", "w"};
      for (auto& [name, p] : b.store.parameters()) {
        wrt.push_back(p->value);
        names.push_back(name);
      }
      const TensorList g = autograd::grad({y}, wrt, {b.gy}, false, /*allow_unused=*/true);
      REQUIRE(ref.size() == 1 + names.size());
      for (size_t i = 0; i < names.size(); ++i)
        report += check_close("grad/" + names[i], g[i], ref.at("grad/" + names[i]), c.dtype);
      MESSAGE("parity " << c.name << ":" << report);
    }
  }
}

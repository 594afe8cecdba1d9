// End-to-end R1 parity (Note [R1 double backward], autograd/engine.h): the small discriminator of
// bench/small_disc.h, with the weights and input drawn by tests/parity/ref_r1.py, must give the
// same logits, input gradient g = dD/dx, penalty r1 = mean_b(sum g^2), and d r1 / d(every weight,
// every bias, x) as PyTorch, in f32 (the training dtype) and f64.
//
// Tolerance: element passes when |ours - ref| <= rtol |ref| + atol, with atol scaled by the
// largest |ref| of the tensor (R1 gradients are ~1e-3, so a fixed atol of 1e-5 would hide
// 1% errors): f32 rtol 1e-4, atol 1e-5 * max|ref|; f64 rtol 1e-9, atol 1e-11 * max|ref|.
// The leaky-ReLU network is piecewise linear, so g does not depend on the biases or on x and
// their R1 gradients are exactly zero in PyTorch (stored as zeros); ours must be zero too. A GELU
// variant of the same network (written out here, SmallDisc's layers) has non-zero bias and input
// R1 gradients, so those double-backward paths are compared as well.
// The test prints the max errors (one MESSAGE per dtype) so the report can quote them.
#include <algorithm>
#include <cmath>

#include "bench/small_disc.h"
#include "tests/parity/parity.h"

using namespace engine;

namespace {

parity::Reference& ref() {
  static parity::Reference r("ref_r1.py");
  return r;
}

const char* const kParams[] = {"w1", "b1", "w2", "b2", "wl", "bl"};

parity::Tol scaled_tol(const Tensor& reference, DType t) {
  double mx = 0;
  for (double v : reference.to_vector()) mx = std::max(mx, std::fabs(v));
  mx = std::max(mx, 1e-30);
  return t == DType::f64 ? parity::Tol{1e-9, 1e-11 * mx} : parity::Tol{1e-4, 1e-5 * mx};
}

// The error summary printed at the end of each run (one line per compared tensor).
std::string g_summary;

// Compare (undefined = zeros) and add the errors to the summary.
void check(const std::string& what, const Tensor& ours, const Tensor& reference, DType t) {
  const Tensor o = ours.defined() ? ours : zeros_like(reference);
  const parity::Diff d = parity::compare(o, reference, scaled_tol(reference, t));
  double mx = 0;
  for (double v : reference.to_vector()) mx = std::max(mx, std::fabs(v));
  g_summary += fmt::format("\n  {:<34} max |diff| {:.3g}  max |ref| {:.3g}  max|diff|/max|ref| {:.3g}", what, d.max_abs,
                           mx, mx > 0 ? d.max_abs / mx : 0.0);
  CHECK_MESSAGE(d.ok, what << ": " << d.detail);
}

bench::SmallDisc load_disc(const std::string& pre) {
  bench::SmallDisc d;
  d.c0 = 3;
  d.c1 = 8;
  d.c2 = 16;
  d.res = 16;
  Tensor* fields[] = {&d.w1, &d.b1, &d.w2, &d.b2, &d.wl, &d.bl};
  for (int i = 0; i < 6; ++i) *fields[i] = clone(ref().at(pre + kParams[i])).requires_grad_(true);
  d.fir = ref().at(pre + "fir");
  return d;
}

// The GELU variant of the discriminator: SmallDisc's layers with GELU instead of leaky ReLU.
Tensor forward_gelu(const bench::SmallDisc& d, const Tensor& x) {
  Tensor h = d.downsample(gelu(conv2d(x, d.w1, d.b1, Conv2dParams::make(1, 1))));
  h = d.downsample(gelu(conv2d(h, d.w2, d.b2, Conv2dParams::make(1, 1))));
  return linear(flatten(h, 1), d.wl, d.bl);
}

// `pre`: "f32/", "f64/" (SmallDisc as it is) or "gelu.f32/", "gelu.f64/" (forward_gelu).
void run_r1(const std::string& pre, DType t) {
  INFO("R1 parity, " << pre);
  g_summary.clear();
  const bool use_gelu = pre.rfind("gelu.", 0) == 0;
  bench::SmallDisc d = load_disc(pre);
  REQUIRE(d.w1.dtype() == t);
  Tensor x = clone(ref().at(pre + "x")).requires_grad_(true);

  // The R1 step written out, so that g and d r1 / dx can be compared as well.
  Tensor logits = use_gelu ? forward_gelu(d, x) : d.forward(x);
  check(pre + "logits", logits, ref().at(pre + "logits"), t);
  TensorList g = autograd::grad({sum(logits)}, {x}, {}, /*create_graph=*/true);
  check(pre + "g = dD/dx", g[0], ref().at(pre + "g"), t);
  Tensor r1 = mean(sum(mul(g[0], g[0]), {1, 2, 3}));
  check(pre + "r1", r1, ref().at(pre + "r1"), t);
  TensorList wrt = d.params();
  wrt.push_back(x);
  TensorList grads = autograd::grad({r1}, wrt, {}, false, /*allow_unused=*/true);
  for (int i = 0; i < 6; ++i) check(pre + "d r1/d " + kParams[i], grads[size_t(i)], ref().at(pre + "grad/" + kParams[i]), t);
  check(pre + "d r1/d x", grads[6], ref().at(pre + "grad/x"), t);

  if (!use_gelu) {
    // The bench's own lazy-R1 step must leave the same gradients in .grad().
    Tensor r1_bench = d.r1_step(ref().at(pre + "x"));
    check(pre + "r1 (SmallDisc::r1_step)", r1_bench, ref().at(pre + "r1"), t);
    const TensorList params = d.params();
    for (int i = 0; i < 6; ++i) {
      check(pre + "SmallDisc::r1_step " + kParams[i] + ".grad", params[size_t(i)].grad(),
            ref().at(pre + "grad/" + kParams[i]), t);
    }
  }
  MESSAGE("R1 parity errors, " << pre << g_summary);
}

}  // namespace

TEST_CASE("parity R1 end to end: f32 weight gradients of the R1 penalty match PyTorch") {
  ref().require_loaded();
  run_r1("f32/", DType::f32);
}

TEST_CASE("parity R1 end to end: f64") {
  ref().require_loaded();
  run_r1("f64/", DType::f64);
}

TEST_CASE("parity R1 end to end, GELU variant (non-zero bias and input paths): f32 and f64") {
  ref().require_loaded();
  run_r1("gelu.f32/", DType::f32);
  run_r1("gelu.f64/", DType::f64);
}

TEST_CASE("parity R1: the reference gradients that should be non-zero are (the check has teeth)") {
  // If PyTorch's R1 gradients were all zero, matching them would prove nothing.
  auto max_abs = [](const std::string& key) {
    double mx = 0;
    for (double v : ref().at(key).to_vector()) mx = std::max(mx, std::fabs(v));
    return mx;
  };
  for (const char* w : {"w1", "w2", "wl"}) CHECK_MESSAGE(max_abs(std::string("f32/grad/") + w) > 1e-4, w);
  for (const char* w : {"w1", "b1", "w2", "b2", "wl", "x"}) {
    CHECK_MESSAGE(max_abs(std::string("gelu.f32/grad/") + w) > 1e-6, w);
  }
}

TEST_CASE("parity R1: every reference variant was compared") {
  const auto& meta = ref().file().metadata;
  REQUIRE(meta.count("cases"));
  CHECK(meta.at("cases") == R"(["f32", "f64", "gelu.f32", "gelu.f64"])");
}

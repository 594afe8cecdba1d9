// The fused modulation + demodulation op modulated_weight (tensor/ops_fused.cpp, bodies in
// tensor/kernels/modulated_weight.h, backward Note [modulated_weight backward] in
// autograd/formulas/fused.cpp) on the CPU:
//   - PyTorch parity (tests/parity/ref_modulated_weight.py: the spec 3 steps written literally,
//     in float64) of the forward, the gradients w.r.t. K and s and the double backward, for shared
//     and batched kernels, taps 1 and 3x3, demodulate on / off, transposed on / off, f32 and f64.
//     parity::Reference::run takes the first gradients with create_graph (the differentiable-op
//     form of the backward); a second pass without create_graph checks the fused backward kernels
//     against the same reference gradients. Tolerances: the project defaults (f32 rtol 1e-4 /
//     atol 1e-5, f64 rtol 1e-9 / atol 1e-11; tests/parity/parity.h).
//   - finite differences in f64: gradcheck (fused first-order backward) and gradgradcheck (the
//     create_graph form differentiated once more, against differences of the fused backward);
//   - equality, to f32 rounding, with the composite it replaced in nn/modconv.cpp (modulation
//     factor F [B, Cout, Cin] from ~15 small ops, then W = K * F), written out below: forward and
//     both gradients, |diff| <= 2e-6 (1 + |composite|);
//   - argument errors.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "autograd/gradcheck.h"
#include "autograd/grad_mode.h"
#include "tests/modulated_weight_composite.h"
#include "tests/parity/parity.h"

using namespace engine;

namespace {

parity::Reference& ref() {
  static parity::Reference r("ref_modulated_weight.py");
  return r;
}

constexpr double kGain = 0.37;  // ref_modulated_weight.py GAIN
constexpr double kEps = 1e-8;

struct KernelCase {
  const char* name;
  bool batched;
};
const KernelCase kKernels[] = {{"shared.k3", false}, {"batched.k3", true}, {"shared.lin", false}, {"batched.k1", true}};

ModulatedWeightParams params(bool batched, bool demod, bool transposed) {
  ModulatedWeightParams p;
  p.batched = batched;
  p.demodulate = demod;
  p.weight_gain = kGain;
  p.eps = kEps;
  p.transposed = transposed;
  return p;
}

std::string case_name(const KernelCase& k, bool demod, bool tr, const char* sfx) {
  return std::string(k.name) + (demod ? ".demod" : ".plain") + (tr ? ".tr." : ".std.") + sfx;
}

void check_near(const std::string& what, const Tensor& a, const Tensor& b, double rtol, double atol) {
  CAPTURE(what);
  REQUIRE(a.defined());
  REQUIRE(a.sizes() == b.sizes());
  const std::vector<double> x = a.to_vector(), y = b.to_vector();
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::fabs(x[i] - y[i]) / (atol + rtol * std::fabs(y[i])));
  CHECK_MESSAGE(worst <= 1.0, what << ": worst error / tolerance " << worst);
}

}  // namespace

TEST_CASE("modulated_weight: PyTorch parity (forward, create_graph backward, double backward)") {
  for (const char* sfx : {"f32", "f64"})
    for (const KernelCase& k : kKernels)
      for (bool demod : {true, false})
        for (bool tr : {false, true}) {
          const ModulatedWeightParams p = params(k.batched, demod, tr);
          ref().run(case_name(k, demod, tr, sfx),
                    [p](const TensorList& in) { return TensorList{modulated_weight(in[0], in[1], p)}; });
        }
  ref().check_all_run();
}

TEST_CASE("modulated_weight: the fused first-order backward matches PyTorch's gradients") {
  for (const char* sfx : {"f32", "f64"})
    for (const KernelCase& k : kKernels)
      for (bool demod : {true, false})
        for (bool tr : {false, true}) {
          const std::string name = case_name(k, demod, tr, sfx);
          CAPTURE(name);
          const parity::Tol tol = parity::default_tol(std::string(sfx) == "f32" ? DType::f32 : DType::f64);
          const Tensor K = clone(ref().at(name + "/in/0")).requires_grad_(true);
          const Tensor s = clone(ref().at(name + "/in/1")).requires_grad_(true);
          const Tensor W = modulated_weight(K, s, params(k.batched, demod, tr));
          const TensorList g = autograd::grad({W}, {K, s}, {ref().at(name + "/go/0")}, /*create_graph=*/false,
                                                   /*allow_unused=*/false, /*retain_graph=*/true);
          CHECK_FALSE(g[0].requires_grad());  // no graph: the fused kernels ran
          const parity::Diff dk = parity::compare(g[0], ref().at(name + "/grad/0"), tol);
          const parity::Diff ds = parity::compare(g[1], ref().at(name + "/grad/1"), tol);
          CHECK_MESSAGE(dk.ok, "dK: " << dk.detail);
          CHECK_MESSAGE(ds.ok, "ds: " << ds.detail);
          // Only one of the two gradients asked for: the other is not computed.
          const TensorList only_s = autograd::grad({W}, {s}, {ref().at(name + "/go/0")});
          CHECK(parity::compare(only_s[0], ref().at(name + "/grad/1"), tol).ok);
        }
}

TEST_CASE("modulated_weight: finite differences in f64 (gradcheck, gradgradcheck)") {
  Generator gen(5);
  struct Shape {
    Dims kernel;
    bool batched;
  };
  for (const Shape& sh : {Shape{{3, 2, 3, 3}, false}, Shape{{2, 3, 2, 3, 3}, true}, Shape{{4, 3}, false},
                          Shape{{2, 4, 3, 1, 1}, true}}) {
    const int64_t cin = sh.batched ? sh.kernel[2] : sh.kernel[1];
    const Tensor K = randn(sh.kernel, gen, opts(DType::f64)).requires_grad_(true);
    const Tensor s = add(randn({2, cin}, gen, opts(DType::f64)), 1.0).detach().requires_grad_(true);
    for (bool demod : {true, false})
      for (bool tr : {false, true}) {
        CAPTURE(sh.kernel.str());
        CAPTURE(demod);
        CAPTURE(tr);
        const ModulatedWeightParams p = params(sh.batched, demod, tr);
        auto f = [p](const TensorList& in) { return modulated_weight(in[0], in[1], p); };
        CHECK(autograd::gradcheck(f, {K, s}) == "");
        CHECK(autograd::gradgradcheck(f, {K, s}) == "");
      }
  }
}

TEST_CASE("modulated_weight: equal to the composite it replaced, to f32 rounding") {
  Generator gen(9);
  struct Shape {
    Dims kernel;
    bool batched;
  };
  // Sizes of a small generator layer: the sums run over 32 x 9 terms.
  for (const Shape& sh : {Shape{{16, 32, 3, 3}, false}, Shape{{4, 16, 32, 3, 3}, true}, Shape{{24, 32}, false},
                          Shape{{4, 3, 32, 1, 1}, true}}) {
    const Tensor K = randn(sh.kernel, gen, opts(DType::f32)).requires_grad_(true);
    const Tensor s = add(randn({4, 32}, gen, opts(DType::f32)), 1.0).detach().requires_grad_(true);
    for (bool demod : {true, false})
      for (bool tr : {false, true}) {
        CAPTURE(sh.kernel.str());
        CAPTURE(demod);
        CAPTURE(tr);
        const ModulatedWeightParams p = params(sh.batched, demod, tr);
        const Tensor wf = modulated_weight(K, s, p);
        const Tensor wc = test::modulated_weight_composite(K, s, p);
        check_near("forward", wf, wc, 2e-6, 2e-6);
        const Tensor go = randn(wf.sizes(), gen, opts(DType::f32));
        const TensorList gf = autograd::grad({wf}, {K, s}, {go});
        const TensorList gc = autograd::grad({wc}, {K, s}, {go});
        // The gradients are sums of ~B Cout (s) or B (K) products, with a cancellation along K
        // and s (W is scale-invariant in both): allow a few ulp of the largest term.
        check_near("dK", gf[0], gc[0], 1e-5, 1e-5);
        check_near("ds", gf[1], gc[1], 1e-5, 1e-5);
      }
  }
}

TEST_CASE("modulated_weight: argument errors name the op and the bad value") {
  const Tensor K = zeros({5, 4, 3, 3});
  CHECK_THROWS_WITH_AS(modulated_weight(K, zeros({2, 3}), params(false, true, false)),
                       doctest::Contains("modulated_weight: kernel [5,4,3,3] does not match styles [2,3] (Cin)"), Error);
  CHECK_THROWS_WITH_AS(modulated_weight(K, zeros({2, 4}), params(true, true, false)),
                       doctest::Contains("modulated_weight: batched kernel [5,4,3,3] does not match styles [2,4] (B)"),
                       Error);
  CHECK_THROWS_WITH_AS(modulated_weight(K, zeros({4}), params(false, true, false)),
                       doctest::Contains("modulated_weight: styles must be [B, Cin], got [4]"), Error);
  ModulatedWeightParams bad = params(false, true, false);
  bad.eps = -1;
  CHECK_THROWS_WITH_AS(modulated_weight(K, zeros({2, 4}), bad), doctest::Contains("eps must be >= 0, got -1"), Error);
  CHECK_THROWS_WITH_AS(modulated_weight_grad(zeros({2, 5, 4}), K, zeros({2, 4}), params(false, true, false)),
                       doctest::Contains("modulated_weight_grad: grad [2,5,4] must have the weight's shape [2,5,4,3,3]"),
                       Error);
}

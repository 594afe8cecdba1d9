// Fused ops (tensor/ops_fused.cpp) on the CPU:
//   - bias_act against the unfused PyTorch expression (tests/parity/ref_fused.py): forward, first
//     gradients and double backward (torch.autograd.grad with create_graph), default parity
//     tolerances (f32 rtol 1e-4 / atol 1e-5, f64 rtol 1e-9 / atol 1e-11; tests/parity/parity.h);
//   - bias_act and bias_act_grad against central differences (gradcheck / gradgradcheck, f64);
//   - bias_act equal, bit for bit, to the ops it replaces (add, leaky_relu with its gain);
//   - nn::AdamW over a flat buffer against torch.optim.AdamW (f64, betas (0.5, 0.99), two lr
//     groups), and bit-identical to the per-element loop it replaced (written out below) in f32.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "autograd/gradcheck.h"
#include "autograd/grad_mode.h"
#include "nn/adamw.h"
#include "tests/parity/parity.h"

using namespace engine;
using parity::CaseFn;

namespace {

parity::Reference& ref() {
  static parity::Reference r("ref_fused.py");
  return r;
}

const double kSqrt2 = std::sqrt(2.0);

CaseFn fused(int64_t dim, BiasActKind act, double alpha, double gain, std::optional<double> clamp = std::nullopt) {
  return [=](const TensorList& x) {
    return TensorList{bias_act(x[0], x.size() > 1 ? x[1] : Tensor(), dim, act, alpha, gain, clamp)};
  };
}

// Values with |v| in [0.1, 2]: away from the activation's kink for finite differences.
Tensor away_from_zero(const Dims& shape, uint64_t seed) {
  Generator gen(seed);
  const Tensor u = rand(shape, gen, opts(DType::f64));
  const Tensor s = rand(shape, gen, opts(DType::f64));
  return mul(add(mul(u, 1.9), 0.1), sub(mul(to_dtype(gt(s, 0.5), DType::f64), 2.0), 1.0));
}

}  // namespace

TEST_CASE("bias_act: PyTorch parity of forward, backward and double backward") {
  for (const char* sfx : {"f32", "f64"}) {
    const std::string s = sfx;
    ref().run("lrelu.nchw." + s, fused(1, BiasActKind::lrelu, 0.2, kSqrt2));
    ref().run("linear.last." + s, fused(1, BiasActKind::linear, 0.2, 1.0));
    ref().run("lrelu.clamp." + s, fused(1, BiasActKind::lrelu, 0.2, kSqrt2, 1.0));
  }
  ref().run("lrelu.last.f32", fused(-1, BiasActKind::lrelu, 0.2, kSqrt2));
  ref().run("relu.gain.f32", fused(1, BiasActKind::relu, 0.0, 2.0));
  ref().run("lrelu.alpha.dim0.f32", fused(0, BiasActKind::lrelu, 0.1, 1.5));
  ref().run("linear.gain.1d.f64", fused(0, BiasActKind::linear, 0.2, 0.5));
  ref().run("linear.clamp.f32", fused(1, BiasActKind::linear, 0.2, 1.0, 1.0));
  ref().run("lrelu.nobias.f32", fused(1, BiasActKind::lrelu, 0.2, kSqrt2));
}

TEST_CASE("bias_act: finite differences (gradcheck, gradgradcheck) in f64") {
  // x + b = v, |v| in [0.1, 2]; b broadcast along dim 1 of [2, 3, 4].
  Generator gen(3);
  const Tensor b = randn({3}, gen, opts(DType::f64)).requires_grad_(true);
  const Tensor x = sub(away_from_zero({2, 3, 4}, 5), reshape(b.detach(), {1, 3, 1})).detach().requires_grad_(true);
  for (BiasActKind act : {BiasActKind::linear, BiasActKind::relu, BiasActKind::lrelu}) {
    INFO("act " << int(act));
    auto f = [act](const TensorList& in) { return bias_act(in[0], in[1], 1, act, 0.2, 1.7); };
    CHECK(autograd::gradcheck(f, {x, b}) == "");
    CHECK(autograd::gradgradcheck(f, {x, b}) == "");
  }
  // bias_act_grad as a function of gy (y fixed): its own backward.
  const Tensor y = bias_act(x.detach(), b.detach(), 1, BiasActKind::lrelu, 0.2, kSqrt2);
  const Tensor gy = randn({2, 3, 4}, gen, opts(DType::f64)).requires_grad_(true);
  auto g = [y](const TensorList& in) { return bias_act_grad(in[0], y, BiasActKind::lrelu, 0.2, kSqrt2, 2.0); };
  CHECK(autograd::gradcheck(g, {gy}) == "");
  CHECK(autograd::gradgradcheck(g, {gy}) == "");
}

TEST_CASE("bias_act: bit-identical to add + leaky_relu(0.2) * sqrt 2 (f32), in forward and backward") {
  Generator gen(9);
  const Tensor x = randn({2, 8, 5, 3}, gen, opts(DType::f32)).requires_grad_(true);
  const Tensor b = randn({8}, gen, opts(DType::f32)).requires_grad_(true);
  const Tensor go = randn({2, 8, 5, 3}, gen, opts(DType::f32));
  const Tensor fused_y = bias_act(x, b, 1, BiasActKind::lrelu, 0.2, kSqrt2);
  const Tensor plain_y = leaky_relu(add(x, reshape(b, {1, 8, 1, 1})), 0.2, kSqrt2);
  const TensorList gf = autograd::grad({fused_y}, {x, b}, {go});
  const TensorList gp = autograd::grad({plain_y}, {x, b}, {go});
  CHECK(fused_y.to_vector() == plain_y.to_vector());
  CHECK(gf[0].to_vector() == gp[0].to_vector());
  const std::vector<double> a = gf[1].to_vector(), c = gp[1].to_vector();
  for (size_t i = 0; i < a.size(); ++i) CHECK(std::fabs(a[i] - c[i]) <= 1e-5 * (1 + std::fabs(c[i])));
}

TEST_CASE("bias_act: argument errors name the op and the bad value") {
  const Tensor x = zeros({2, 3, 4});
  CHECK_THROWS_WITH_AS(bias_act(x, zeros({4}), 1), doctest::Contains("bias_act: bias must be 1-D"), Error);
  CHECK_THROWS_WITH_AS(bias_act(x, zeros({3}), 3), doctest::Contains("bias_act: dim 3 out of range"), Error);
  CHECK_THROWS_WITH_AS(bias_act(x, zeros({3}), 1, BiasActKind::lrelu, 0.2, -1.0),
                       doctest::Contains("bias_act: gain must be > 0, got -1"), Error);
  CHECK_THROWS_WITH_AS(bias_act_grad(x, zeros({2, 3}), BiasActKind::relu, 0, 1),
                       doctest::Contains("bias_act_grad: gy [2,3,4] and y [2,3]"), Error);
}

namespace {

struct Three : nn::Module {
  nn::Parameter& a;
  nn::Parameter& b;
  nn::Parameter& c;
  Three()
      : Module("Three"),
        a(register_parameter("a", {3, 4}, nn::Init::zeros())),
        b(register_parameter("b", {5}, nn::Init::zeros(), 1.0, /*weight_decay=*/false)),
        c(register_parameter("c", {2, 3}, nn::Init::zeros())) {}
};

double max_abs_diff(const Tensor& x, const Tensor& y) {
  const auto a = x.to_vector(), b = y.to_vector();
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
  return worst;
}

}  // namespace

TEST_CASE("AdamW over the flat buffer matches torch.optim.AdamW (betas (0.5, 0.99), two lr groups)") {
  Three model;
  nn::ParameterStore store;
  store.materialize(model, 0, opts(DType::f64));
  {
    autograd::NoGradGuard ng;
    copy_(model.a.value, ref().at("adamw/a0"));
    copy_(model.b.value, ref().at("adamw/b0"));
    copy_(model.c.value, ref().at("adamw/c0"));
  }
  nn::AdamW opt(store, {0.01, 0.5, 0.99, 1e-8, 0.1}, [](const std::string& n) { return n == "b" ? 0.1 : 1.0; });
  for (int step = 0; step < 3; ++step) {
    {
      autograd::NoGradGuard ng;
      copy_(model.a.value.grad(), ref().at("adamw/ga" + std::to_string(step)));
      copy_(model.b.value.grad(), ref().at("adamw/gb" + std::to_string(step)));
      copy_(model.c.value.grad(), ref().at("adamw/gc" + std::to_string(step)));
    }
    opt.step();
    const std::string t = std::to_string(step + 1);
    CHECK(max_abs_diff(model.a.value, ref().at("adamw/a" + t)) < 1e-12);
    CHECK(max_abs_diff(model.b.value, ref().at("adamw/b" + t)) < 1e-12);
    CHECK(max_abs_diff(model.c.value, ref().at("adamw/c" + t)) < 1e-12);
  }
}

TEST_CASE("AdamW: bit-identical to the per-element double-precision loop (f32 buffers)") {
  Three model;
  nn::ParameterStore store;
  store.materialize(model, 0, opts(DType::f32));
  const int64_t n = store.flat_params().numel();
  Generator gen(21);
  {
    autograd::NoGradGuard ng;
    copy_(store.flat_params(), randn({n}, gen, opts(DType::f32)));
  }
  std::vector<float> p(static_cast<size_t>(n)), m(static_cast<size_t>(n), 0.f), v(static_cast<size_t>(n), 0.f);
  {
    const auto p0 = store.flat_params().to_vector();
    for (int64_t i = 0; i < n; ++i) p[size_t(i)] = float(p0[size_t(i)]);
  }
  const double lr = 0.002, b1 = 0.3, b2 = 0.99, eps = 1e-8, wd = 0.05;
  nn::AdamW opt(store, {lr, b1, b2, eps, wd}, [](const std::string& name) { return name == "c" ? 0.25 : 1.0; });
  // Segments of the flat buffer in registration order: a (decay, scale 1), b (no decay), c (decay, 0.25).
  struct Seg { int64_t off, len; double scale; bool decay; };
  const std::vector<Seg> segs = {{0, 12, 1.0, true}, {12, 5, 1.0, false}, {17, 6, 0.25, true}};
  for (int step = 1; step <= 4; ++step) {
    const Tensor g = randn({n}, gen, opts(DType::f32));
    {
      autograd::NoGradGuard ng;
      copy_(store.flat_grads(), g);
    }
    opt.step();
    // The loop nn::AdamW ran before the fused kernel body, verbatim in its arithmetic.
    const auto gv = g.to_vector();
    const double c1 = 1.0 - std::pow(b1, double(step)), c2 = 1.0 - std::pow(b2, double(step));
    for (const Seg& s : segs) {
      const double l = lr * s.scale, decay = s.decay ? 1.0 - l * wd : 1.0, step_size = l / c1, inv_c2 = 1.0 / c2;
      for (int64_t i = s.off; i < s.off + s.len; ++i) {
        const double gi = double(float(gv[size_t(i)]));
        const double mi = b1 * double(m[size_t(i)]) + (1 - b1) * gi;
        const double vi = b2 * double(v[size_t(i)]) + (1 - b2) * gi * gi;
        m[size_t(i)] = float(mi);
        v[size_t(i)] = float(vi);
        p[size_t(i)] = float(double(p[size_t(i)]) * decay - step_size * mi / (std::sqrt(vi * inv_c2) + eps));
      }
    }
    const auto ours = store.flat_params().to_vector();
    int64_t differing = 0;
    for (int64_t i = 0; i < n; ++i) differing += ours[size_t(i)] != double(p[size_t(i)]);
    INFO("step " << step);
    CHECK(differing == 0);
  }
  CHECK(opt.exp_avg().to_vector() == std::vector<double>(m.begin(), m.end()));
  CHECK(opt.exp_avg_sq().to_vector() == std::vector<double>(v.begin(), v.end()));
}

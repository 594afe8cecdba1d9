// gpu_elementwise: every elementwise and copy-like op of the engine on a CUDA device against the
// same op on the CPU (docs/cuda.md "Elementwise ops and copies"). The CPU ops are themselves
// tested against PyTorch and finite differences (test_elementwise, test_parity_elementwise).
//
// What is compared:
//   - forward of every op of ops.h's "Elementwise" section in f32 and f64, backward with a random
//     upstream gradient and double backward (the gradient of sum_i <grad_i, v_i>, taken as a
//     vector-Jacobian product with grad_outputs v so that it needs no reduction kernel);
//   - bit for bit where both devices round identically: + - * / and their scalar forms, neg, abs,
//     square, relu, sign, clamp, maximum/minimum, where, comparisons, logical_not, every copy and
//     dtype conversion (kernels/convert.h is shared), fill_, the random draws (f32 normal, every
//     uniform and integer draw);
//   - copy_ / to_dtype between all 8x8 dtype pairs from contiguous, transposed, sliced (step) and
//     broadcast (stride 0) sources, and into a non-contiguous destination;
//   - contiguous / clone / reshape-copy / slice backward / pad_into / to(Device) of CUDA views.
//
// Tolerances (documented so they hold on a real GPU, not only in the emulated build where both
// devices share glibc's libm): transcendental functions (exp, log, erf, tanh, sin, cos, pow) use
// each device's math library, accurate to a few ulp, and nvcc contracts a*b+c into FMA inside a
// functor; hence rtol 1e-5 / atol 1e-6 in f32 and rtol 1e-12 / atol 1e-13 in f64 for those, and
// atol 1e-5 (f32) / 1e-12 (f64) for double backward, whose formulas chain several transcendental
// kernels with cancellations (1 - t^2, 1 - 2y). f64 normal draws: 8 ulp (Box-Muller's log/cos).
//
// Gradients use operands of the same shape: the gradient of a broadcast operand is sum_to, a
// reduction, which runs on CUDA only with the reduction kernels (ops_reduce.cpp); broadcasting is
// tested forward only here.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "autograd/engine.h"
#include "tensor/ops.h"
#include "tests/gpu_fixtures.h"

using namespace engine;
using gpu_test::kGpu;
using gpu_test::no_device;

namespace {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

constexpr DType kFloatTypes[] = {DType::f32, DType::f64};
constexpr DType kAllTypes[] = {DType::f32, DType::f64, DType::bf16, DType::f16,
                               DType::i32, DType::i64, DType::u8,   DType::boolean};

using gpu_test::bytes_of;
using gpu_test::contains;
using gpu_test::error_of;

// Uniform values in [lo, hi) on the CPU, as a leaf that requires grad when asked.
Tensor uniform(const Dims& shape, DType dt, uint64_t seed, double lo, double hi, bool grad = true) {
  Generator gen(seed);
  Tensor t = add(mul(rand(shape, gen, opts(DType::f64)), hi - lo), lo).to(dt).detach();
  if (grad) t.requires_grad_(true);
  return t;
}

struct Tol {
  double rtol, atol, atol2;  // forward/backward, and the double backward's atol
};
Tol tol_for(DType dt) { return dt == DType::f32 ? Tol{1e-5, 1e-6, 1e-5} : Tol{1e-12, 1e-13, 1e-12}; }

// Forward and backward through gpu_test::check_op, then the double backward: the gradient of
// sum_i <grad_i, v_i> with respect to the inputs, computed as grad(grads, inputs, v).
void check_op2(const std::string& what, const std::vector<Tensor>& cpu_inputs, const Fn& f, DType dt,
               bool second_order = true) {
  const Tol tol = tol_for(dt);
  gpu_test::check_op(what, cpu_inputs, f, tol.rtol, tol.atol, /*second_order=*/false);
  if (!second_order) return;
  std::vector<Tensor> gpu_inputs;
  TensorList wrt_cpu, wrt_gpu;
  for (const Tensor& t : cpu_inputs) {
    gpu_inputs.push_back(gpu_test::gpu_leaf(t));
    if (t.requires_grad()) {
      wrt_cpu.push_back(t);
      wrt_gpu.push_back(gpu_inputs.back());
    }
  }
  const Tensor y_cpu = f(cpu_inputs), y_gpu = f(gpu_inputs);
  Generator gen(99);
  const Tensor up = randn(y_cpu.sizes(), gen, opts(y_cpu.dtype()));
  const TensorList g_cpu = autograd::grad({y_cpu}, wrt_cpu, {up}, /*create_graph=*/true, /*allow_unused=*/true);
  const TensorList g_gpu = autograd::grad({y_gpu}, wrt_gpu, {up.to(kGpu)}, true, true);
  TensorList outs_cpu, outs_gpu, v_cpu, v_gpu;
  for (size_t i = 0; i < g_cpu.size(); ++i) {
    if (!g_cpu[i].defined() || !g_cpu[i].requires_grad()) continue;
    REQUIRE(g_gpu[i].requires_grad());
    const Tensor v = randn(g_cpu[i].sizes(), gen, opts(g_cpu[i].dtype()));
    outs_cpu.push_back(g_cpu[i]);
    outs_gpu.push_back(g_gpu[i]);
    v_cpu.push_back(v);
    v_gpu.push_back(v.to(kGpu));
  }
  if (outs_cpu.empty()) return;
  const TensorList gg_cpu = autograd::grad(outs_cpu, wrt_cpu, v_cpu, false, true);
  const TensorList gg_gpu = autograd::grad(outs_gpu, wrt_gpu, v_gpu, false, true);
  for (size_t i = 0; i < gg_cpu.size(); ++i)
    gpu_test::check_close(what + " double-backward grad of input " + std::to_string(i), gg_gpu[i], gg_cpu[i],
                          tol.rtol, tol.atol2);
}

}  // namespace

// ---- unary ops, forward + backward + double backward ----------------------------------------

TEST_CASE("unary ops on the GPU: forward, backward and double backward equal the CPU") {
  if (no_device()) return;
  for (DType dt : kFloatTypes) {
    const std::string dtype = dtype_name(dt);
    CAPTURE(dtype);
    const Dims shape{3, 4, 5};
    // Values of both signs avoiding 0 (abs, sign, relu kinks), positives for log/sqrt/pow.
    const Tensor x = uniform(shape, dt, 1, -2.5, 2.5);
    const Tensor pos = uniform(shape, dt, 2, 0.2, 3.0);
    struct Case {
      const char* name;
      Tensor input;
      Fn f;
    };
    const std::vector<Case> cases = {
        {"neg", x, [](const auto& v) { return neg(v[0]); }},
        {"exp", x, [](const auto& v) { return exp(v[0]); }},
        {"log", pos, [](const auto& v) { return log(v[0]); }},
        {"sqrt", pos, [](const auto& v) { return sqrt(v[0]); }},
        {"rsqrt", pos, [](const auto& v) { return rsqrt(v[0]); }},
        {"square", x, [](const auto& v) { return square(v[0]); }},
        {"abs", x, [](const auto& v) { return abs(v[0]); }},
        {"sign", x, [](const auto& v) { return mul(sign(v[0]), v[0]); }},  // sign has no grad of its own
        {"sin", x, [](const auto& v) { return sin(v[0]); }},
        {"cos", x, [](const auto& v) { return cos(v[0]); }},
        {"sigmoid", x, [](const auto& v) { return sigmoid(v[0]); }},
        {"tanh", x, [](const auto& v) { return tanh(v[0]); }},
        {"erf", x, [](const auto& v) { return erf(v[0]); }},
        {"gelu", x, [](const auto& v) { return gelu(v[0]); }},
        {"gelu_tanh", x, [](const auto& v) { return gelu(v[0], GeluApprox::tanh); }},
        {"leaky_relu", x, [](const auto& v) { return leaky_relu(v[0], 0.2, std::sqrt(2.0)); }},
        {"relu", x, [](const auto& v) { return relu(v[0]); }},
        {"softplus", mul(x, 10.0).detach().requires_grad_(true),  // reaches the x > 20 branch
         [](const auto& v) { return softplus(v[0]); }},
        {"clamp", x, [](const auto& v) { return clamp(v[0], -1.0, 1.5); }},
        {"clamp_min", x, [](const auto& v) { return clamp(v[0], 0.5, std::nullopt); }},
        {"clamp_max", x, [](const auto& v) { return clamp(v[0], std::nullopt, -0.5); }},
        {"add_scalar", x, [](const auto& v) { return add(v[0], 0.3); }},
        {"sub_scalar", x, [](const auto& v) { return sub(v[0], 1.7); }},
        {"mul_scalar", x, [](const auto& v) { return mul(v[0], -2.25); }},
        {"div_scalar", x, [](const auto& v) { return div(v[0], 3.0); }},
        {"rsub", x, [](const auto& v) { return rsub(0.5, v[0]); }},
        {"rdiv", pos, [](const auto& v) { return rdiv(2.0, v[0]); }},
    };
    for (const Case& c : cases) check_op2(c.name, {c.input}, c.f, dt);
    for (double e : {0.0, 1.0, 2.0, 3.0, 0.5, -0.5, -1.0, -2.0, 1.7, -0.3}) {
      CAPTURE(e);
      check_op2("pow", {pos}, [e](const auto& v) { return pow(v[0], e); }, dt);
    }
  }
}

// ---- binary ops ------------------------------------------------------------------------------

TEST_CASE("binary ops on the GPU: forward, backward and double backward equal the CPU") {
  if (no_device()) return;
  for (DType dt : kFloatTypes) {
    const std::string dtype = dtype_name(dt);
    CAPTURE(dtype);
    const Dims shape{4, 6};
    const Tensor a = uniform(shape, dt, 3, -2.0, 2.0);
    Tensor b = uniform(shape, dt, 4, 0.5, 2.5);
    // Ties for maximum/minimum (the gradient is split in half there).
    Tensor tied = clone(a.detach());
    {
      autograd::NoGradGuard no_grad;
      copy_(tied.narrow(1, 0, 3), b.narrow(1, 0, 3));
    }
    tied.requires_grad_(true);
    check_op2("add", {a, b}, [](const auto& v) { return add(v[0], v[1]); }, dt);
    check_op2("sub", {a, b}, [](const auto& v) { return sub(v[0], v[1]); }, dt);
    check_op2("mul", {a, b}, [](const auto& v) { return mul(v[0], v[1]); }, dt);
    check_op2("div", {a, b}, [](const auto& v) { return div(v[0], v[1]); }, dt);
    check_op2("maximum", {tied, b}, [](const auto& v) { return maximum(v[0], v[1]); }, dt);
    check_op2("minimum", {tied, b}, [](const auto& v) { return minimum(v[0], v[1]); }, dt);
    // where: the condition from a comparison on the device (bool) and a u8 mask.
    check_op2("where(bool)", {a, b}, [](const auto& v) { return where(gt(v[0], 0.0), v[0], v[1]); }, dt);
    check_op2("where(u8)", {a, b},
              [](const auto& v) { return where(gt(v[0], 0.5).to(DType::u8), mul(v[0], v[1]), v[1]); }, dt);
    // A small composite: several kernels feeding each other's gradients.
    check_op2("composite", {a, b},
              [](const auto& v) { return div(mul(tanh(v[0]), sigmoid(v[1])), add(square(v[1]), 1.0)); }, dt);
  }
}

TEST_CASE("broadcasting binary ops on the GPU (forward; bit-exact for + - * / max min where)") {
  if (no_device()) return;
  for (DType dt : kFloatTypes) {
    const std::string dtype = dtype_name(dt);
    CAPTURE(dtype);
    const Tensor a = uniform({4, 1, 5}, dt, 5, -2.0, 2.0, false);
    const Tensor b = uniform({3, 5}, dt, 6, 0.5, 2.5, false);
    const Tensor wide = uniform({4, 3, 10}, dt, 7, -1.0, 1.0, false);
    const Tensor sliced = wide.narrow(2, 1, 5);                               // offset, not contiguous
    const Tensor bt = uniform({5, 3}, dt, 8, -1.0, 1.0, false).transpose(0, 1);  // [3,5] transposed
    const Tensor ag = a.to(kGpu), bg = b.to(kGpu), sg = sliced.to(kGpu), btg = bt.to(kGpu);
    // Views of CUDA tensors too (to() makes them contiguous; these stay strided on the device).
    const Tensor sg_view = wide.to(kGpu).narrow(2, 1, 5), btg_view = bt.contiguous().to(kGpu);
    CHECK(bytes_of(add(ag, bg)) == bytes_of(add(a, b)));
    CHECK(bytes_of(sub(sg_view, bg)) == bytes_of(sub(sliced, b)));
    CHECK(bytes_of(mul(ag, btg)) == bytes_of(mul(a, bt)));
    CHECK(bytes_of(div(sg_view, btg_view)) == bytes_of(div(sliced, bt)));
    CHECK(bytes_of(maximum(sg, ag)) == bytes_of(maximum(sliced, a)));
    CHECK(bytes_of(minimum(btg, ag)) == bytes_of(minimum(bt, a)));
    CHECK(bytes_of(where(gt(ag, 0.0), sg_view, bg)) == bytes_of(where(gt(a, 0.0), sliced, b)));
    const Tol tol = tol_for(dt);
    gpu_test::check_close("exp times a transposed broadcast operand", mul(exp(ag), btg), mul(exp(a), bt), tol.rtol, tol.atol);
    CHECK(contains(error_of([&] { (void)add(ag, uniform({4}, dt, 9, 0, 1, false).to(kGpu)); }),
                   "cannot be broadcast together"));
  }
}

// ---- bit-exact forward of the ops that round identically on both devices -------------------

TEST_CASE("exactly rounded elementwise ops give the CPU's bits on the GPU") {
  if (no_device()) return;
  for (DType dt : kFloatTypes) {
    const std::string dtype = dtype_name(dt);
    CAPTURE(dtype);
    Tensor x = uniform({7, 9}, dt, 11, -3.0, 3.0, false);
    Tensor y = uniform({7, 9}, dt, 12, -3.0, 3.0, false);
    {
      autograd::NoGradGuard no_grad;  // special values: zeros of both signs, inf, NaN, ties
      copy_(x.narrow(0, 0, 1), from_vector({0.0, -0.0, INFINITY, -INFINITY, NAN, 1.0, -1.0, 2.5, -2.5}, {1, 9}, opts(dt)));
      copy_(y.narrow(0, 0, 1), from_vector({-0.0, 0.0, 1.0, -INFINITY, 1.0, 1.0, NAN, -1.0, 2.5}, {1, 9}, opts(dt)));
    }
    const Tensor xg = x.to(kGpu), yg = y.to(kGpu);
    const std::vector<std::pair<const char*, std::function<Tensor(const Tensor&, const Tensor&)>>> ops = {
        {"add", [](const Tensor& p, const Tensor& q) { return add(p, q); }},
        {"sub", [](const Tensor& p, const Tensor& q) { return sub(p, q); }},
        {"mul", [](const Tensor& p, const Tensor& q) { return mul(p, q); }},
        {"div", [](const Tensor& p, const Tensor& q) { return div(p, q); }},
        {"maximum", [](const Tensor& p, const Tensor& q) { return maximum(p, q); }},
        {"minimum", [](const Tensor& p, const Tensor& q) { return minimum(p, q); }},
        {"add_scalar", [](const Tensor& p, const Tensor&) { return add(p, 0.1); }},
        {"sub_scalar", [](const Tensor& p, const Tensor&) { return sub(p, 0.7); }},
        {"mul_scalar", [](const Tensor& p, const Tensor&) { return mul(p, 1.0 / 3.0); }},
        {"div_scalar", [](const Tensor& p, const Tensor&) { return div(p, 7.0); }},
        {"rsub", [](const Tensor& p, const Tensor&) { return rsub(0.3, p); }},
        {"rdiv", [](const Tensor& p, const Tensor&) { return rdiv(3.0, p); }},
        {"neg", [](const Tensor& p, const Tensor&) { return neg(p); }},
        {"abs", [](const Tensor& p, const Tensor&) { return abs(p); }},
        {"square", [](const Tensor& p, const Tensor&) { return square(p); }},
        {"sign", [](const Tensor& p, const Tensor&) { return sign(p); }},
        {"relu", [](const Tensor& p, const Tensor&) { return relu(p); }},
        {"clamp", [](const Tensor& p, const Tensor&) { return clamp(p, -1.25, 0.75); }},
        {"pow2", [](const Tensor& p, const Tensor&) { return pow(p, 2.0); }},
        {"pow-1", [](const Tensor& p, const Tensor&) { return pow(p, -1.0); }},
        {"where", [](const Tensor& p, const Tensor& q) { return where(lt(p, q), p, q); }},
    };
    for (const auto& [name, f] : ops) {
      CAPTURE(name);
      CHECK(bytes_of(f(xg, yg)) == bytes_of(f(x, y)));
      CHECK(bytes_of(f(xg.transpose(0, 1), yg.transpose(0, 1))) == bytes_of(f(x.transpose(0, 1), y.transpose(0, 1))));  // transposed operands
    }
  }
}

TEST_CASE("comparisons and logical_not on the GPU: bool results equal the CPU, every numeric dtype") {
  if (no_device()) return;
  const std::vector<double> va = {0, 1, 2, 3, 3, 5, 1, 0, 7, 2, 2, 9};
  const std::vector<double> vb = {0, 2, 1, 3, 4, 5};
  for (DType dt : {DType::f32, DType::f64, DType::i32, DType::i64, DType::u8, DType::boolean}) {
    const std::string dtype = dtype_name(dt);
    CAPTURE(dtype);
    const Tensor a = from_vector(va, {2, 6}, opts(dt)), b = from_vector(vb, {6}, opts(dt));  // broadcast
    const Tensor ag = a.to(kGpu), bg = b.to(kGpu);
    const std::vector<std::pair<const char*, std::function<Tensor(const Tensor&, const Tensor&)>>> ops = {
        {"eq", [](const Tensor& p, const Tensor& q) { return eq(p, q); }},
        {"ne", [](const Tensor& p, const Tensor& q) { return ne(p, q); }},
        {"lt", [](const Tensor& p, const Tensor& q) { return lt(p, q); }},
        {"le", [](const Tensor& p, const Tensor& q) { return le(p, q); }},
        {"gt", [](const Tensor& p, const Tensor& q) { return gt(p, q); }},
        {"ge", [](const Tensor& p, const Tensor& q) { return ge(p, q); }},
        {"gt_scalar", [](const Tensor& p, const Tensor&) { return gt(p, 2.0); }},
        {"lt_scalar", [](const Tensor& p, const Tensor&) { return lt(p, 2.5); }},
        {"ge_scalar", [](const Tensor& p, const Tensor&) { return ge(p, 3.0); }},
        {"le_scalar", [](const Tensor& p, const Tensor&) { return le(p, 0.5); }},
        {"logical_not", [](const Tensor& p, const Tensor&) { return logical_not(p); }},
        {"transposed", [](const Tensor& p, const Tensor&) { return lt(p.transpose(0, 1), p.transpose(0, 1).narrow(0, 0, 1)); }},
    };
    for (const auto& [name, f] : ops) {
      CAPTURE(name);
      const Tensor got = f(ag, bg);
      CHECK(got.device().is_cuda());
      CHECK(got.dtype() == DType::boolean);
      CHECK(bytes_of(got) == bytes_of(f(a, b)));
    }
    // An independent value: a < b elementwise for the first row (bool tensors hold a != 0).
    if (dt != DType::boolean)
      CHECK(lt(ag, bg).narrow(0, 0, 1).to_vector() == std::vector<double>{0, 1, 0, 0, 1, 0});
    // where over integer and bool values, bool and u8 conditions.
    const Tensor cond = gt(ag, 1.5);
    CHECK(bytes_of(where(cond, ag, bg)) == bytes_of(where(gt(a, 1.5), a, b)));
    CHECK(bytes_of(where(cond.to(DType::u8), bg, ag)) == bytes_of(where(gt(a, 1.5).to(DType::u8), b, a)));
  }
  CHECK(contains(error_of([] { (void)where(ones({2}, opts(DType::f32, kGpu)), ones({2}, opts(DType::f32, kGpu)),
                                           zeros({2}, opts(DType::f32, kGpu))); }),
                 "where: condition must be a bool or u8 tensor, got f32"));
  CHECK(contains(error_of([] { (void)eq(ones({2}, opts(DType::f32, kGpu)), ones({2})); }),
                 "eq: device mismatch, cuda:0 vs cpu"));
}

// ---- copies, conversions, fills, in-place updates -------------------------------------------

TEST_CASE("copy_ and to_dtype on the GPU between every pair of dtypes, any source geometry") {
  if (no_device()) return;
  // Values every dtype holds or converts the same way on both devices: non-negative (u8), below
  // 256, with fractions that bf16/f16 must round (to nearest even) and floats must truncate to ints.
  std::vector<double> values;
  for (int i = 0; i < 6 * 8; ++i) values.push_back(i % 5 == 0 ? 0.0 : std::fmod(i * 37.0 / 3.0 + 0.1 * i, 250.0));
  for (DType from : kAllTypes) {
    const Tensor base_cpu = from_vector(values, {6, 8}, opts(from));
    const Tensor base_gpu = base_cpu.to(kGpu);
    for (DType to : kAllTypes) {
      const std::string pair = std::string(dtype_name(from)) + " -> " + dtype_name(to);
      CAPTURE(pair);
      struct Src {
        const char* name;
        std::function<Tensor(const Tensor&)> view;
        Dims dst_shape;
      };
      const std::vector<Src> sources = {
          {"contiguous", [](const Tensor& t) { return t; }, {6, 8}},
          {"transposed", [](const Tensor& t) { return t.transpose(0, 1); }, {8, 6}},
          {"sliced", [](const Tensor& t) { return slice(t, 1, 1, 8, 3).narrow(0, 2, 3); }, {3, 3}},
          {"broadcast", [](const Tensor& t) { return t.narrow(0, 1, 1); }, {4, 6, 8}},  // stride 0
      };
      for (const Src& s : sources) {
        CAPTURE(s.name);
        Tensor dst_gpu = empty(s.dst_shape, opts(to, kGpu));
        Tensor dst_cpu = empty(s.dst_shape, opts(to));
        copy_(dst_gpu, s.view(base_gpu));
        copy_(dst_cpu, s.view(base_cpu));
        CHECK(bytes_of(dst_gpu) == bytes_of(dst_cpu));
      }
      // to_dtype of a transposed CUDA view, and a copy into a transposed destination.
      const Tensor converted = base_gpu.transpose(0, 1).to(to);
      CHECK(converted.device().is_cuda());
      CHECK(converted.is_contiguous() == (from != to));  // the same dtype returns the view itself
      CHECK(bytes_of(converted) == bytes_of(base_cpu.transpose(0, 1).to(to)));
      Tensor dst_t = empty({8, 6}, opts(to, kGpu));
      copy_(dst_t.transpose(0, 1), base_gpu);
      Tensor dst_t_cpu = empty({8, 6}, opts(to));
      copy_(dst_t_cpu.transpose(0, 1), base_cpu);
      CHECK(bytes_of(dst_t) == bytes_of(dst_t_cpu));
    }
  }
}

TEST_CASE("GPU conversions: round to nearest even, NaN, signed values, i64 beyond 2^53") {
  if (no_device()) return;
  // f32 -> bf16, values computed by hand: 1 + 2^-8 is halfway between 1 (0x3F80) and 1 + 2^-7
  // (0x3F81): ties to even 0x3F80; 1 + 3 * 2^-8 is halfway between 0x3F81 and 0x3F82: 0x3F82;
  // 1 + 2^-8 + 2^-20 is above halfway: 0x3F81. -2 is 0xC000; NaN stays NaN.
  const Tensor f = from_vector({1.0 + std::ldexp(1.0, -8), 1.0 + 3 * std::ldexp(1.0, -8),
                                1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -20), -2.0, NAN},
                               {5}, opts(DType::f32, kGpu));
  const Tensor bf = f.to(DType::bf16).to(Device::cpu());
  const auto* bits = static_cast<const uint16_t*>(bf.raw_data());
  CHECK(bits[0] == 0x3F80);
  CHECK(bits[1] == 0x3F82);
  CHECK(bits[2] == 0x3F81);
  CHECK(bits[3] == 0xC000);
  CHECK((bits[4] & 0x7F80) == 0x7F80);
  CHECK((bits[4] & 0x7F) != 0);
  // f16: 1 + 2^-11 ties to 1 (0x3C00), 65520 overflows to inf (0x7C00), 2^-24 is the smallest
  // subnormal (0x0001).
  const Tensor h = from_vector({1.0 + std::ldexp(1.0, -11), 65520.0, std::ldexp(1.0, -24)}, {3}, opts(DType::f64, kGpu))
                       .to(DType::f16)
                       .to(Device::cpu());
  const auto* hb = static_cast<const uint16_t*>(h.raw_data());
  CHECK(hb[0] == 0x3C00);
  CHECK(hb[1] == 0x7C00);
  CHECK(hb[2] == 0x0001);
  // Negative floats to signed ints truncate toward zero; bool is "not zero".
  const Tensor s = from_vector({-2.75, -0.5, 0.0, 3.9, -0.0}, {5}, opts(DType::f64, kGpu));
  CHECK(s.to(DType::i32).to_vector() == std::vector<double>{-2, 0, 0, 3, 0});
  CHECK(s.to(DType::i64).to_vector() == std::vector<double>{-2, 0, 0, 3, 0});
  CHECK(s.to(DType::boolean).to_vector() == std::vector<double>{1, 1, 0, 1, 0});
  // i64 -> i64 copies move the 8 bytes: exact beyond 2^53, also through a strided view.
  const int64_t big = (int64_t(1) << 60) + 1;
  const Tensor i = from_vector_i64({big, -big, 3, 4}, {2, 2}, opts(DType::i64, kGpu));
  const Tensor it = i.transpose(0, 1).contiguous().to(Device::cpu());
  const auto* ip = static_cast<const int64_t*>(it.raw_data());
  CHECK(ip[0] == big);
  CHECK(ip[1] == 3);
  CHECK(ip[2] == -big);
  CHECK(ip[3] == 4);
  CHECK(contains(error_of([&] { copy_(empty({2, 2}, opts(DType::i64)), i); }),
                 "copy_: source on cuda:0 but destination on cpu"));
}

TEST_CASE("fill_, zero_, full, add_ and mul_ on the GPU") {
  if (no_device()) return;
  for (DType dt : kAllTypes) {
    const std::string dtype = dtype_name(dt);
    CAPTURE(dtype);
    for (double value : {0.0, 1.0, 3.7, 200.0}) {
      CAPTURE(value);
      CHECK(bytes_of(full({3, 5}, value, opts(dt, kGpu))) == bytes_of(full({3, 5}, value, opts(dt))));
      // Into a strided view: only the view's elements change.
      Tensor g = zeros({4, 6}, opts(dt, kGpu)), c = zeros({4, 6}, opts(dt));
      fill_(slice(g, 1, 1, 6, 2).transpose(0, 1), value);
      fill_(slice(c, 1, 1, 6, 2).transpose(0, 1), value);
      CHECK(bytes_of(g) == bytes_of(c));
      zero_(g.narrow(0, 1, 2));
      zero_(c.narrow(0, 1, 2));
      CHECK(bytes_of(g) == bytes_of(c));
    }
    CHECK(bytes_of(ones({7}, opts(dt, kGpu))) == bytes_of(ones({7}, opts(dt))));
  }
  for (DType dt : kFloatTypes) {
    const std::string dtype = dtype_name(dt);
    CAPTURE(dtype);
    autograd::NoGradGuard no_grad;
    const Tensor base = uniform({5, 4}, dt, 21, -1.0, 1.0, false);
    const Tensor src = uniform({4}, dt, 22, -1.0, 1.0, false);
    Tensor g = base.to(kGpu), c = clone(base);
    add_(g, src.to(kGpu));  // alpha 1: one rounding, exact on both devices; broadcast source
    add_(c, src);
    CHECK(bytes_of(g) == bytes_of(c));
    mul_(g, -1.5);
    mul_(c, -1.5);
    CHECK(bytes_of(g) == bytes_of(c));
    add_(g.transpose(0, 1), src.to(kGpu).unsqueeze(1), 0.3);  // d + alpha * s: nvcc may fuse into one FMA
    add_(c.transpose(0, 1), src.unsqueeze(1), 0.3);
    const Tol tol = tol_for(dt);
    gpu_test::check_close("add_ alpha", g, c, tol.rtol, tol.atol);
    const int64_t version = g.storage()->version;
    mul_(g.narrow(0, 0, 2), 2.0);
    CHECK(g.storage()->version == version + 1);
  }
}

// ---- random draws through the engine API ----------------------------------------------------

TEST_CASE("randn, rand and randint with CUDA options draw on the GPU the CPU's values") {
  if (no_device()) return;
  const Dims shape{5, 300, 7};
  Generator gg(77, 1000), cg(77, 1000);
  for (DType dt : kAllTypes) {
    const std::string dtype = dtype_name(dt);
    CAPTURE(dtype);
    const Tensor r = rand(shape, gg, opts(dt, kGpu));
    CHECK(r.device().is_cuda());
    CHECK(bytes_of(r) == bytes_of(rand(shape, cg, opts(dt))));
    CHECK(bytes_of(randint(shape, 17, gg, opts(dt, kGpu))) == bytes_of(randint(shape, 17, cg, opts(dt))));
    if (dt != DType::f64) {
      // Box-Muller in double, rounded to float or narrower: identical bits.
      CHECK(bytes_of(randn(shape, gg, opts(dt, kGpu))) == bytes_of(randn(shape, cg, opts(dt))));
    } else {
      // f64: each device's log/cos (a few ulp apart at most).
      const std::vector<double> g = randn(shape, gg, opts(dt, kGpu)).to_vector();
      const std::vector<double> c = randn(shape, cg, opts(dt)).to_vector();
      for (size_t i = 0; i < g.size(); ++i)
        REQUIRE(std::abs(g[i] - c[i]) <= 8 * std::numeric_limits<double>::epsilon() * std::max(1.0, std::abs(c[i])));
    }
    CHECK(gg.offset == cg.offset);
  }
  // randint values lie in [0, high) and use every value (independent of the CPU path).
  const std::vector<double> v = randint({4000}, 5, gg, opts(DType::i64, kGpu)).to_vector();
  std::vector<int> count(5, 0);
  for (double x : v) {
    REQUIRE(x >= 0);
    REQUIRE(x < 5);
    ++count[size_t(x)];
  }
  for (int n : count) CHECK(n > 600);
  CHECK(contains(error_of([&] { (void)randint({2}, 0, gg, opts(DType::i64, kGpu)); }),
                 "randint: high must be positive, got 0"));
  CHECK(randn({0}, gg, opts(DType::f32, kGpu)).numel() == 0);
}

// ---- copy-like ops and views that materialise data ------------------------------------------

TEST_CASE("contiguous, clone, reshape, slice backward, pad_into and to(Device) of CUDA views") {
  if (no_device()) return;
  for (DType dt : kFloatTypes) {
    const std::string dtype = dtype_name(dt);
    CAPTURE(dtype);
    const Tensor x = uniform({4, 6}, dt, 31, -1.0, 1.0);
    // Each backward here is a copy or a zero-filled scatter: exact.
    check_op2("contiguous of a transpose", {x}, [](const auto& v) { return mul(contiguous(v[0].transpose(0, 1)), 2.0); }, dt);
    check_op2("clone", {x}, [](const auto& v) { return clone(v[0].narrow(1, 1, 3)); }, dt);
    check_op2("reshape copy", {x}, [](const auto& v) { return reshape(v[0].transpose(0, 1), {3, 8}); }, dt);
    check_op2("slice step", {x}, [](const auto& v) { return mul(slice(v[0], 1, 1, 6, 2), slice(v[0], 1, 0, 5, 2)); }, dt);
    check_op2("select + unsqueeze", {x}, [](const auto& v) { return square(select(v[0], 0, 2).unsqueeze(0)); }, dt);
    check_op2("pad_into", {x}, [](const auto& v) { return pad_into(v[0], {6, 9}, {1, 2}); }, dt);
    check_op2("to_dtype", {x}, [dt](const auto& v) {
      return to_dtype(square(to_dtype(v[0], dt == DType::f32 ? DType::f64 : DType::f32)), dt);
    }, dt);
    // to(Device) of a non-contiguous CUDA view: made contiguous on the GPU, then copied.
    const Tensor xg = x.detach().to(kGpu), xc = x.detach();
    const std::vector<std::function<Tensor(const Tensor&)>> views = {
        [](const Tensor& t) { return t.transpose(0, 1); },
        [](const Tensor& t) { return slice(t, 1, 1, 6, 2); },
        [](const Tensor& t) { return t.narrow(0, 1, 2).transpose(0, 1); },
        [](const Tensor& t) { return t.narrow(0, 3, 1).expand({3, 6}); },
    };
    for (const auto& view : views) {
      const Tensor v = view(xg);
      CHECK_FALSE(v.is_contiguous());
      const Tensor host = v.to(Device::cpu());
      CHECK(host.is_contiguous());
      CHECK(bytes_of(host) == bytes_of(view(xc)));  // bytes_of makes the CPU view contiguous on the CPU
      const Tensor dev = v.contiguous();
      CHECK(dev.device().is_cuda());
      CHECK(bytes_of(dev) == bytes_of(view(xc)));
    }
    const Tensor back = xg.transpose(0, 1).to(Device::cpu());
    CHECK(bytes_of(back) == bytes_of(x.transpose(0, 1)));
    CHECK(xg.to(kGpu).raw_data() == xg.raw_data());  // same device: no copy
  }
}

// Tests of Aurora's conv building blocks (docs/aurora-spec.md sections 1, 2, 3): ModulatedConv2d,
// ModulatedLinear, ToRGB, ResConv (nn/modconv, nn/torgb, nn/resconv), MappingNetwork and
// FourierFeatures (nn/mapping, nn/fourier).
//
// Parity with PyTorch: each case materializes its module with a fixed seed, perturbs every
// parameter (so zero-initialised biases, the Fourier affine, ... are generic), writes the
// state_dict with nn::save_state_dict and the inputs and a random grad_output gy with
// io/safetensors, and runs tests/parity/ref_modconv.py once for all cases. The reference builds
// the per-sample weights literally as spec 3 lists the steps (our code folds them: Note
// [modulation without weight-sized temporaries], nn/modconv.cpp) and writes y and the gradients of
// S = <y, gy> w.r.t. every input and every parameter, which we compare.
// Tolerances: |ours - ref| <= atol + rtol |ref| with the project defaults,
//   f32: rtol 1e-4, atol 1e-5;  f64: rtol 1e-9, atol 1e-11.
// Each case prints max |diff| and the worst error / allowance per tensor.
//
// Also: gradcheck (f64, tiny) of ModulatedConv2d w.r.t. x, w and every parameter; gradgradcheck
// (the double backward that R1 / path-length regularisation need); names and parameter counts of
// the released model; the MTM hook; w_avg; Fourier buffers; errors.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/parity/script_runner.h"
#include "autograd/engine.h"
#include "autograd/grad_mode.h"
#include "autograd/gradcheck.h"
#include "io/safetensors.h"
#include "nn/fourier.h"
#include "nn/mapping.h"
#include "nn/modconv.h"
#include "nn/resconv.h"
#include "nn/state_dict.h"
#include "nn/torgb.h"
#include "tensor/ops.h"

#ifndef ENGINE_PYTHON
#error "ENGINE_PYTHON must be defined (tests/CMakeLists.txt does)"
#endif

using namespace engine;
using namespace engine::nn;
using json = nlohmann::json;

namespace {

// ---- Case description -----------------------------------------------------------------------

using ForwardFn = std::function<Tensor(Module&, const TensorList&)>;

struct Case {
  std::string name;
  json cfg;  // "kind" and what the reference needs
  DType dtype = DType::f32;
  uint64_t seed = 1;
  std::function<std::unique_ptr<Module>()> make;
  std::vector<std::pair<std::string, Dims>> inputs;
  ForwardFn forward;
};

struct Built {
  std::unique_ptr<Module> m;
  ParameterStore store;
  TensorList xs;
  Tensor gy;
};

// Every parameter += 0.3 N(0, 1): biases and zero-initialised weights become generic.
void perturb(ParameterStore& store, uint64_t seed, DType dt) {
  autograd::NoGradGuard ng;
  Generator g(seed);
  for (auto& [name, p] : store.parameters()) add_(p->value, randn(p->shape, g, opts(dt)), 0.3);
}

void build(const Case& c, Built& b) {
  b.m = c.make();
  b.store.materialize(*b.m, c.seed, TensorOptions{c.dtype, Device::cpu(), memory::Kind::param});
  perturb(b.store, c.seed + 77, c.dtype);
  Generator g(c.seed + 1000);
  b.xs.clear();
  for (const auto& [name, shape] : c.inputs) b.xs.push_back(randn(shape, g, opts(c.dtype)).requires_grad_(true));
  Tensor y;
  {
    autograd::NoGradGuard ng;
    y = c.forward(*b.m, b.xs);
  }
  b.gy = randn(y.sizes(), g, opts(c.dtype));
}

std::string act_name(Activation a) { return a == Activation::lrelu ? "lrelu" : "linear"; }

ModConvConfig mc_config(int64_t cin, int64_t cout, int64_t k, int64_t w_dim, int64_t n, bool demod, bool up,
                        Activation act, bool bias = true, double lr = 1.0) {
  ModConvConfig c;
  c.in_channels = cin;
  c.out_channels = cout;
  c.kernel_size = k;
  c.w_dim = w_dim;
  c.num_kernels = n;
  c.demodulate = demod;
  c.upsample = up;
  c.activation = act;
  c.bias = bias;
  c.lr_mul = lr;
  return c;
}

json mc_json(const ModConvConfig& c) {
  return json{{"kind", "modconv"}, {"demod", c.demodulate},       {"up", c.upsample}, {"act", act_name(c.activation)},
              {"lr_mul", c.lr_mul}, {"eps", c.eps},                {"inputs", {"x", "w"}}};
}

Case modconv_case(const std::string& name, const ModConvConfig& mc, int64_t B, int64_t H, uint64_t seed,
                  DType dt = DType::f32) {
  Case c;
  c.name = name;
  c.cfg = mc_json(mc);
  c.dtype = dt;
  c.seed = seed;
  c.make = [mc] { return std::make_unique<ModulatedConv2d>(mc); };
  c.inputs = {{"x", {B, mc.in_channels, H, H}}, {"w", {B, mc.w_dim}}};
  c.forward = [](Module& m, const TensorList& xs) { return static_cast<ModulatedConv2d&>(m).forward(xs[0], xs[1]); };
  return c;
}

Case torgb_case(const std::string& name, int64_t cin, int64_t w_dim, int64_t n, int64_t B, int64_t H, uint64_t seed) {
  Case c;
  c.name = name;
  c.cfg = json{{"kind", "modconv"}, {"demod", false}, {"up", false}, {"act", "linear"},
               {"lr_mul", 1.0},     {"eps", 1e-8},    {"inputs", {"x", "w"}}};
  c.seed = seed;
  c.make = [=] { return std::make_unique<ToRGB>(cin, w_dim, n); };
  c.inputs = {{"x", {B, cin, H, H}}, {"w", {B, w_dim}}};
  c.forward = [](Module& m, const TensorList& xs) { return static_cast<ToRGB&>(m).forward(xs[0], xs[1]); };
  return c;
}

Case modlinear_case(const std::string& name, int64_t cin, int64_t cout, int64_t w_dim, bool bias, Activation act,
                    bool demod, double lr, int64_t B, int64_t T, uint64_t seed) {
  Case c;
  c.name = name;
  c.cfg = json{{"kind", "modlinear"}, {"demod", demod}, {"act", act_name(act)},
               {"lr_mul", lr},        {"eps", 1e-8},    {"inputs", {"x", "w"}}};
  c.seed = seed;
  c.make = [=] { return std::make_unique<ModulatedLinear>(cin, cout, w_dim, bias, act, lr, demod); };
  c.inputs = {{"x", {B, T, cin}}, {"w", {B, w_dim}}};
  c.forward = [](Module& m, const TensorList& xs) { return static_cast<ModulatedLinear&>(m).forward(xs[0], xs[1]); };
  return c;
}

Case resconv_case(const std::string& name, int64_t cin, int64_t cout, int64_t w_dim, int64_t n, bool up, int64_t B,
                  int64_t H, uint64_t seed) {
  ResConvConfig rc;
  rc.in_channels = cin;
  rc.out_channels = cout;
  rc.w_dim = w_dim;
  rc.num_kernels = n;
  rc.upsample = up;
  Case c;
  c.name = name;
  c.cfg = json{{"kind", "resconv"}, {"up", up}, {"lr_mul", 1.0}, {"eps", 1e-8}, {"gain", 0.4}, {"inputs", {"x", "w"}}};
  c.seed = seed;
  c.make = [rc] { return std::make_unique<ResConv>(rc); };
  c.inputs = {{"x", {B, cin, H, H}}, {"w", {B, w_dim}}};
  c.forward = [](Module& m, const TensorList& xs) { return static_cast<ResConv&>(m).forward(xs[0], xs[1]); };
  return c;
}

Case mapping_case(const std::string& name, const MappingConfig& mc, int64_t B, uint64_t seed) {
  Case c;
  c.name = name;
  c.cfg = json{{"kind", "mapping"}, {"layers", mc.num_layers}, {"lr_mul", mc.lr_mul}};
  c.cfg["inputs"] = mc.c_dim > 0 ? json{"z", "t"} : json{"z"};
  c.cfg["buffers"] = {"w_avg"};
  c.seed = seed;
  c.make = [mc] { return std::make_unique<MappingNetwork>(mc); };
  c.inputs = {{"z", {B, mc.z_dim}}};
  if (mc.c_dim > 0) c.inputs.push_back({"t", {B, mc.c_dim}});
  c.forward = [](Module& m, const TensorList& xs) {
    return static_cast<MappingNetwork&>(m).forward(xs[0], xs.size() > 1 ? xs[1] : Tensor());
  };
  return c;
}

Case fourier_case(const std::string& name, const FourierConfig& fc, int64_t B, uint64_t seed) {
  Case c;
  c.name = name;
  c.cfg = json{{"kind", "fourier"}, {"size", fc.size}, {"sr", fc.sampling_rate}, {"inputs", {"w"}}};
  c.cfg["buffers"] = {"transform", "freqs", "phases"};
  c.seed = seed;
  c.make = [fc] { return std::make_unique<FourierFeatures>(fc); };
  c.inputs = {{"w", {B, fc.w_dim}}};
  c.forward = [](Module& m, const TensorList& xs) { return static_cast<FourierFeatures&>(m).forward(xs[0]); };
  return c;
}

const std::vector<Case>& parity_cases() {
  static const std::vector<Case> cases = [] {
    const auto L = Activation::lrelu, Lin = Activation::linear;
    std::vector<Case> v;
    // ModulatedConv2d: N = 1 / 4, demod on / off, up on / off, k = 3 / 1.
    v.push_back(modconv_case("mc_n1_k3", mc_config(6, 5, 3, 7, 1, true, false, L), 3, 6, 1));
    v.push_back(modconv_case("mc_n4_k3", mc_config(6, 5, 3, 7, 4, true, false, L), 3, 6, 2));
    v.push_back(modconv_case("mc_n1_k3_up", mc_config(6, 5, 3, 7, 1, true, true, L), 2, 5, 3));
    v.push_back(modconv_case("mc_n4_k3_up", mc_config(6, 5, 3, 7, 4, true, true, L), 3, 4, 4));
    v.push_back(modconv_case("mc_n1_k3_nodemod", mc_config(6, 5, 3, 7, 1, false, false, L), 2, 5, 5));
    v.push_back(modconv_case("mc_n4_k3_nodemod_up", mc_config(6, 5, 3, 7, 4, false, true, Lin), 2, 4, 6));
    v.push_back(modconv_case("mc_n1_k1", mc_config(8, 4, 1, 5, 1, true, false, L), 2, 5, 7));
    v.push_back(modconv_case("mc_n4_k1_up", mc_config(8, 4, 1, 5, 4, true, true, L), 2, 4, 8));
    v.push_back(modconv_case("mc_n4_k1_nodemod", mc_config(8, 4, 1, 5, 4, false, false, Lin), 3, 4, 9));
    v.push_back(modconv_case("mc_n2_k5_lr_nobias", mc_config(4, 6, 5, 6, 2, true, false, L, false, 0.5), 2, 7, 10));
    v.push_back(modconv_case("mc_n2_k3_up_wide", mc_config(32, 24, 3, 16, 2, true, true, L), 2, 8, 11));
    v.push_back(modconv_case("mc_n4_k3_up_f64", mc_config(6, 5, 3, 7, 4, true, true, L), 2, 4, 12, DType::f64));
    // ToRGB (1x1, no demodulation, linear, bias).
    v.push_back(torgb_case("torgb_n1", 12, 9, 1, 3, 4, 20));
    v.push_back(torgb_case("torgb_n4", 12, 9, 4, 2, 8, 21));
    // ModulatedLinear (attention proj_out, MoE router).
    v.push_back(modlinear_case("ml_proj_out", 16, 12, 10, true, Lin, true, 1.0, 3, 9, 30));
    v.push_back(modlinear_case("ml_router", 16, 6, 10, true, L, true, 1.0, 2, 16, 31));
    v.push_back(modlinear_case("ml_nodemod_nobias_lr", 16, 6, 10, false, Lin, false, 0.25, 2, 5, 32));
    // ResConv: identity skip, 1x1 skip, upsampling skip (with adaptive kernels).
    v.push_back(resconv_case("res_identity", 8, 8, 6, 1, false, 2, 4, 40));
    v.push_back(resconv_case("res_channels", 8, 6, 6, 2, false, 2, 4, 41));
    v.push_back(resconv_case("res_up", 8, 6, 6, 2, true, 2, 4, 42));
    // MappingNetwork.
    {
      MappingConfig mc;
      mc.z_dim = 8, mc.c_dim = 12, mc.w_dim = 10, mc.hidden = 16, mc.num_layers = 4;
      v.push_back(mapping_case("map_text", mc, 3, 50));
      mc.c_dim = 0, mc.num_layers = 2, mc.lr_mul = 1.0;
      v.push_back(mapping_case("map_uncond", mc, 2, 51));
    }
    // FourierFeatures.
    {
      FourierConfig fc;
      fc.w_dim = 6, fc.channels = 10;
      v.push_back(fourier_case("fourier_4", fc, 3, 60));
      fc.size = 6, fc.sampling_rate = 5, fc.bandwidth = 1.5;
      v.push_back(fourier_case("fourier_6", fc, 2, 61));
    }
    return v;
  }();
  return cases;
}

// ---- Running the reference ------------------------------------------------------------------

const std::string& parity_dir() {
  static std::string dir;
  static bool done = false;
  if (!done) {
    done = true;
    dir = parity::make_tmpdir("test_modconv");
    std::vector<std::string> names;
    for (const Case& c : parity_cases()) {
      Built b;
      build(c, b);
      save_state_dict(*b.m, dir + "/" + c.name + ".weights.safetensors");
      io::NamedTensors ins;
      for (size_t i = 0; i < c.inputs.size(); ++i) ins.push_back({"in/" + c.inputs[i].first, b.xs[i]});
      ins.push_back({"gy", b.gy});
      io::save_safetensors(dir + "/" + c.name + ".inputs.safetensors", ins, {{"config", c.cfg.dump()}});
      names.push_back(c.name);
    }
    if (!parity::run_script("ref_modconv.py", dir, names)) dir.clear();
  }
  return dir;
}

std::string g_report;

void check_close(const std::string& what, const Tensor& ours_in, const Tensor& ref, DType dt) {
  const Tensor ours = ours_in.defined() ? ours_in : zeros(ref.sizes(), opts(ref.dtype()));
  REQUIRE_MESSAGE(ours.sizes() == ref.sizes(), what << ": shape " << ours.sizes().str() << " vs " << ref.sizes().str());
  const double rtol = dt == DType::f64 ? 1e-9 : 1e-4;
  const double atol = dt == DType::f64 ? 1e-11 : 1e-5;
  const std::vector<double> a = ours.to_vector(), r = ref.to_vector();
  double worst = 0, worst_abs = 0, ref_max = 0;
  size_t wi = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(a[i] - r[i]);
    const double ratio = std::isnan(d) ? INFINITY : d / (atol + rtol * std::fabs(r[i]));
    if (ratio > worst) worst = ratio, wi = i;
    if (d > worst_abs || std::isnan(d)) worst_abs = d;
    ref_max = std::max(ref_max, std::fabs(r[i]));
  }
  char buf[240];
  std::snprintf(buf, sizeof buf, "\n  %-34s max|diff| %.3g  max|ref| %.3g  worst/allowed %.3f", what.c_str(), worst_abs,
                ref_max, worst);
  g_report += buf;
  CHECK_MESSAGE(worst <= 1.0, what << ": element " << wi << " ours " << (a.empty() ? 0 : a[wi]) << " ref "
                                   << (r.empty() ? 0 : r[wi]) << " (worst/allowed " << worst << ")");
}

void run_parity(const Case& c) {
  const std::string& dir = parity_dir();
  REQUIRE_MESSAGE(!dir.empty(), "the PyTorch reference did not run");
  INFO("case " << c.name);
  g_report.clear();
  const auto ref = io::load_safetensors(dir + "/" + c.name + ".out.safetensors");
  Built b;
  build(c, b);
  const Tensor y = c.forward(*b.m, b.xs);
  check_close("y", y, ref.at("out/y"), c.dtype);
  TensorList wrt = b.xs;
  std::vector<std::string> names;
  for (const auto& in : c.inputs) names.push_back(in.first);
  for (auto& [name, p] : b.store.parameters()) {
    wrt.push_back(p->value);
    names.push_back(name);
  }
  const TensorList g = autograd::grad({y}, wrt, {b.gy}, false, /*allow_unused=*/true);
  REQUIRE(ref.size() == 1 + names.size());  // every input and parameter has a reference gradient
  for (size_t i = 0; i < names.size(); ++i) check_close("grad/" + names[i], g[i], ref.at("grad/" + names[i]), c.dtype);
  MESSAGE("parity " << c.name << " (" << std::string(dtype_name(c.dtype)) << ", " << b.store.numel()
                    << " parameters):" << g_report);
}

// Names of a module's parameters, in registration order.
std::vector<std::string> param_names(Module& m) {
  std::vector<std::string> out;
  for (auto& [n, p] : m.named_parameters()) out.push_back(n);
  return out;
}

}  // namespace

// ---- Parity ---------------------------------------------------------------------------------

TEST_CASE("ModulatedConv2d parity with PyTorch") {
  for (const Case& c : parity_cases())
    if (c.cfg["kind"] == "modconv" && c.name.rfind("mc_", 0) == 0) {
      SUBCASE(c.name.c_str()) { run_parity(c); }
    }
}

TEST_CASE("ToRGB parity with PyTorch") {
  for (const Case& c : parity_cases())
    if (c.name.rfind("torgb_", 0) == 0) {
      SUBCASE(c.name.c_str()) { run_parity(c); }
    }
}

TEST_CASE("ModulatedLinear parity with PyTorch") {
  for (const Case& c : parity_cases())
    if (c.cfg["kind"] == "modlinear") {
      SUBCASE(c.name.c_str()) { run_parity(c); }
    }
}

TEST_CASE("ResConv parity with PyTorch") {
  for (const Case& c : parity_cases())
    if (c.cfg["kind"] == "resconv") {
      SUBCASE(c.name.c_str()) { run_parity(c); }
    }
}

TEST_CASE("MappingNetwork parity with PyTorch") {
  for (const Case& c : parity_cases())
    if (c.cfg["kind"] == "mapping") {
      SUBCASE(c.name.c_str()) { run_parity(c); }
    }
}

TEST_CASE("FourierFeatures parity with PyTorch") {
  for (const Case& c : parity_cases())
    if (c.cfg["kind"] == "fourier") {
      SUBCASE(c.name.c_str()) { run_parity(c); }
    }
}

// ---- gradcheck / gradgradcheck (f64) ---------------------------------------------------------

namespace {
struct Tiny {
  std::unique_ptr<ModulatedConv2d> m;
  ParameterStore store;
  TensorList inputs;  // x, w, then every parameter
};

void make_tiny(Tiny& t, const ModConvConfig& c, int64_t B, int64_t H, uint64_t seed) {
  t.m = std::make_unique<ModulatedConv2d>(c);
  t.store.materialize(*t.m, seed, TensorOptions{DType::f64, Device::cpu(), memory::Kind::param});
  perturb(t.store, seed + 1, DType::f64);
  Generator g(seed + 2);
  t.inputs = {randn({B, c.in_channels, H, H}, g, opts(DType::f64)).requires_grad_(true),
              randn({B, c.w_dim}, g, opts(DType::f64)).requires_grad_(true)};
  for (auto& [n, p] : t.store.parameters()) t.inputs.push_back(p->value);
}
}  // namespace

TEST_CASE("ModulatedConv2d gradcheck (f64) w.r.t. x, w and every parameter") {
  const auto L = Activation::lrelu;
  struct G {
    const char* name;
    ModConvConfig c;
  };
  const std::vector<G> configs = {
      {"n2_k3_demod", mc_config(3, 2, 3, 4, 2, true, false, L)},
      {"n2_k3_demod_up", mc_config(3, 2, 3, 4, 2, true, true, L)},
      {"n1_k1_nodemod_up", mc_config(3, 2, 1, 4, 1, false, true, Activation::linear)},
      {"n3_k3_nodemod", mc_config(2, 3, 3, 4, 3, false, false, L)},
  };
  for (const G& g : configs) {
    SUBCASE(g.name) {
      Tiny t;
      make_tiny(t, g.c, 2, 3, 5);
      ModulatedConv2d* m = t.m.get();
      const std::string err =
          autograd::gradcheck([m](const TensorList& in) { return m->forward(in[0], in[1]); }, t.inputs);
      CHECK_MESSAGE(err.empty(), err);
    }
  }
}

TEST_CASE("ModulatedConv2d gradgradcheck (f64): d/dx sum(modconv(x)) is differentiable") {
  const auto L = Activation::lrelu;
  for (bool up : {false, true}) {
    SUBCASE(up ? "up" : "no_up") {
      Tiny t;
      make_tiny(t, mc_config(2, 2, 3, 3, 2, true, up, L), 2, 3, 9);
      ModulatedConv2d* m = t.m.get();
      // The R1 shape: g = d sum(y) / dx (create_graph), then differentiate <g, u> w.r.t. x, w and
      // every parameter: gradgradcheck does exactly this for f(inputs) = y.
      const std::string err =
          autograd::gradgradcheck([m](const TensorList& in) { return m->forward(in[0], in[1]); }, t.inputs);
      CHECK_MESSAGE(err.empty(), err);
      // And explicitly: the gradient of sum(y) w.r.t. x carries a graph reaching the parameters.
      const Tensor y = m->forward(t.inputs[0], t.inputs[1]);
      const TensorList gx = autograd::grad({sum(y)}, {t.inputs[0]}, {}, /*create_graph=*/true);
      REQUIRE(gx[0].requires_grad());
      const TensorList gg = autograd::grad({sum(square(gx[0]))}, {m->weight.value, t.inputs[1]}, {}, false, true);
      CHECK(gg[0].defined());
      CHECK(gg[1].defined());
      double n0 = 0;
      for (double v : gg[0].to_vector()) n0 += v * v;
      CHECK(n0 > 0);
    }
  }
}

TEST_CASE("ModulatedLinear and ResConv gradcheck (f64)") {
  SUBCASE("modulated_linear") {
    ModulatedLinear m(4, 3, 5, true, Activation::lrelu);
    ParameterStore s;
    s.materialize(m, 3, TensorOptions{DType::f64, Device::cpu(), memory::Kind::param});
    perturb(s, 4, DType::f64);
    Generator g(5);
    TensorList in = {randn({2, 3, 4}, g, opts(DType::f64)).requires_grad_(true),
                     randn({2, 5}, g, opts(DType::f64)).requires_grad_(true)};
    for (auto& [n, p] : s.parameters()) in.push_back(p->value);
    const std::string err = autograd::gradcheck([&m](const TensorList& i) { return m.forward(i[0], i[1]); }, in);
    CHECK_MESSAGE(err.empty(), err);
    const std::string err2 = autograd::gradgradcheck([&m](const TensorList& i) { return m.forward(i[0], i[1]); }, in);
    CHECK_MESSAGE(err2.empty(), err2);
  }
  SUBCASE("resconv_up") {
    ResConvConfig rc;
    rc.in_channels = 2, rc.out_channels = 3, rc.w_dim = 3, rc.num_kernels = 2, rc.upsample = true;
    ResConv m(rc);
    ParameterStore s;
    s.materialize(m, 6, TensorOptions{DType::f64, Device::cpu(), memory::Kind::param});
    perturb(s, 7, DType::f64);
    Generator g(8);
    TensorList in = {randn({2, 2, 3, 3}, g, opts(DType::f64)).requires_grad_(true),
                     randn({2, 3}, g, opts(DType::f64)).requires_grad_(true)};
    for (auto& [n, p] : s.parameters()) in.push_back(p->value);
    const std::string err = autograd::gradcheck([&m](const TensorList& i) { return m.forward(i[0], i[1]); }, in);
    CHECK_MESSAGE(err.empty(), err);
  }
}

// ---- Structure: names, shapes, parameter counts of the released model ------------------------

TEST_CASE("ModulatedConv2d: released parameter names and shapes") {
  ModulatedConv2d a(mc_config(6, 5, 3, 7, 1, true, false, Activation::lrelu));
  CHECK(param_names(a) == std::vector<std::string>{"weight", "bias", "style.weight", "style.bias"});
  CHECK(a.weight.shape == Dims{1, 5, 6, 3, 3});
  CHECK(a.filter_weight == nullptr);
  ModulatedConv2d b(mc_config(6, 5, 3, 7, 4, true, true, Activation::lrelu));
  CHECK(param_names(b) == std::vector<std::string>{"weight", "bias", "style.weight", "style.bias",
                                                   "filter_weight.weight", "filter_weight.bias"});
  CHECK(b.weight.shape == Dims{4, 5, 6, 3, 3});
  CHECK(b.style.weight.shape == Dims{6, 7});
  CHECK(b.filter_weight->weight.shape == Dims{4, 7});
  ModulatedLinear l(16, 4, 8);
  CHECK(param_names(l) == std::vector<std::string>{"weight", "bias", "style.weight", "style.bias"});
  CHECK(l.weight.shape == Dims{4, 16});
  ResConvConfig rc;
  rc.in_channels = 8, rc.out_channels = 6, rc.w_dim = 5, rc.num_kernels = 2, rc.upsample = true;
  ResConv r(rc);
  const auto rn = param_names(r);
  CHECK(rn.back() == "skip_connection.weight");
  CHECK(r.skip_connection->weight.shape == Dims{6, 8, 1, 1});
  CHECK(std::count(rn.begin(), rn.end(), "conv1.filter_weight.weight") == 1);
  rc.upsample = false, rc.out_channels = 8;
  ResConv r2(rc);
  CHECK(r2.skip_connection == nullptr);
  MappingNetwork mp(MappingConfig{});
  CHECK(param_names(mp) == std::vector<std::string>{"dense0.weight", "dense0.bias", "dense1.weight", "dense1.bias",
                                                    "dense2.weight", "dense2.bias", "dense3.weight", "dense3.bias"});
  FourierConfig fc;
  fc.w_dim = 8, fc.channels = 4;
  FourierFeatures ff(fc);
  CHECK(param_names(ff) == std::vector<std::string>{"weight", "affine.weight", "affine.bias"});
  std::vector<std::string> bn;
  for (auto& [n, b] : ff.named_buffers()) bn.push_back(n);
  CHECK(bn == std::vector<std::string>{"transform", "freqs", "phases"});
}

TEST_CASE("Parameter counts of the released 64x64 model (spec section 10), meta mode") {
  // Nothing is allocated: num_parameters() counts registered shapes.
  const auto L = Activation::lrelu;
  // The 3x3 ModConv 1600 -> 1600 at 4x4 (N = 1): K + bias + style.
  ModulatedConv2d c4(mc_config(1600, 1600, 3, 1024, 1, true, false, L));
  CHECK(c4.num_parameters() == 1600LL * 1600 * 9 + 1600 + 1024LL * 1600 + 1600);
  // ToRGB at 4 (1.64 M) and at 16 (N = 2: 1.06 M).
  ToRGB t4(1600, 1024, 1), t16(1024, 1024, 2);
  CHECK(t4.num_parameters() == 1644803);
  CHECK(t16.num_parameters() == 2LL * 3 * 1024 + 3 + 1024LL * 1024 + 1024 + 2LL * 1024 + 2);
  CHECK(std::abs(double(t16.num_parameters()) - 1.06e6) < 0.005e6);
  // Fourier input: 2.56 M.
  FourierConfig fc;
  fc.w_dim = 1024, fc.channels = 1600;
  FourierFeatures ff(fc);
  CHECK(std::abs(double(ff.num_parameters()) - 2.56e6) < 0.01e6);
  // Mapping: 1152 -> 1024, then 3 x 1024 -> 1024: 4.33 M.
  MappingNetwork mp(MappingConfig{});
  CHECK(mp.num_parameters() == 1152LL * 1024 + 1024 + 3 * (1024LL * 1024 + 1024));
  CHECK(std::abs(double(mp.num_parameters()) - 4.33e6) < 0.01e6);
  // The spec's conv counts include MTM (spec 4, another engineer's module, analytic here): per MTM
  // conv with Cin inputs, its style (w_dim Cin + Cin), its 27-channel 3x3 kernel (27 Cin 9) and the
  // 1x27x1x1 scale and bias. Three MTM convs at 4x4 (first conv, conv2 of 2 blocks) and at 8x8.
  const double mtm1600 = 1024.0 * 1600 + 1600 + 27.0 * 1600 * 9 + 27 + 27;
  // Res 4 convs: first ModConv + 2 ResConv (identity skips) + 3 MTM = 129.5 M.
  ResConvConfig rc;
  rc.in_channels = rc.out_channels = 1600, rc.w_dim = 1024;
  ResConv r4a(rc), r4b(rc);
  const double res4 = double(c4.num_parameters() + r4a.num_parameters() + r4b.num_parameters()) + 3 * mtm1600;
  CHECK(std::abs(res4 - 129.5e6) < 0.1e6);
  // Res 8 convs: 3 ResConv 1600 -> 1600, the first upsampling (1x1 skip), + 3 MTM: 156.7 M.
  rc.upsample = true;
  ResConv r8a(rc);
  rc.upsample = false;
  ResConv r8b(rc), r8c(rc);
  const double res8 = double(r8a.num_parameters() + r8b.num_parameters() + r8c.num_parameters()) + 3 * mtm1600;
  CHECK(std::abs(res8 - 156.7e6) < 0.1e6);
}

// ---- Behaviour --------------------------------------------------------------------------------

TEST_CASE("Demodulation: output invariant to the kernel's scale and to a global style scale") {
  ModulatedConv2d m(mc_config(4, 3, 3, 5, 2, true, false, Activation::linear));
  ParameterStore s;
  s.materialize(m, 3, TensorOptions{DType::f64, Device::cpu(), memory::Kind::param});
  Generator g(4);
  const Tensor x = randn({2, 4, 5, 5}, g, opts(DType::f64));
  const Tensor w = randn({2, 5}, g, opts(DType::f64));
  autograd::NoGradGuard ng;
  const Tensor y0 = m.forward(x, w);
  mul_(m.weight.value, 7.5);  // scales every kernel of the bank
  const Tensor y1 = m.forward(x, w);
  mul_(m.style.weight.value, 0.2);  // scales s by a global factor (together with the bias)
  mul_(m.style.bias->value, 0.2);
  const Tensor y2 = m.forward(x, w);
  const auto a = y0.to_vector(), b = y1.to_vector(), c = y2.to_vector();
  for (size_t i = 0; i < a.size(); ++i) {
    CHECK(b[i] == doctest::Approx(a[i]).epsilon(1e-9));
    CHECK(c[i] == doctest::Approx(a[i]).epsilon(1e-9));
  }
  // Each output channel of the demodulated per-sample weight has unit norm (up to eps).
  const Tensor wb = m.modulated_weight(w);  // [B, Cout, Cin, k, k]
  for (double n2 : sum(square(wb), {2, 3, 4}).to_vector()) CHECK(n2 == doctest::Approx(1.0).epsilon(1e-9));
}

TEST_CASE("Adaptive kernels: alpha = softmax(A_f w + b_f); one-hot alpha selects a kernel") {
  ModulatedConv2d m(mc_config(3, 2, 3, 4, 3, true, false, Activation::lrelu));
  ParameterStore s;
  s.materialize(m, 8, TensorOptions{DType::f64, Device::cpu(), memory::Kind::param});
  autograd::NoGradGuard ng;
  Generator g(9);
  const Tensor w = randn({2, 4}, g, opts(DType::f64));
  // At init b_f = 1 and A_f = N(0,1) (weight gain 1/2): alpha sums to one per sample.
  const Tensor alpha = m.kernel_weights(w);
  CHECK(alpha.sizes() == Dims{2, 3});
  for (double v : sum(alpha, {1}).to_vector()) CHECK(v == doctest::Approx(1.0));
  // Force alpha = e_1: the selected kernel is K_1.
  zero_(m.filter_weight->weight.value);
  copy_(m.filter_weight->bias->value, from_vector({-50, 50, -50}, {3}, opts(DType::f64)));
  const Tensor k = m.selected_kernel(w);  // [B, Cout, Cin, k, k]
  const auto got = select(k, 0, 1).to_vector(), want = select(m.weight.value, 0, 1).to_vector();
  for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-12));
}

namespace {
// A stand-in MTM: the plain grouped conv (what deformable conv with zero offsets and mask 1 gives),
// plus a counter so the test sees that the hook ran.
class PlainConvMTM : public ModConvMTM {
 public:
  PlainConvMTM() : ModConvMTM("PlainConvMTM"), scale(register_parameter("scale", {1}, Init::ones())) {}
  Tensor conv(const Tensor& x, const Tensor& w, const Tensor& wg, int64_t padding) const override {
    ++calls;
    CHECK(w.dim() == 2);
    const int64_t B = x.size(0);
    const Tensor y = conv2d(reshape(x, {1, B * x.size(1), x.size(2), x.size(3)}), wg, Tensor(),
                            Conv2dParams::make(1, padding, 1, B));
    return mul(reshape(y, {B, wg.size(0) / B, y.size(2), y.size(3)}), scale.value);
  }
  Parameter& scale;
  mutable int calls = 0;
};
}  // namespace

TEST_CASE("MTM hook: attach_mtm replaces the main conv; names; rejected on upsampling convs") {
  ResConvConfig rc;
  rc.in_channels = rc.out_channels = 4, rc.w_dim = 3, rc.num_kernels = 2;
  ResConv a(rc), b(rc);
  PlainConvMTM& mtm = b.conv2.attach_mtm<PlainConvMTM>();
  CHECK(param_names(b).back() == "conv2.mtm.scale");
  CHECK_THROWS_AS(b.conv2.attach_mtm<PlainConvMTM>(), Error);
  CHECK_THROWS_AS(ModulatedConv2d(mc_config(4, 4, 3, 3, 1, true, true, Activation::lrelu)).attach_mtm<PlainConvMTM>(),
                  Error);
  ParameterStore sa, sb;
  sa.materialize(a, 5);
  sb.materialize(b, 5);  // same seed; b has one more parameter at the end
  Generator g(1);
  const Tensor x = randn({2, 4, 5, 5}, g), w = randn({2, 3}, g);
  const Tensor ya = a.forward(x, w), yb = b.forward(x, w);
  CHECK(mtm.calls == 1);
  const auto va = ya.to_vector(), vb = yb.to_vector();
  for (size_t i = 0; i < va.size(); ++i) CHECK(vb[i] == doctest::Approx(va[i]).epsilon(1e-6));
  // The hook's parameters receive gradients through the block.
  const TensorList gs = autograd::grad({sum(yb)}, {mtm.scale.value}, {}, false);
  CHECK(gs[0].defined());
}

TEST_CASE("upsample2d: a constant image stays constant away from the border; 2x size") {
  const Tensor x = full({1, 2, 4, 4}, 3.0);
  const Tensor y = upsample2d(x);
  CHECK(y.sizes() == Dims{1, 2, 8, 8});
  // Interior pixels see the full filter: value 3 (gain 4 compensates the zero insertion).
  for (int64_t i = 2; i < 6; ++i)
    for (int64_t j = 2; j < 6; ++j) CHECK(select(select(select(select(y, 0, 0), 0, 1), 0, i), 0, j).item() ==
                                          doctest::Approx(3.0));
}

TEST_CASE("ToRGB skip sum: img_r = y_r + Up2(img_{r/2}), in f32") {
  Generator g(2);
  const Tensor y8 = randn({2, 3, 8, 8}, g), img4 = randn({2, 3, 4, 4}, g);
  const Tensor img8 = skip_image_sum(y8, img4);
  const auto a = img8.to_vector(), b = add(y8, upsample2d(img4)).to_vector();
  for (size_t i = 0; i < a.size(); ++i) CHECK(a[i] == doctest::Approx(b[i]));
  CHECK(skip_image_sum(y8, Tensor()).to_vector() == y8.to_vector());
  CHECK(skip_image_sum(to_dtype(y8, DType::bf16), Tensor()).dtype() == DType::f32);
  CHECK_THROWS_AS(skip_image_sum(y8, y8), Error);
}

TEST_CASE("MappingNetwork: w_avg update (no grad) and truncation") {
  MappingConfig mc;
  mc.z_dim = 4, mc.c_dim = 3, mc.w_dim = 5, mc.hidden = 6;
  MappingNetwork m(mc);
  ParameterStore s;
  s.materialize(m, 1);
  Generator g(3);
  const Tensor z = randn({4, 4}, g), t = randn({4, 3}, g);
  const Tensor w = m.forward(z, t);
  CHECK(w.sizes() == Dims{4, 5});
  CHECK(w.requires_grad());
  for (double v : m.w_avg.value.to_vector()) CHECK(v == 0.0);
  m.update_w_avg(w, 0.9);
  const auto mean_w = mean(w.detach(), {0}).to_vector();
  auto avg = m.w_avg.value.to_vector();
  for (size_t i = 0; i < avg.size(); ++i) CHECK(avg[i] == doctest::Approx(0.1 * mean_w[i]));
  m.update_w_avg(w, 0.5);
  const auto avg2 = m.w_avg.value.to_vector();
  for (size_t i = 0; i < avg.size(); ++i) CHECK(avg2[i] == doctest::Approx(mean_w[i] + 0.5 * (avg[i] - mean_w[i])));
  CHECK_FALSE(m.w_avg.value.requires_grad());
  // truncate(w, psi) = w_avg + psi (w - w_avg); psi = 1 is the identity, psi = 0 gives w_avg.
  const auto t0 = m.truncate(w, 0.0).to_vector();
  for (size_t i = 0; i < t0.size(); ++i) CHECK(t0[i] == doctest::Approx(avg2[i % 5]));
  const auto t1 = m.truncate(w, 1.0).to_vector(), wv = w.to_vector();
  for (size_t i = 0; i < t1.size(); ++i) CHECK(t1[i] == doctest::Approx(wv[i]));
  // PixelNorm: unit mean square per row.
  const Tensor pn = pixel_norm(randn({3, 7}, g));
  for (double v : mean(square(pn), {1}).to_vector()) CHECK(v == doctest::Approx(1.0).epsilon(1e-6));
  CHECK_THROWS_AS(m.forward(z), Error);  // the text condition is required
  CHECK_THROWS_AS(m.update_w_avg(w, 1.5), Error);
}

TEST_CASE("FourierFeatures: buffers as StyleGAN3 draws them; identity transform at init") {
  FourierConfig fc;
  fc.w_dim = 5, fc.channels = 64, fc.bandwidth = 2.0;
  FourierFeatures f(fc);
  ParameterStore s;
  s.materialize(f, 11);
  const auto fr = f.freqs.value.to_vector(), ph = f.phases.value.to_vector();
  double max_r = 0;
  for (int64_t c = 0; c < 64; ++c) {
    const double r = std::hypot(fr[size_t(2 * c)], fr[size_t(2 * c + 1)]);
    max_r = std::max(max_r, r);
    CHECK(r > 0);
    // radius = exp(-|n|^2 / 4) * bandwidth, in (0, bandwidth]
    CHECK(r <= 2.0 + 1e-12);
    CHECK(ph[size_t(c)] >= -0.5);
    CHECK(ph[size_t(c)] < 0.5);
  }
  CHECK(f.transform.value.to_vector() == std::vector<double>{1, 0, 0, 0, 1, 0, 0, 0, 1});
  // Different seeds give different buffers; the same seed the same ones.
  FourierFeatures f2(fc), f3(fc);
  ParameterStore s2, s3;
  s2.materialize(f2, 11);
  s3.materialize(f3, 12);
  CHECK(f2.freqs.value.to_vector() == fr);
  CHECK(f3.freqs.value.to_vector() != fr);
  // At init (affine weight 0, bias (1,0,0,0)): x[c, i, j] = sin(2 pi (g_j f_c0 + g_i f_c1 + phi_c)), then
  // the mixing. Check the pre-mixing features by making the mixing the identity * sqrt(C).
  {
    autograd::NoGradGuard ng;
    zero_(f.weight.value);
    const Tensor eye = mul(from_vector(std::vector<double>(64, 1.0), {64}), std::sqrt(64.0));
    for (int64_t c = 0; c < 64; ++c) copy_(select(select(f.weight.value, 0, c), 0, c), select(eye, 0, c));
  }
  Generator g(1);
  const Tensor w = randn({2, 5}, g);
  const Tensor y = f.forward(w);
  CHECK(y.sizes() == Dims{2, 64, 4, 4});
  const auto yv = y.to_vector();
  for (int64_t c = 0; c < 64; c += 7)
    for (int64_t i = 0; i < 4; ++i)
      for (int64_t j = 0; j < 4; ++j) {
        const double gx = ((2.0 * j + 1) / 4 - 1) * 0.5, gy = ((2.0 * i + 1) / 4 - 1) * 0.5;
        const double want = std::sin(2 * M_PI * (gx * fr[size_t(2 * c)] + gy * fr[size_t(2 * c + 1)] + ph[size_t(c)]));
        for (int64_t b = 0; b < 2; ++b)
          CHECK(yv[size_t(((b * 64 + c) * 4 + i) * 4 + j)] == doctest::Approx(want).epsilon(1e-5));
      }
}

TEST_CASE("Bad shapes and configs raise engine::Error") {
  CHECK_THROWS_AS(ModulatedConv2d(mc_config(4, 4, 2, 3, 1, true, false, Activation::lrelu)), Error);  // even k
  CHECK_THROWS_AS(ModulatedConv2d(mc_config(4, 4, 3, 3, 0, true, false, Activation::lrelu)), Error);  // N = 0
  ModulatedConv2d m(mc_config(4, 4, 3, 3, 2, true, false, Activation::lrelu));
  ParameterStore s;
  s.materialize(m, 1);
  Generator g(1);
  CHECK_THROWS_AS(m.forward(randn({2, 5, 4, 4}, g), randn({2, 3}, g)), Error);  // Cin
  CHECK_THROWS_AS(m.forward(randn({2, 4, 4, 4}, g), randn({3, 3}, g)), Error);  // batch of w
  CHECK_THROWS_AS(m.forward(randn({2, 4, 4, 4}, g), randn({2, 4}, g)), Error);  // w_dim
  CHECK_THROWS_AS(m.forward(randn({4, 4, 4}, g), randn({2, 3}, g)), Error);     // 3-D x
  ModulatedLinear l(4, 3, 2);
  ParameterStore sl;
  sl.materialize(l, 1);
  CHECK_THROWS_AS(l.forward(randn({2, 5, 3}, g), randn({2, 2}, g)), Error);
  CHECK_THROWS_AS(modulated_linear(randn({2, 5, 4}, g), randn({2, 3}, g), randn({3, 4}, g), Tensor()), Error);
  FourierConfig fc;
  CHECK_THROWS_AS(FourierFeatures{fc}, Error);  // channels = 0
  MappingConfig mc;
  mc.num_layers = 0;
  CHECK_THROWS_AS(MappingNetwork{mc}, Error);
}

// test_discriminator.cpp: Aurora's MS-I/O discriminator (aurora/discriminator.h, nn/disc_*.h) and
// its config (aurora/config.h).
//
//  1. Config: presets load; missing / unknown / mistyped keys and inconsistent geometry give
//     "config.discriminator.<key>: ..." errors; --set overrides.
//  2. Structure: L(L+1)/2 predictions with their (entry, exit) labels and [B] shapes; bad pyramids
//     are rejected with clear errors.
//  3. paper64 parameter count in meta mode (nothing allocated), against an independent formula.
//  4. PyTorch parity (tests/parity/ref_discriminator.py, run on the weights this test writes with
//     nn::save_state_dict): all predictions, first-order gradients w.r.t. every input and
//     parameter, and the R1 penalty's double-backward gradients w.r.t. every parameter, t_D and
//     the pyramid. Cases: a 64 px micro D (15 predictions) in f32 and f64, and the tiny16 preset.
//  5. gradcheck and gradgradcheck of a micro D in f64 w.r.t. pyramid, t_D and every parameter.
//
// Parity tolerances. An element passes when |ours - ref| <= rtol |ref| + max(atol * max|ref|, floor),
// the atol scaled by the largest magnitude of the compared tensor (Note [scaled parity tolerance],
// tests/model_parity.h; as tests/test_parity_r1.cpp does: gradients of different tensors differ by orders of magnitude, and a fixed atol would hide
// relative errors of the small ones).
//   f32: rtol 1e-4, atol 1e-5 (the project default), forward, first-order and R1 gradients.
//   f64: rtol 1e-9, atol 1e-11 (only summation order differs).
//   floor (R1 parameter gradients only): 1e-6 (f32) / 1e-14 (f64) times the largest R1
//     parameter gradient. R1 gradients that are zero in exact arithmetic: D is piecewise linear
//     in its features after the last attention block (lrelu, convs, FIR, and the predictors are
//     linear in h for a fixed t_D), so the R1 gradient of every bias downstream of it -- and of
//     the last attention's LayerNorm bias, which only shifts q (invisible to the distance
//     logits) and v (a constant shift, i.e. an output bias) -- is exactly zero. PyTorch and we
//     then both return rounding noise of the size of the large terms that cancel (~1e-7
//     relative in f32), which no tolerance relative to the noise itself can compare. Every
//     ".weight" must have a reference R1 gradient above the floor (the check has teeth).
// A 1% change of the attention logits fails every parity case (checked by hand).
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "aurora/config.h"
#include "aurora/discriminator.h"
#include "autograd/engine.h"
#include "autograd/gradcheck.h"
#include "io/safetensors.h"
#include "nn/state_dict.h"
#include "tensor/memory/memory.h"
#include "tensor/ops.h"
#include "tests/model_parity.h"
#include "tests/parity/parity.h"

using namespace engine;
using engine::aurora::DiscriminatorConfig;
using engine::aurora::Discriminator;
using nlohmann::json;

namespace {

std::string preset_path(const std::string& name) { return std::string(ENGINE_SOURCE_DIR) + "/configs/" + name + ".json"; }

// The error message of f(), or "" when it does not throw.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

json tiny32_section() {
  return json::parse(R"({
    "image_size": 32, "image_channels": 3,
    "channels": {"32": 8, "16": 16, "8": 16, "4": 16, "1": 16},
    "attention_resolutions": [16, 8], "attention_head_dim": 8,
    "text_dim": 12, "text_layers": 2, "cond_dim": 10, "predictor_layers": 4})");
}

// Parse a modified section, return the error ("" when it parses).
std::string section_error(const std::function<void(json&)>& edit) {
  json j = tiny32_section();
  edit(j);
  return error_of([&] { aurora::parse_discriminator_config(j); });
}

// The number of parameters of a D, from the architecture as documented in the headers -- written
// independently of the modules' registration code.
int64_t expected_param_count(const DiscriminatorConfig& c) {
  int64_t n = 0;
  // Text MLP: text_dim -> cond, then (layers - 1) x cond -> cond, each with bias.
  n += c.text_dim * c.cond_dim + c.cond_dim + (c.text_layers - 1) * (c.cond_dim * c.cond_dim + c.cond_dim);
  int64_t r = c.image_size;
  while (r >= 4) {
    const int64_t exit = r == 4 ? 1 : r / 2;
    const int64_t a = c.channels.at(r), b = c.channels.at(exit);
    n += c.image_channels * a + a;  // fromrgb 1x1 + bias
    if (std::count(c.attention_resolutions.begin(), c.attention_resolutions.end(), r)) {
      n += 2 * a;          // LayerNorm weight, bias
      n += 3 * a * a + a;  // qk, v, out (+ out bias)
    }
    n += 9 * a * a + a;  // conv0 3x3
    if (r == 4) {
      n += 16 * a * b + b;  // conv1 4x4 valid
    } else {
      n += 9 * a * b + b;  // conv1 3x3 stride 2
      n += a * b;          // skip 1x1, no bias
    }
    // Predictor at the exit resolution (channels b): (layers - 1) modulated b -> b (style affine
    // cond -> b with bias, weight b x b, bias b), a modulated b -> 1, and the 1x1 skip b -> 1.
    n += (c.predictor_layers - 1) * (c.cond_dim * b + b + b * b + b);
    n += c.cond_dim * b + b + b + 1;
    n += b;
    r /= 2;
  }
  return n;
}

// Run with a given number of OpenMP threads for a scope.
struct OmpThreads {
  explicit OmpThreads(int n) : saved(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~OmpThreads() { omp_set_num_threads(saved); }
  int saved;
};

// ---- Parity plumbing (tests/model_parity.h) ---------------------------------------------------

using model_parity::compare_scaled;
using model_parity::Errors;
using model_parity::max_abs;
using model_parity::perturb_constant_params;
using model_parity::summary;

std::string temp_path(const std::string& tag) { return model_parity::temp_path("engine_disc", tag); }

// Run ref_discriminator.py on (weights, inputs); FAILS the test when python/torch is missing.
io::SafetensorsFile run_reference(const std::string& weights, const std::string& inputs) {
  const std::string out = temp_path(".ref.safetensors");
  model_parity::run_python("tests/parity/ref_discriminator.py", weights + " " + inputs + " " + out);
  io::SafetensorsFile f = io::read_safetensors(out);
  ::unlink(out.c_str());
  return f;
}

// The whole parity comparison for one configuration and dtype.
void run_parity(const std::string& label, const DiscriminatorConfig& cfg, DType dt, int64_t batch, uint64_t seed) {
  INFO("parity case " << label);
  Discriminator d(cfg);
  nn::ParameterStore store;
  store.materialize(d, seed, opts(dt));
  perturb_constant_params(store, seed + 1);

  Generator gen(seed + 2);
  const int64_t L = cfg.num_levels();
  TensorList xs;
  for (int64_t r : cfg.entry_resolutions()) xs.push_back(randn({batch, cfg.image_channels, r, r}, gen, opts(dt)));
  const Tensor t = randn({batch, cfg.text_dim}, gen, opts(dt));
  std::map<std::pair<int64_t, int64_t>, Tensor> go;
  io::NamedTensors inputs;
  for (int64_t k = 0; k < L; ++k) inputs.emplace_back("x/" + std::to_string(k), xs[size_t(k)]);
  inputs.emplace_back("t", t);
  for (int64_t i = 0; i < L; ++i)
    for (int64_t j = i; j < L; ++j) {
      go[{i, j}] = randn({batch}, gen, opts(dt));
      inputs.emplace_back(fmt::format("go/{}_{}", i, j), go[{i, j}]);
    }
  const std::string wpath = temp_path(".weights.safetensors"), ipath = temp_path(".inputs.safetensors");
  nn::save_state_dict(d, wpath);
  io::save_safetensors(ipath, inputs, {{"config", cfg.to_json().dump()}});
  const io::SafetensorsFile ref = run_reference(wpath, ipath);
  ::unlink(wpath.c_str());
  ::unlink(ipath.c_str());

  const bool f64 = dt == DType::f64;
  const double rtol = f64 ? 1e-9 : 1e-4, atol = f64 ? 1e-11 : 1e-5;
  const double r1_rtol = f64 ? 1e-9 : 1e-4, r1_atol = f64 ? 1e-11 : 1e-5, r1_floor = f64 ? 1e-14 : 1e-6;
  Errors fwd, first, second;

  // ---- Forward and first-order gradients of L = sum_ij <D_ij, go_ij>.
  TensorList xl;
  for (const Tensor& x : xs) xl.push_back(clone(x).requires_grad_(true));
  Tensor tl = clone(t).requires_grad_(true);
  const std::vector<aurora::DiscPrediction> preds = d.forward(xl, tl);
  REQUIRE(int64_t(preds.size()) == L * (L + 1) / 2);
  Tensor loss;
  for (const aurora::DiscPrediction& p : preds) {
    REQUIRE(p.logits.sizes() == Dims{batch});
    compare_scaled(fmt::format("D_{}{}", p.entry, p.exit), p.logits, ref.at(fmt::format("pred/{}_{}", p.entry, p.exit)),
                   rtol, atol, fwd);
    const Tensor term = sum(mul(p.logits, go.at({p.entry, p.exit})));
    loss = loss.defined() ? add(loss, term) : term;
  }
  TensorList wrt = xl;
  wrt.push_back(tl);
  for (auto& [name, p] : store.parameters()) wrt.push_back(p->value);
  const TensorList g1 = autograd::grad({loss}, wrt, {}, false, /*allow_unused=*/true);
  for (int64_t k = 0; k < L; ++k)
    compare_scaled("dL/dx" + std::to_string(k), g1[size_t(k)], ref.at("grad/x/" + std::to_string(k)), rtol, atol, first);
  compare_scaled("dL/dt", g1[size_t(L)], ref.at("grad/t"), rtol, atol, first);
  size_t idx = size_t(L) + 1;
  for (auto& [name, p] : store.parameters())
    compare_scaled("dL/d " + name, g1[idx++], ref.at("grad/param/" + name), rtol, atol, first);

  // ---- R1 the way training runs it (Note [R1 double backward]): gradients land in the flat
  // gradient buffer and in the leaves' .grad().
  store.zero_grad();
  TensorList xr;
  for (const Tensor& x : xs) xr.push_back(clone(x).requires_grad_(true));
  Tensor tr = clone(t).requires_grad_(true);
  const Tensor total = aurora::sum_of_predictions(d.forward(xr, tr));
  const TensorList g = autograd::grad({total}, xr, {}, /*create_graph=*/true);
  Tensor r1;
  for (int64_t k = 0; k < L; ++k) {
    compare_scaled("R1 g" + std::to_string(k), g[size_t(k)], ref.at("r1/g/" + std::to_string(k)), rtol, atol, first);
    const Tensor s = sum(square(g[size_t(k)]));
    r1 = r1.defined() ? add(r1, s) : s;
  }
  r1 = div(r1, double(batch));
  compare_scaled("R1 value", r1, ref.at("r1/value"), rtol, atol, second);
  autograd::backward(r1);
  double group_max = 0;  // the largest R1 parameter gradient: the scale of the rounding noise
  for (auto& [name, p] : store.parameters()) group_max = std::max(group_max, max_abs(ref.at("r1/grad/param/" + name)));
  REQUIRE(group_max > 0);
  const double floor = r1_floor * group_max;
  int nonzero = 0;
  for (auto& [name, p] : store.parameters()) {
    const Tensor& rg = ref.at("r1/grad/param/" + name);
    const bool is_zero = max_abs(rg) <= floor;
    nonzero += !is_zero;
    // Teeth: the double backward reaches every weight. Only biases may have an R1 gradient that
    // is zero in exact arithmetic (see the header comment).
    if (name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0)
      CHECK_MESSAGE(!is_zero, "the reference R1 gradient of " << name << " is zero");
    compare_scaled("dR1/d " + name, p->value.grad(), rg, r1_rtol, r1_atol, second, floor);
  }
  for (int64_t k = 0; k < L; ++k)
    compare_scaled("dR1/dx" + std::to_string(k), xr[size_t(k)].grad(), ref.at("r1/grad/x/" + std::to_string(k)), r1_rtol,
                   r1_atol, second);
  compare_scaled("dR1/dt", tr.grad(), ref.at("r1/grad/t"), r1_rtol, r1_atol, second);
  const int64_t params = int64_t(store.parameters().size());
  CHECK(max_abs(ref.at("r1/value")) > 0);

  MESSAGE("discriminator parity, " << label << " (" << std::string(dtype_name(dt)) << ", B=" << batch << ", "
                                   << preds.size() << " predictions, " << store.numel() << " parameters, "
                                   << nonzero << "/" << params
                                   << " parameter tensors with an R1 gradient that is non-zero in exact arithmetic):\n"
                                   << summary("forward D_ij", fwd) << summary("first-order gradients", first)
                                   << summary("R1 double backward", second));
}

// A 64 px D with a handful of channels: the paper's geometry (15 predictions), cheap on a CPU.
DiscriminatorConfig micro64() {
  DiscriminatorConfig c;
  c.image_size = 64;
  c.image_channels = 3;
  c.channels = {{64, 4}, {32, 8}, {16, 8}, {8, 12}, {4, 12}, {1, 8}};
  c.attention_resolutions = {32, 16, 8, 4};
  c.attention_head_dim = 4;
  c.text_dim = 6;
  c.text_layers = 2;
  c.cond_dim = 5;
  c.predictor_layers = 4;
  return c;
}

}  // namespace

// ---- 1. Config --------------------------------------------------------------------------------

TEST_CASE("config: the presets load, validate and have the documented geometry") {
  for (const char* name : {"paper64", "tiny16", "tiny32"}) {
    INFO(name);
    const aurora::AuroraConfig c = aurora::load_config(preset_path(name));
    REQUIRE(c.has_discriminator);
    // The generator section parses too, and both networks agree on the image size.
    CHECK(aurora::parse_generator_config(c.generator).image_size == c.discriminator.image_size);
  }
  const DiscriminatorConfig p = aurora::load_config(preset_path("paper64")).discriminator;
  CHECK(p.image_size == 64);
  CHECK(p.entry_resolutions() == std::vector<int64_t>{64, 32, 16, 8, 4});
  CHECK(p.exit_resolutions() == std::vector<int64_t>{32, 16, 8, 4, 1});
  CHECK(p.num_predictions() == 15);
  CHECK(p.predictor_layers == 4);
  const DiscriminatorConfig t32 = aurora::load_config(preset_path("tiny32")).discriminator;
  CHECK(t32.entry_resolutions() == std::vector<int64_t>{32, 16, 8, 4});
  CHECK(t32.exit_resolutions() == std::vector<int64_t>{16, 8, 4, 1});
  CHECK(t32.num_predictions() == 10);
  CHECK(aurora::load_config(preset_path("tiny16")).discriminator.num_predictions() == 6);
  // to_json round trip.
  const DiscriminatorConfig back = aurora::parse_discriminator_config(p.to_json());
  CHECK(back.to_json() == p.to_json());
}

TEST_CASE("config: a generator section next to the discriminator is kept") {
  json root = json::parse(R"({"generator": {"z_dim": 128}, "_comment": "x"})");
  root["discriminator"] = tiny32_section();
  const aurora::AuroraConfig c = aurora::parse_config(root);
  CHECK(c.has_discriminator);
  CHECK(c.generator.at("z_dim") == 128);
}

TEST_CASE("config: missing, unknown and mistyped keys are errors naming the key") {
  CHECK(section_error([](json&) {}).empty());
  CHECK(section_error([](json& j) { j["_note"] = "comments are allowed"; }).empty());

  std::string e = section_error([](json& j) { j.erase("channels"); });
  CHECK_MESSAGE(e.rfind("config.discriminator.channels: missing; expected an object", 0) == 0, e);
  e = section_error([](json& j) { j["chanels"] = 3; });
  CHECK_MESSAGE(e.rfind("config.discriminator.chanels: unknown key (known keys: image_size,", 0) == 0, e);
  e = section_error([](json& j) { j["channels"] = json::array({8, 16}); });
  CHECK_MESSAGE(e.rfind("config.discriminator.channels: expected an object {\"<resolution>\": <channels>}", 0) == 0, e);
  CHECK_MESSAGE(e.find("got array [8,16]") != std::string::npos, e);
  e = section_error([](json& j) { j["image_size"] = "32"; });
  CHECK_MESSAGE(e.rfind("config.discriminator.image_size: expected a power-of-two integer >= 8", 0) == 0, e);
  CHECK_MESSAGE(e.find("got string \"32\"") != std::string::npos, e);
  e = section_error([](json& j) { j["image_size"] = 32.0; });
  CHECK_MESSAGE(e.rfind("config.discriminator.image_size: expected", 0) == 0, e);
  e = section_error([](json& j) { j["cond_dim"] = true; });
  CHECK_MESSAGE(e.rfind("config.discriminator.cond_dim: expected a positive integer", 0) == 0, e);
  e = section_error([](json& j) { j["text_layers"] = 0; });
  CHECK_MESSAGE(e.rfind("config.discriminator.text_layers: expected a positive integer", 0) == 0, e);
  e = section_error([](json& j) { j["attention_resolutions"] = 16; });
  CHECK_MESSAGE(e.rfind("config.discriminator.attention_resolutions: expected an array", 0) == 0, e);
  e = section_error([](json& j) { j["attention_resolutions"] = json::array({16, "8"}); });
  CHECK_MESSAGE(e.rfind("config.discriminator.attention_resolutions[1]: expected an integer resolution", 0) == 0, e);
  e = error_of([] { aurora::parse_discriminator_config(json::array()); });
  CHECK_MESSAGE(e.rfind("config.discriminator: expected an object", 0) == 0, e);
}

TEST_CASE("config: inconsistent geometry is an error naming the key") {
  std::string e = section_error([](json& j) { j["image_size"] = 48; });
  CHECK_MESSAGE(e.rfind("config.discriminator.image_size: expected a power-of-two integer >= 8", 0) == 0, e);
  CHECK_MESSAGE(e.find("got 48") != std::string::npos, e);
  e = section_error([](json& j) { j["image_size"] = 4; });
  CHECK_MESSAGE(e.rfind("config.discriminator.image_size:", 0) == 0, e);
  e = section_error([](json& j) { j["channels"].erase("8"); });
  CHECK_MESSAGE(e == "config.discriminator.channels: missing resolution 8 (image_size 32 needs 32, 16, 8, 4, 1)", e);
  e = section_error([](json& j) { j["channels"]["64"] = 4; });
  CHECK_MESSAGE(e.rfind("config.discriminator.channels.64: resolution 64 is not part of the stack", 0) == 0, e);
  e = section_error([](json& j) { j["channels"]["x"] = 4; });
  CHECK_MESSAGE(e.rfind("config.discriminator.channels: key \"x\" is not a resolution", 0) == 0, e);
  e = section_error([](json& j) { j["channels"]["16"] = -2; });
  CHECK_MESSAGE(e == "config.discriminator.channels.16: expected a positive integer, got -2", e);
  e = section_error([](json& j) { j["attention_resolutions"] = json::array({2}); });
  CHECK_MESSAGE(e.rfind("config.discriminator.attention_resolutions: 2 is not an entry resolution", 0) == 0, e);
  e = section_error([](json& j) { j["attention_resolutions"] = json::array({16, 16}); });
  CHECK_MESSAGE(e == "config.discriminator.attention_resolutions: 16 is listed twice", e);
  e = section_error([](json& j) { j["attention_head_dim"] = 3; });
  CHECK_MESSAGE(e == "config.discriminator.attention_head_dim: 3 does not divide the 16 channels at attention resolution 16",
                e);
}

TEST_CASE("config: files, sections and --set overrides") {
  // Unknown section.
  std::string e = error_of([] { aurora::parse_config(json::parse(R"({"discriminatr": {}})")); });
  CHECK_MESSAGE(e == "config.discriminatr: unknown section (known sections: generator, discriminator, train)", e);
  // A file: JSON syntax errors and key errors name the file.
  const std::string path = temp_path(".json");
  {
    std::ofstream f(path);
    f << "{\"discriminator\": {\"image_size\": 32,}}";
  }
  e = error_of([&] { aurora::load_config(path); });
  CHECK_MESSAGE(e.rfind("config file '" + path + "': invalid JSON:", 0) == 0, e);
  {
    std::ofstream f(path);
    json root;
    root["discriminator"] = tiny32_section();
    root["discriminator"].erase("cond_dim");
    f << root.dump();
  }
  e = error_of([&] { aurora::load_config(path); });
  CHECK_MESSAGE(e.rfind("config.discriminator.cond_dim: missing;", 0) == 0, e);
  CHECK_MESSAGE(e.find("(in " + path + ")") != std::string::npos, e);
  ::unlink(path.c_str());
  e = error_of([] { aurora::load_config("/nonexistent/aurora.json"); });
  CHECK_MESSAGE(e.rfind("config file '/nonexistent/aurora.json': cannot open", 0) == 0, e);

  // --set.
  json root = aurora::read_config_json(preset_path("tiny32"));
  aurora::apply_override(root, "discriminator.channels.16=48");
  aurora::apply_override(root, "discriminator.attention_resolutions=[8]");
  const DiscriminatorConfig c = aurora::parse_config(root).discriminator;
  CHECK(c.channels.at(16) == 48);
  CHECK(c.attention_resolutions == std::vector<int64_t>{8});
  e = error_of([&] { aurora::apply_override(root, "discriminator.chanels.16=48"); });
  CHECK_MESSAGE(e == "--set 'discriminator.chanels.16=48': config.discriminator.chanels does not exist", e);
  e = error_of([&] { aurora::apply_override(root, "discriminator"); });
  CHECK_MESSAGE(e.rfind("--set 'discriminator': expected key=value", 0) == 0, e);
  aurora::apply_override(root, "discriminator.image_size=\"big\"");
  e = error_of([&] { aurora::parse_config(root); });
  CHECK_MESSAGE(e.rfind("config.discriminator.image_size: expected", 0) == 0, e);
}

// ---- 2. Structure -------------------------------------------------------------------------------

TEST_CASE("discriminator: L(L+1)/2 labelled predictions of shape [B]; bad inputs are rejected") {
  const DiscriminatorConfig cfg = aurora::parse_discriminator_config(tiny32_section());
  Discriminator d(cfg);
  nn::ParameterStore store;
  store.materialize(d, 7);
  Generator gen(3);
  const int64_t B = 3;
  TensorList xs;
  for (int64_t r : cfg.entry_resolutions()) xs.push_back(randn({B, 3, r, r}, gen));
  const Tensor t = randn({B, cfg.text_dim}, gen);
  const auto preds = d.forward(xs, t);
  REQUIRE(preds.size() == 10);
  size_t k = 0;
  const std::vector<int64_t> entries = cfg.entry_resolutions(), exits = cfg.exit_resolutions();
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = i; j < 4; ++j, ++k) {
      CHECK(preds[k].entry == i);
      CHECK(preds[k].exit == j);
      CHECK(preds[k].entry_resolution == entries[size_t(i)]);
      CHECK(preds[k].exit_resolution == exits[size_t(j)]);
      CHECK(preds[k].logits.sizes() == Dims{B});
      for (double v : preds[k].logits.to_vector()) CHECK(std::isfinite(v));
    }
  // Batched paths = each sample alone (the batch rows do not mix, Note [paths batched along the
  // batch dim]): sample 1 on its own gives the same logits.
  TensorList x1;
  for (const Tensor& x : xs) x1.push_back(narrow(x, 0, 1, 1));
  const auto one = d.forward(x1, narrow(t, 0, 1, 1));
  for (size_t p = 0; p < preds.size(); ++p) CHECK(one[p].logits.item() == doctest::Approx(preds[p].logits.to_vector()[1]).epsilon(1e-5));
  // The parameter names are the documented ones.
  for (const char* name : {"text.fc0.weight", "text.fc1.bias", "b32.fromrgb.weight", "b32.conv0.weight", "b32.conv1.bias",
                           "b32.skip.weight", "b16.attn.norm.weight", "b16.attn.qk.weight", "b16.attn.v.weight",
                           "b16.attn.out.bias", "b4.conv1.weight", "pred16.psi0.style.weight", "pred16.psi3.weight",
                           "pred1.psi3.bias", "pred1.skip.weight"}) {
    CHECK_MESSAGE(store.find(name) != nullptr, name);
  }
  CHECK(store.find("b4.skip.weight") == nullptr);
  CHECK(store.find("b32.attn.qk.weight") == nullptr);
  CHECK(store.find("b4.conv1.weight")->shape == Dims{16, 16, 4, 4});

  std::string e = error_of([&] { d.forward({xs[0], xs[1], xs[2]}, t); });
  CHECK_MESSAGE(e == "Discriminator: expected a pyramid of 4 images (resolutions 32 down to 4), got 3", e);
  e = error_of([&] { d.forward({xs[0], xs[2], xs[1], xs[3]}, t); });
  CHECK_MESSAGE(e == "Discriminator: pyramid[1] must be [3, 3, 16, 16], got [3,3,8,8]", e);
  e = error_of([&] { d.forward(xs, randn({B, 5}, gen)); });
  CHECK_MESSAGE(e == "DiscTextMLP: expected t_D [B, 12], got [3,5]", e);
  e = error_of([&] { d.forward(xs, randn({2, 12}, gen)); });
  CHECK_MESSAGE(e == "Discriminator: expected the condition c [3, 10], got [2,10]", e);
  e = error_of([] {
    DiscriminatorConfig bad = aurora::parse_discriminator_config(tiny32_section());
    bad.channels.erase(4);
    Discriminator dd(bad);
  });
  CHECK_MESSAGE(e.rfind("Discriminator config.channels: missing resolution 4", 0) == 0, e);
}

TEST_CASE("discriminator: make_image_pyramid averages 2x2 blocks down to 4 px") {
  Generator gen(5);
  const Tensor x = randn({2, 3, 32, 32}, gen);
  const TensorList p = aurora::make_image_pyramid(x, 4);
  REQUIRE(p.size() == 4);
  CHECK(p[1].sizes() == Dims{2, 3, 16, 16});
  CHECK(p[3].sizes() == Dims{2, 3, 4, 4});
  // Pixel (1, 2) of level 1 is the mean of the 2x2 block at (2..3, 4..5), corners included.
  const std::vector<double> v = x.to_vector(), v1 = p[1].to_vector();
  auto at = [&](int64_t y, int64_t xx) { return v[size_t(y * 32 + xx)]; };
  CHECK(v1[size_t(1 * 16 + 2)] == doctest::Approx((at(2, 4) + at(2, 5) + at(3, 4) + at(3, 5)) / 4).epsilon(1e-6));
  CHECK(v1[0] == doctest::Approx((at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1)) / 4).epsilon(1e-6));
  // A constant image stays constant everywhere, borders included.
  for (double c : aurora::make_image_pyramid(full({1, 1, 16, 16}, 2.0), 3)[2].to_vector()) CHECK(c == doctest::Approx(2.0));
  CHECK_THROWS_AS(aurora::make_image_pyramid(x, 5), Error);
}

// ---- 3. Parameter count --------------------------------------------------------------------------

TEST_CASE("discriminator: paper64 parameter count in meta mode, against an independent formula") {
  const DiscriminatorConfig cfg = aurora::load_config(preset_path("paper64")).discriminator;
  const int64_t live_before = memory::stats(Device::cpu()).live;
  Discriminator d(cfg);  // meta: registration only
  const int64_t n = d.num_parameters();
  CHECK(memory::stats(Device::cpu()).live == live_before);  // nothing was allocated
  const int64_t expected = expected_param_count(cfg);
  MESSAGE("paper64 discriminator: " << n << " parameters (" << fmt::format("{:.1f}", n / 1e6)
                                    << " M; GigaGAN T2I-64 D: 381.4 M), formula " << expected);
  CHECK(n == expected);
  CHECK(n == 378778629);  // the number quoted in configs/paper64.json
  // The tiny presets too.
  for (const char* name : {"tiny16", "tiny32"}) {
    const DiscriminatorConfig c = aurora::load_config(preset_path(name)).discriminator;
    Discriminator dt(c);
    CHECK_MESSAGE(dt.num_parameters() == expected_param_count(c), name);
  }
}

// ---- 4. PyTorch parity ---------------------------------------------------------------------------

TEST_CASE("discriminator parity: 64 px micro D (15 predictions), f32") { run_parity("micro64", micro64(), DType::f32, 2, 11); }

TEST_CASE("discriminator parity: 64 px micro D (15 predictions), f64") { run_parity("micro64", micro64(), DType::f64, 2, 11); }

TEST_CASE("discriminator parity: tiny16 preset (6 predictions), f32") {
  run_parity("tiny16", aurora::load_config(preset_path("tiny16")).discriminator, DType::f32, 2, 21);
}

// ---- 5. gradcheck / gradgradcheck ----------------------------------------------------------------

TEST_CASE("discriminator: gradcheck and gradgradcheck of a micro D in f64") {
  // The smallest D with every kind of layer: two levels (a residual down block and the 4 -> 1
  // epilogue), attention in both, three predictor layers (two demodulated, one not), two text
  // layers, all constant-initialised parameters perturbed.
  DiscriminatorConfig c;
  c.image_size = 8;
  c.image_channels = 3;
  c.channels = {{8, 2}, {4, 3}, {1, 2}};
  c.attention_resolutions = {8, 4};
  c.attention_head_dim = 1;
  c.text_dim = 3;
  c.text_layers = 2;
  c.cond_dim = 2;
  c.predictor_layers = 3;
  Discriminator d(c);
  nn::ParameterStore store;
  store.materialize(d, 99, opts(DType::f64));
  perturb_constant_params(store, 100);
  Generator gen(101);
  const int64_t B = 2;
  TensorList inputs;
  for (int64_t r : c.entry_resolutions()) inputs.push_back(randn({B, 3, r, r}, gen, opts(DType::f64)).requires_grad_(true));
  inputs.push_back(randn({B, c.text_dim}, gen, opts(DType::f64)).requires_grad_(true));
  const size_t L = size_t(c.num_levels());
  auto f = [&](const TensorList& in) {
    TensorList pyramid(in.begin(), in.begin() + long(L));
    TensorList rows;
    for (const aurora::DiscPrediction& p : d.forward(pyramid, in[L])) rows.push_back(reshape(p.logits, {1, B}));
    return cat(rows, 0);  // [3, B]
  };
  REQUIRE(f(inputs).sizes() == Dims{3, B});

  // Every parameter is an input (gradcheck perturbs the flat-buffer views in place).
  TensorList all = inputs;
  for (auto& [name, p] : store.parameters()) all.push_back(p->value);
  MESSAGE("micro D: gradcheck and gradgradcheck over " << all.size() << " tensors (" << store.numel()
                                                      << " parameters + pyramid + t_D)");
  // One OpenMP thread: thousands of evaluations of a graph of tiny tensors, where the fork/join
  // cost of each op's parallel region dominates (and explodes when the 2 cores are shared).
  OmpThreads one(1);
  const std::string e1 = autograd::gradcheck(f, all);
  CHECK_MESSAGE(e1.empty(), "gradcheck: " << e1);
  const std::string e2 = autograd::gradgradcheck(f, all);
  CHECK_MESSAGE(e2.empty(), "gradgradcheck: " << e2);
}

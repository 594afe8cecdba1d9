// test_parity_generator.cpp: end-to-end PyTorch parity of Aurora's generator (aurora/generator.h;
// docs/aurora-spec.md sections 1-7, quirk 11.1) against tests/parity/ref_generator.py, which
// composes the block references and reads the SAME safetensors file this test writes with
// nn::save_state_dict after materialize.
//
// Compared, for the tiny16 preset (resolutions 4, 8, 16; MTM at every stage, MoE at 8 and 16,
// two adaptive kernels at 16):
//   forward   every img_r, the MoE loss, w, t_g, t_seq
//   gradients of L = sum_r <img_r, go_r> + go_moe * moe_loss + <w, go_w> (fixed random grad_outputs
//             on every level) w.r.t. z, the CLIP tokens and EVERY parameter
//   truncation (spec 7) psi = 0.7 with the global w_avg and the text-conditional average over 4
//             z samples: w_c, the truncated w and every img_r
// Cases: tiny16 (B = 2, proper text attention) in f32 and f64, and tiny16 with compat_official on
// (B = 1, where the reference runs the released text head LITERALLY: attention over dim 0 of the
// permuted [L, B, D] input with logits times scale_in = 0).
// Every constant-initialised parameter is perturbed first (model_parity.h), so the zero-initialised
// attention output projections, MTM transforms and the Fourier affine are generic: every branch
// reaches the images and every parameter gets a gradient.
//
// Tolerances (Note [scaled parity tolerance], tests/model_parity.h):
//   f32: rtol 1e-4, atol 1e-5 * max|ref| per tensor (the project default, scaled).
//   f64: rtol 1e-9, atol 1e-11 * max|ref|, with the attention eps lowered to 1e-14 (see
//        set_attention_eps): only summation order differs.
// The run prints the worst error/tolerance ratio per group (forward, gradients, truncation).
#include <doctest/doctest.h>

#include <functional>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "aurora/config.h"
#include "aurora/generator.h"
#include "autograd/engine.h"
#include "io/safetensors.h"
#include "nn/state_dict.h"
#include "tensor/ops.h"
#include "tests/model_parity.h"

using namespace engine;
using engine::aurora::GeneratorConfig;
using model_parity::compare_scaled;
using model_parity::Errors;
using model_parity::max_abs_diff;

namespace {

GeneratorConfig preset(const char* name) {
  const std::string path = std::string(ENGINE_SOURCE_DIR) + "/configs/" + name + ".json";
  return aurora::parse_generator_config(aurora::read_config_json(path).at("generator"));
}

// The f64 case compares at rtol 1e-9, below the effect of the L2-attention eps (Note [L2 attention
// logits], nn/attention.cpp: sqrt(||q - k||^2 + eps) shifts a logit by ~eps / (2 ||q - k|| sqrt(d)),
// ~1e-8 relative at these tiny heads), so it runs every attention with eps = 1e-14, as
// tests/test_attention.cpp does; f64 rounding (1e-16) stays far below it.
void set_attention_eps(aurora::Generator& g, double eps) {
  for (nn::TextBlock* b : g.text_head.transformer.res_blocks.items) b->attn.config.eps = eps;
  for (auto& [r, st] : g.synthesis.stages)
    for (nn::ResidualAttn* a : st->attns)
      for (nn::AttentionBlock* blk : a->blocks) {
        blk->self_attn.config.eps = eps;
        blk->cross_attn.config.eps = eps;
      }
}

struct Case {
  std::string label;
  GeneratorConfig cfg;
  DType dtype = DType::f32;
  int64_t batch = 2;
  uint64_t seed = 1;
};

void run_parity(const Case& c) {
  INFO("generator parity case " << c.label);
  const GeneratorConfig& cfg = c.cfg;
  const TensorOptions o = opts(c.dtype);
  aurora::Generator g(cfg);
  if (c.dtype == DType::f64) set_attention_eps(g, 1e-14);
  nn::ParameterStore store;
  store.materialize(g, c.seed, o);
  model_parity::perturb_constant_params(store, c.seed + 1);
  engine::Generator gen(c.seed + 2);
  {
    autograd::NoGradGuard ng;
    copy_(g.mapping.w_avg.value, mul(randn({cfg.w_dim}, gen, o), 0.5));  // a generic w_avg for truncation
  }
  const int64_t B = c.batch, L = 7;
  const Tensor z = randn({B, cfg.z_dim}, gen, o);
  const Tensor tokens = randn({B, L, cfg.text_in_dim}, gen, o);
  std::vector<int64_t> eots;
  for (int64_t b = 0; b < B; ++b) eots.push_back(2 + 3 * b);  // EOT inside the sequence, padding after
  const Tensor eot = from_vector_i64(eots, {B});
  std::map<int64_t, Tensor> go_img;
  io::NamedTensors inputs{{"z", z}, {"tokens", tokens}, {"eot", eot}};
  for (int64_t r : cfg.resolutions()) {
    go_img[r] = randn({B, cfg.image_channels, r, r}, gen, o);
    inputs.emplace_back("go/img/" + std::to_string(r), go_img[r]);
  }
  const Tensor go_moe = randn({}, gen, o), go_w = randn({B, cfg.w_dim}, gen, o);
  inputs.emplace_back("go/moe", go_moe);
  inputs.emplace_back("go/w", go_w);
  const double psi = 0.7;
  const Tensor z_samples = randn({4, B, cfg.z_dim}, gen, o);
  inputs.emplace_back("trunc/z_samples", z_samples);
  nlohmann::json buffers = nlohmann::json::array();
  for (const auto& [name, buf] : g.named_buffers()) buffers.push_back(name);

  const std::string wpath = model_parity::temp_path("engine_gen", ".weights.safetensors");
  const std::string ipath = model_parity::temp_path("engine_gen", ".inputs.safetensors");
  const std::string rpath = model_parity::temp_path("engine_gen", ".ref.safetensors");
  nn::save_state_dict(g, wpath);
  io::save_safetensors(ipath, inputs,
                       {{"config", cfg.to_json().dump()}, {"buffers", buffers.dump()}, {"trunc_psi", "0.7"}});
  model_parity::run_python("tests/parity/ref_generator.py", wpath + " " + ipath + " " + rpath);
  const io::SafetensorsFile ref = io::read_safetensors(rpath);
  ::unlink(wpath.c_str());
  ::unlink(ipath.c_str());
  ::unlink(rpath.c_str());

  const bool f64 = c.dtype == DType::f64;
  const double rtol = f64 ? 1e-9 : 1e-4, atol = f64 ? 1e-11 : 1e-5;

  // Forward.
  Tensor zg = z.detach().requires_grad_(true), tg = tokens.detach().requires_grad_(true);
  const aurora::Generator::Output out = g.forward(zg, tg, eot);
  Errors fwd, first, trunc;
  REQUIRE(out.images.size() == cfg.resolutions().size());
  for (const auto& [r, img] : out.images) compare_scaled("img_" + std::to_string(r), img, ref.at("img/" + std::to_string(r)), rtol, atol, fwd);
  compare_scaled("moe_loss", out.moe_loss, ref.at("moe"), rtol, atol, fwd);
  compare_scaled("w", out.w, ref.at("w"), rtol, atol, fwd);
  compare_scaled("t_g", out.t_g, ref.at("t_g"), rtol, atol, fwd);
  compare_scaled("t_seq", out.t_seq, ref.at("t_seq"), rtol, atol, fwd);
  CHECK(out.moe_loss.item() > 0);  // the tiny16 stages 8 and 16 have MoE layers

  // First-order gradients w.r.t. z, tokens and every parameter.
  TensorList outs, gos, wrt{zg, tg};
  for (const auto& [r, img] : out.images) {
    outs.push_back(img);
    gos.push_back(go_img.at(r));
  }
  outs.push_back(out.moe_loss);
  gos.push_back(go_moe);
  outs.push_back(out.w);
  gos.push_back(go_w);
  std::vector<std::string> names;
  for (const auto& [name, p] : store.parameters()) {
    names.push_back(name);
    wrt.push_back(p->value);
  }
  const TensorList grads = autograd::grad(outs, wrt, gos, false, true);
  compare_scaled("dL/dz", grads[0], ref.at("grad/z"), rtol, atol, first);
  compare_scaled("dL/dtokens", grads[1], ref.at("grad/tokens"), rtol, atol, first);
  std::string zero;
  for (size_t i = 0; i < names.size(); ++i) {
    const Tensor& rg = ref.at("grad/param/" + names[i]);
    compare_scaled("dL/d " + names[i], grads[i + 2], rg, rtol, atol, first);
    // Teeth: every parameter reaches the loss, except the experts that no token chose (possible
    // at B = 1 with 64 tokens). (In compat mode the text head's W_q, W_k rows get zeros, but they
    // share the to_qkv tensor with W_v, which does not.)
    if (model_parity::max_abs(rg) == 0 && names[i].find(".experts.") == std::string::npos) zero += " " + names[i];
  }
  CHECK_MESSAGE(zero.empty(), "parameters without a gradient:" << zero);

  // Truncation (spec 7).
  {
    autograd::NoGradGuard ng;
    const aurora::Generator::Output o0 = g.forward(z, tokens, eot);
    const Tensor w_c = g.text_w_avg(o0.t_g, z_samples);
    compare_scaled("w_text_avg", w_c, ref.at("trunc/w_text_avg"), rtol, atol, trunc);
    const aurora::Generator::Output ot = g.forward(z, tokens, eot, 0, aurora::Truncation{psi, w_c});
    compare_scaled("truncated w", ot.w, ref.at("trunc/w"), rtol, atol, trunc);
    for (const auto& [r, img] : ot.images)
      compare_scaled("truncated img_" + std::to_string(r), img, ref.at("trunc/img/" + std::to_string(r)), rtol, atol, trunc);
    // psi = 1 is the identity; psi = 0 gives w_c exactly.
    CHECK(max_abs_diff(g.forward(z, tokens, eot, 0, aurora::Truncation{1.0, w_c}).w, o0.w) == 0);
    CHECK(max_abs_diff(g.truncate(o0.w, aurora::Truncation{0.0, w_c}), w_c) < 1e-6);
  }
  MESSAGE("generator parity, " << c.label << " (" << std::string(dtype_name(c.dtype)) << ", B=" << B << ", "
                               << store.numel() << " parameters, rtol " << rtol << ", atol " << atol << " max|ref|):\n"
                               << model_parity::summary("forward", fwd) << model_parity::summary("first-order gradients", first)
                               << model_parity::summary("truncation", trunc));
}

}  // namespace

TEST_CASE("generator parity: tiny16, f32") { run_parity({"tiny16", preset("tiny16"), DType::f32, 2, 11}); }

TEST_CASE("generator parity: tiny16, f64") { run_parity({"tiny16", preset("tiny16"), DType::f64, 2, 11}); }

TEST_CASE("generator parity: tiny16 with compat_official (B = 1: the released text head, literally), f32") {
  GeneratorConfig cfg = preset("tiny16");
  cfg.compat_official = true;
  run_parity({"tiny16-compat", cfg, DType::f32, 1, 12});
}

TEST_CASE("generator parity: compat_official changes the text head only, and only at B = 1 as released") {
  // The switch must matter: same weights, same inputs, different t_seq and images.
  GeneratorConfig a = preset("tiny16"), b = a;
  b.compat_official = true;
  aurora::Generator ga(a), gb(b);
  nn::ParameterStore sa, sb;
  sa.materialize(ga, 5);
  sb.materialize(gb, 5);
  engine::Generator gen(6);
  const Tensor z = randn({1, a.z_dim}, gen), tokens = randn({1, 7, a.text_in_dim}, gen);
  const Tensor eot = from_vector_i64({4}, {1});
  autograd::NoGradGuard ng;
  const auto oa = ga.forward(z, tokens, eot), ob = gb.forward(z, tokens, eot);
  CHECK(max_abs_diff(oa.t_seq, ob.t_seq) > 1e-3);
  CHECK(max_abs_diff(oa.images.at(16), ob.images.at(16)) > 1e-6);
}

TEST_CASE("generator config: compat_official is a required boolean") {
  const std::string path = std::string(ENGINE_SOURCE_DIR) + "/configs/tiny16.json";
  auto error_of = [&](const std::function<void(nlohmann::json&)>& edit) -> std::string {
    nlohmann::json j = aurora::read_config_json(path).at("generator");
    edit(j);
    try {
      aurora::parse_generator_config(j);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  std::string e = error_of([](nlohmann::json& j) { j.erase("compat_official"); });
  CHECK_MESSAGE(e.rfind("config.generator.compat_official: missing; expected a boolean", 0) == 0, e);
  e = error_of([](nlohmann::json& j) { j["compat_official"] = 1; });
  CHECK_MESSAGE(e.rfind("config.generator.compat_official: expected a boolean", 0) == 0, e);
  CHECK(error_of([](nlohmann::json& j) { j["compat_official"] = true; }).empty());
  GeneratorConfig c = preset("tiny16");
  CHECK_FALSE(c.compat_official);
  c.compat_official = true;
  CHECK(aurora::parse_generator_config(c.to_json()).compat_official);
  CHECK(aurora::text_head_config(c).compat_official);
  for (const char* name : {"paper64", "tiny16", "tiny32"}) CHECK_FALSE(preset(name).compat_official);
}

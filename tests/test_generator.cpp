// Tests of Aurora's generator (aurora/generator.h; docs/aurora-spec.md sections 1, 2, 10) and of
// the "generator" config section (aurora/config.h).
//  - The presets' generator sections parse, validate and round-trip through to_json; missing,
//    unknown and mistyped keys are errors naming the key.
//  - Meta mode (nothing allocated): the parameter counts of the paper64 generator against the
//    spec's independently computed values of section 10, each to half a unit of the spec's last
//    printed digit (G 1166.3 M, text head 51.2 M, mapping 4.33 M, synthesis 1110.8 M, and the
//    per-resolution lines); 18 MoE layers with 168 experts (spec 2).
//  - tiny16: forward returns img_4, img_8, img_16 of the right shapes and a finite scalar moe_loss;
//    max_resolution stops early; backward reaches the text head, the mapping, MTM and the experts.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "aurora/config.h"
#include "aurora/generator.h"
#include "autograd/engine.h"
#include "nn/moe.h"
#include "tensor/ops.h"

using namespace engine;
using engine::aurora::GeneratorConfig;
using engine::aurora::parse_generator_config;
using engine::aurora::read_config_json;
using engine::aurora::SynthesisStage;
using json = nlohmann::json;

namespace {
std::string preset_path(const char* name) { return std::string(ENGINE_SOURCE_DIR) + "/configs/" + name + ".json"; }
GeneratorConfig preset(const char* name) {
  return parse_generator_config(read_config_json(preset_path(name)).at("generator"));
}
std::string gen_error(const std::function<void(json&)>& edit) {
  json j = read_config_json(preset_path("tiny16")).at("generator");
  edit(j);
  try {
    parse_generator_config(j);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
double M(int64_t n) { return double(n) / 1e6; }
}  // namespace

TEST_CASE("generator config: presets parse, validate and round-trip") {
  for (const char* name : {"paper64", "tiny16", "tiny32"}) {
    INFO(name);
    const GeneratorConfig c = preset(name);
    CHECK(parse_generator_config(c.to_json()).to_json() == c.to_json());
    CHECK(c.resolutions().back() == c.image_size);
  }
  const GeneratorConfig p = preset("paper64");
  CHECK(p.resolutions() == std::vector<int64_t>{4, 8, 16, 32, 64});
  CHECK(p.stage(16).channels == 1024);
  CHECK(p.stage(16).num_experts == 8);
  CHECK(p.stage(32).mtm == false);
}

TEST_CASE("generator config: missing, unknown and mistyped keys are errors naming the key") {
  CHECK(gen_error([](json&) {}).empty());
  std::string e = gen_error([](json& j) { j.erase("z_dim"); });
  CHECK_MESSAGE(e.rfind("config.generator.z_dim: missing", 0) == 0, e);
  e = gen_error([](json& j) { j["zdim"] = 3; });
  CHECK_MESSAGE(e.rfind("config.generator.zdim: unknown key", 0) == 0, e);
  e = gen_error([](json& j) { j["w_dim"] = "32"; });
  CHECK_MESSAGE(e.rfind("config.generator.w_dim: expected", 0) == 0, e);
  e = gen_error([](json& j) { j["stages"]["8"]["mtm"] = 1; });
  CHECK_MESSAGE(e.rfind("config.generator.stages.8.mtm: expected a boolean", 0) == 0, e);
  e = gen_error([](json& j) { j["stages"].erase("8"); });
  CHECK_MESSAGE(e.rfind("config.generator.stages: missing resolution 8", 0) == 0, e);
  e = gen_error([](json& j) { j["stages"]["4"]["attn_modules"] = 1; });
  CHECK_MESSAGE(e.find("stages.4.attn_modules") != std::string::npos, e);
  e = gen_error([](json& j) { j["attn_gain"] = -1; });
  CHECK_MESSAGE(e.rfind("config.generator.attn_gain: expected", 0) == 0, e);
}

TEST_CASE("paper64 generator: meta-mode parameter counts equal spec section 10") {
  aurora::Generator g(preset("paper64"));  // meta mode: nothing materialized
  const double total = M(g.num_parameters());
  MESSAGE("G total " << total << " M");
  CHECK(std::abs(total - 1166.3) < 0.05);
  CHECK(std::abs(M(g.text_head.num_parameters()) - 51.2) < 0.05);
  CHECK(std::abs(M(g.mapping.num_parameters()) - 4.33) < 0.005);
  CHECK(std::abs(M(g.synthesis.num_parameters()) - 1110.8) < 0.05);

  struct Line {
    int64_t r;
    double input, convs, attn, torgb;
  };
  // Spec 10: "res 4: Fourier input 2.56 M, convs 129.5 M, ToRGB 1.64 M", etc.
  const Line lines[] = {{4, 2.56, 129.5, 0, 1.64},
                        {8, 0, 156.7, 102.6, 1.64},
                        {16, 0, 136.3, 176.4, 1.06},
                        {32, 0, 50.4, 217.4, 0.54},
                        {64, 0, 25.1, 108.7, 0.28}};
  int64_t moe_layers = 0, experts = 0, expert_params = 0;
  for (const Line& l : lines) {
    SynthesisStage& s = *g.synthesis.stages.at(l.r);
    int64_t convs = s.conv ? s.conv->num_parameters() : 0, attn = 0;
    for (auto* c : s.convs) convs += c->num_parameters();
    for (auto* a : s.attns) {
      attn += a->num_parameters();
      for (auto* b : a->blocks) {
        auto* moe = dynamic_cast<nn::MoE*>(b->child("moe"));
        REQUIRE(moe != nullptr);
        ++moe_layers;
        experts += int64_t(moe->experts.items.size());
        expert_params += moe->experts.num_parameters();
      }
    }
    const int64_t input = s.input ? s.input->num_parameters() : 0;
    MESSAGE("res " << l.r << ": input " << M(input) << " M, convs " << M(convs) << " M, attention + MoE " << M(attn)
                   << " M, ToRGB " << M(s.torgb->num_parameters()) << " M");
    CHECK(std::abs(M(input) - l.input) < 0.005);
    CHECK(std::abs(M(convs) - l.convs) < 0.05);
    CHECK(std::abs(M(attn) - l.attn) < 0.05);
    CHECK(std::abs(M(s.torgb->num_parameters()) - l.torgb) < 0.005);
    CHECK(input + convs + attn + s.torgb->num_parameters() == s.num_parameters());
  }
  CHECK(g.synthesis.num_ws() == 23);  // spec 1 "w broadcast" / spec 2's wp indices 0-22
  CHECK(moe_layers == 18);
  CHECK(experts == 168);
  MESSAGE("experts " << M(expert_params) << " M");
  CHECK(std::abs(M(expert_params) - 529.3) < 0.05);
}

TEST_CASE("paper64 generator: names") {
  aurora::Generator g(preset("paper64"));
  bool found = false, mtm16 = false, mtm32 = false;
  for (auto& [n, p] : g.named_parameters()) {
    found = found || n == "synthesis.b16.attn0.block1.moe.experts.3.w1.weight";
    mtm16 = mtm16 || n == "synthesis.b16.conv2.conv2.mtm.out_scale";
    mtm32 = mtm32 || (n.rfind("synthesis.b32.", 0) == 0 && n.find(".mtm.") != std::string::npos);
  }
  CHECK(found);
  CHECK(mtm16);
  CHECK_FALSE(mtm32);
}

TEST_CASE("tiny16 generator: forward shapes, moe loss, backward") {
  aurora::Generator g(preset("tiny16"));
  nn::ParameterStore store;
  store.materialize(g, 1);
  const GeneratorConfig& c = g.config;
  aurora::Generator::Output o;
  {
    aurora::Generator gen(c);  // construction is deterministic: same names as g
    CHECK(gen.num_parameters() == g.num_parameters());
  }
  engine::Generator rng(2);
  const int64_t B = 2, L = 6;
  const Tensor z = randn({B, c.z_dim}, rng), tokens = randn({B, L, c.text_in_dim}, rng);
  const Tensor eot = from_vector_i64({3, 5}, {B});
  o = g.forward(z, tokens, eot);
  REQUIRE(o.images.size() == 3);
  for (int64_t r : {4, 8, 16}) CHECK(o.images.at(r).sizes() == Dims{B, 3, r, r});
  CHECK(o.moe_loss.dim() == 0);
  CHECK(std::isfinite(o.moe_loss.item()));
  CHECK(o.moe_loss.item() > 0);
  for (double v : o.images.at(16).to_vector()) CHECK(std::isfinite(v));
  CHECK(o.t_seq.sizes() == Dims{B, L - 1, c.text_width});
  // Routing of every MoE layer (tiny16: one block with 2 experts at 8 and at 16).
  REQUIRE(o.routing.size() == 2);
  CHECK(o.routing[0].name == "b8.attn0.block0");
  CHECK(o.routing[1].name == "b16.attn0.block0");
  for (const aurora::RouterLayer& layer : o.routing) {
    CAPTURE(layer.name);
    const int64_t r = layer.resolution;
    CHECK(layer.expert_ids.sizes() == Dims{B, r * r});
    const std::vector<int64_t> counts = layer.tokens_per_expert(2);
    CHECK(counts[0] + counts[1] == B * r * r);
    if (counts[1] > 0) CHECK_THROWS_WITH_AS(layer.tokens_per_expert(1), doctest::Contains("outside [0, 1)"), Error);
  }

  // Backward of a loss on every level plus the MoE loss.
  Tensor loss = o.moe_loss;
  for (auto& [r, img] : o.images) loss = add(loss, mean(square(img)));
  autograd::backward(loss);
  int64_t nonzero = 0, total = 0;
  std::string zero_names;
  for (auto& [n, p] : store.parameters()) {
    ++total;
    const Tensor gr = p->value.grad();
    bool nz = false;
    for (double v : gr.to_vector()) nz = nz || v != 0.0;
    nonzero += nz;
    if (!nz) zero_names += " " + n;
  }
  MESSAGE(nonzero << " of " << total << " parameters have a non-zero gradient; zero:" << zero_names);
  auto grad_nonzero = [&](const std::string& name) {
    nn::Parameter* p = store.find(name);
    REQUIRE_MESSAGE(p != nullptr, name);
    for (double v : p->value.grad().to_vector())
      if (v != 0.0) return true;
    return false;
  };
  CHECK(grad_nonzero("text_head.align_dim.weight"));
  CHECK(grad_nonzero("mapping.dense0.weight"));
  CHECK(grad_nonzero("synthesis.b4.conv.weight"));
  CHECK(grad_nonzero("synthesis.b4.conv.mtm.out_scale"));  // sigma = 0, but d/d sigma is not
  CHECK(grad_nonzero("synthesis.b16.torgb.weight"));
  CHECK(grad_nonzero("synthesis.b16.attn0.block0.moe.router.weight"));

  // At initialisation the MTM predictors (sigma = 0) and everything inside a ResidualAttn that only
  // feeds the zero-initialised proj_out (the experts) get exactly zero gradient: the list above.
  // With those parameters non-zero, the gradient reaches them too.
  {
    autograd::NoGradGuard ng;
    engine::Generator r2(9);
    for (auto& [n, p] : store.parameters()) {
      const auto ends_with = [&n](const std::string& suffix) {
        return n.size() >= suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0;
      };
      // sigma of every MTM, and ResidualAttn.proj_out (not the blocks' own proj_out layers).
      const bool zero_init = ends_with(".mtm.out_scale") ||
                             (ends_with("proj_out.weight") && n.find(".block") == std::string::npos);
      if (zero_init) add_(p->value, randn(p->shape, r2), 0.3);
    }
    store.zero_grad();
  }
  {
    const aurora::Generator::Output o2 = g.forward(z, tokens, eot);
    Tensor loss2 = o2.moe_loss;
    for (auto& [r, img] : o2.images) loss2 = add(loss2, mean(square(img)));
    autograd::backward(loss2);
    CHECK(grad_nonzero("synthesis.b4.conv.mtm.offset_conv.weight"));
    CHECK(grad_nonzero("synthesis.b16.conv0.conv2.mtm.offset_conv.style.weight"));
    CHECK(grad_nonzero("synthesis.b16.attn0.block0.self_attn.to_qk.weight"));
    int64_t nz2 = 0;
    std::string zero2;
    for (auto& [n, p] : store.parameters()) {
      bool nz = false;
      for (double v : p->value.grad().to_vector()) nz = nz || v != 0.0;
      nz2 += nz;
      if (!nz) zero2 += " " + n;
    }
    MESSAGE("after making sigma and the attention proj_out non-zero: " << nz2 << " of " << total
                                                                        << " parameters have a non-zero gradient; zero (experts that got no token):" << zero2);
    CHECK(nz2 == total);  // deterministic seeds: every expert of this case receives tokens
  }

  // Progressive growing: stop after 8x8.
  const aurora::Generator::Output o8 = g.forward(z, tokens, eot, 8);
  CHECK(o8.images.size() == 2);
  CHECK(o8.images.at(8).sizes() == Dims{B, 3, 8, 8});
  CHECK_THROWS_AS(g.forward(z, tokens, eot, 12), Error);
}

// Tests of aurora/clip (the frozen CLIP towers) and aurora/clip_loss (preprocessing, the multi-level
// CLIP loss, the CLIP score):
//   * PyTorch parity (tests/parity/ref_clip.py, a CLIP written from the architecture with the HF
//     names, transformers not needed): the script writes random-weight model.safetensors files at
//     two tiny sizes (ClipConfig::tiny() and a second one with 3 layers, 4 heads, patch 8, image
//     32) and the expected text states / eot / pooled, vision image_embeds, the multi-level loss
//     (all three kinds; value, every level, and the gradient w.r.t. every pyramid image), the CLIP
//     score (quantised and float pipelines) and F.interpolate results for the resize matrices
//     (bicubic / bilinear, with and without antialias, up, down, identity, non-square);
//   * frozen: no CLIP weight requires grad, none gets a gradient, the image does; gradcheck and
//     gradgradcheck (f64) of the resize, double backward through the whole loss;
//   * ViT-L/14 parameter counts in meta mode against the formula below;
//   * one-line errors for a missing file, a missing key, a wrong shape, bad ids, unloaded towers.
// Tolerances (element ok when |ours - ref| <= atol + rtol |ref|), f32 on both sides:
//   towers, losses, resize: rtol 1e-4, atol 1e-5 (the project default); the resize references are
//   F.interpolate in f64 (PyTorch's f32 kernel computes source coordinates in f32 and is itself off
//   by 1.9e-5 at 64 -> 224; our matrices are computed in f64 and applied in f32);
//   loss gradients: atol 1e-5 * max|ref| of the tensor (they are small: pixels of a 4 px level
//   feed 224^2 CLIP pixels, and each per-element gradient is a long sum with cancellation);
//   CLIP score, float pipeline: atol 1e-3 (on a 0..100 scale); quantised pipeline: atol 0.05,
//   because a resized value within float rounding of a .5 boundary can round to the other uint8
//   level on one side (one level moves a CLIP pixel by 0.015 and the score by far less than 0.05).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "aurora/clip.h"
#include "aurora/clip_loss.h"
#include "autograd/engine.h"
#include "autograd/gradcheck.h"
#include "autograd/grad_mode.h"
#include "io/safetensors.h"
#include "tensor/ops.h"
#include "tests/parity/script_runner.h"

using namespace engine;
using namespace engine::aurora;

namespace {

const std::vector<std::string> kCases = {"tiny", "tiny_b"};

const std::string& parity_dir() {
  static std::string dir;
  static bool done = false;
  if (!done) {
    done = true;
    dir = parity::make_tmpdir("test_clip");
    if (!parity::run_script("ref_clip.py", dir, kCases)) dir.clear();
  }
  return dir;
}

std::vector<int64_t> ints(const std::string& s) {
  std::istringstream in(s);
  std::vector<int64_t> v;
  for (int64_t x; in >> x;) v.push_back(x);
  return v;
}

ClipConfig config_from(const io::SafetensorsFile& f) {
  const auto t = ints(f.metadata.at("text")), v = ints(f.metadata.at("vision"));
  REQUIRE(t.size() == 5);
  REQUIRE(v.size() == 6);
  ClipConfig c;
  c.text = ClipTextConfig{t[0], t[1], t[2], t[3], t[4], 77};
  c.vision = ClipVisionConfig{v[0], v[1], v[2], v[3], v[4], v[5]};
  c.embed_dim = ints(f.metadata.at("embed"))[0];
  return c;
}

struct Loaded {
  io::SafetensorsFile ref;
  ClipConfig config;
  ClipModel model;
};

Loaded load_case(const std::string& name) {
  const std::string& dir = parity_dir();
  REQUIRE_MESSAGE(!dir.empty(), "the PyTorch reference did not run");
  Loaded l;
  l.ref = io::read_safetensors(dir + "/" + name + ".ref.safetensors");
  const io::SafetensorsFile model_file = io::read_safetensors(dir + "/" + name + ".model.safetensors");
  l.config = config_from(model_file);
  l.model = load_clip(dir + "/" + name + ".model.safetensors", l.config);
  return l;
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (double v : t.to_vector()) m = std::max(m, std::fabs(v));
  return m;
}

void check_close(const std::string& what, const Tensor& ours, const Tensor& ref, double rtol = 1e-4,
                 double atol = 1e-5) {
  REQUIRE_MESSAGE(ours.defined(), what << ": undefined");
  REQUIRE_MESSAGE(ours.sizes() == ref.sizes(), what << ": shape " << ours.sizes().str() << " vs " << ref.sizes().str());
  const std::vector<double> a = ours.to_vector(), r = ref.to_vector();
  double worst = 0, worst_abs = 0;
  size_t wi = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(a[i] - r[i]);
    const double ratio = std::isnan(d) ? INFINITY : d / (atol + rtol * std::fabs(r[i]));
    if (ratio > worst) worst = ratio, wi = i;
    worst_abs = std::max(worst_abs, d);
  }
  MESSAGE(what << ": max|diff| " << worst_abs << " max|ref| " << max_abs(ref) << " worst/allowed " << worst);
  CHECK_MESSAGE(worst <= 1.0, what << ": element " << wi << " ours " << a[wi] << " ref " << r[wi] << " (worst/allowed "
                                   << worst << ")");
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("clip: text tower matches the PyTorch reference (states, eot, pooled)") {
  for (const std::string& name : kCases) {
    CAPTURE(name);
    Loaded l = load_case(name);
    const TextFeatures f = l.model.text->encode(l.ref.at("ids"));
    check_close(name + " text/states", f.states, l.ref.at("text/states"));
    CHECK(f.eot.to_vector() == l.ref.at("text/eot").to_vector());
    check_close(name + " text/pooled", f.pooled, l.ref.at("text/pooled"));
    CHECK_FALSE(f.states.requires_grad());
    CHECK(l.model.text->width() == l.config.text.width);
    CHECK(l.model.text->embed_dim() == l.config.embed_dim);
    CHECK_FALSE(l.model.text->trainable());
    CHECK(std::fabs(l.model.logit_scale_exp() - 100.0) < 1e-3);
  }
}

TEST_CASE("clip: vision tower matches the PyTorch reference (image_embeds)") {
  for (const std::string& name : kCases) {
    CAPTURE(name);
    Loaded l = load_case(name);
    check_close(name + " vision/embeds", l.model.vision->forward(l.ref.at("pixels")), l.ref.at("vision/embeds"));
  }
}

TEST_CASE("clip: ClipConfig::tiny() is the configuration of the 'tiny' reference case") {
  Loaded l = load_case("tiny");
  const ClipConfig t = ClipConfig::tiny();
  CHECK(t.text.vocab == l.config.text.vocab);
  CHECK(t.text.width == l.config.text.width);
  CHECK(t.text.layers == l.config.text.layers);
  CHECK(t.text.heads == l.config.text.heads);
  CHECK(t.text.mlp == l.config.text.mlp);
  CHECK(t.vision.width == l.config.vision.width);
  CHECK(t.vision.layers == l.config.vision.layers);
  CHECK(t.vision.heads == l.config.vision.heads);
  CHECK(t.vision.mlp == l.config.vision.mlp);
  CHECK(t.vision.patch == l.config.vision.patch);
  CHECK(t.vision.image == l.config.vision.image);
  CHECK(t.embed_dim == l.config.embed_dim);
}

TEST_CASE("clip: resize matrices match F.interpolate (bicubic/bilinear, antialias on/off)") {
  Loaded l = load_case("tiny");
  const int64_t n = ints(l.ref.metadata.at("resizes"))[0];
  REQUIRE(n >= 10);
  for (int64_t i = 0; i < n; ++i) {
    const std::string key = "resize/" + std::to_string(i);
    std::istringstream in(l.ref.metadata.at(key));
    int64_t ih, iw, oh, ow, aa;
    std::string kernel;
    in >> ih >> iw >> oh >> ow >> kernel >> aa;
    const Tensor x = l.ref.at(key + "/in");
    REQUIRE(x.size(2) == ih);
    REQUIRE(x.size(3) == iw);
    const Tensor y = resize2d(x, oh, ow, kernel == "bicubic" ? ResizeKernel::bicubic : ResizeKernel::bilinear, aa != 0);
    check_close(key + " " + l.ref.metadata.at(key), y, l.ref.at(key + "/out"));
  }
}

TEST_CASE("clip: multi-level CLIP loss and its image gradients match the PyTorch reference") {
  const std::vector<std::pair<std::string, ClipLossKind>> kinds = {{"symmetric", ClipLossKind::symmetric_contrastive},
                                                                   {"image_to_text", ClipLossKind::image_to_text},
                                                                   {"cosine", ClipLossKind::cosine}};
  for (const std::string& name : kCases) {
    CAPTURE(name);
    Loaded l = load_case(name);
    std::vector<double> weights;
    {
      std::istringstream in(io::read_safetensors(parity_dir() + "/" + name + ".model.safetensors")
                                .metadata.at("level_weights"));
      for (double w; in >> w;) weights.push_back(w);
    }
    for (const auto& [kind_name, kind] : kinds) {
      CAPTURE(kind_name);
      TensorList levels;
      for (size_t r = 0; r < weights.size(); ++r)
        levels.push_back(l.ref.at("level/" + std::to_string(r)).detach().requires_grad_(true));
      ClipLossConfig cfg;
      cfg.kind = kind;
      cfg.level_weights = weights;
      const ClipLossResult res =
          multi_level_clip_loss(*l.model.vision, levels, l.ref.at("text_embeds"), cfg, l.model.logit_scale_exp());
      const std::string p = name + " loss/" + kind_name + "/";
      check_close(p + "value", res.loss, l.ref.at("loss/" + kind_name + "/value"));
      REQUIRE(res.levels.size() == weights.size());
      for (size_t r = 0; r < weights.size(); ++r)
        check_close(p + "level" + std::to_string(r), res.levels[r],
                    l.ref.at("loss/" + kind_name + "/level" + std::to_string(r)));
      // A zero-weight level is skipped: the total loses exactly its term.
      if (weights.size() > 1) {
        ClipLossConfig skip = cfg;
        skip.level_weights[0] = 0;
        const ClipLossResult rs = multi_level_clip_loss(*l.model.vision, levels, l.ref.at("text_embeds"), skip,
                                                        l.model.logit_scale_exp());
        CHECK_FALSE(rs.levels[0].defined());
        const double expect = l.ref.at("loss/" + kind_name + "/value").item() -
                              weights[0] * l.ref.at("loss/" + kind_name + "/level0").item();
        CHECK(rs.loss.item() == doctest::Approx(expect).epsilon(1e-4).scale(1e-3));
      }
      const TensorList g = autograd::grad({res.loss}, levels);
      for (size_t r = 0; r < weights.size(); ++r) {
        const Tensor& ref = l.ref.at("loss/" + kind_name + "/grad" + std::to_string(r));
        CHECK(max_abs(ref) > 0);
        check_close(p + "grad" + std::to_string(r), g[r], ref, 1e-4, 1e-5 * max_abs(ref));
      }
    }
  }
}

TEST_CASE("clip: CLIP score matches the PyTorch reference (torchmetrics convention)") {
  for (const std::string& name : kCases) {
    CAPTURE(name);
    Loaded l = load_case(name);
    int64_t last = 0;  // the largest pyramid level of the case
    while (l.ref.contains("level/" + std::to_string(last + 1))) ++last;
    const Tensor images = l.ref.at("level/" + std::to_string(last));
    for (const auto& [tag, quantize] : std::vector<std::pair<std::string, bool>>{{"q", true}, {"f", false}}) {
      ClipScoreOptions o;
      o.quantize = quantize;
      const ClipScoreResult s = clip_score(*l.model.vision, images, l.ref.at("text_embeds"), o);
      const double atol = quantize ? 0.05 : 1e-3;
      const Tensor per = from_vector(s.per_sample, {int64_t(s.per_sample.size())});
      check_close(name + " score/" + tag + "/per_sample", per, l.ref.at("score/" + tag + "/per_sample"), 0, atol);
      CHECK(std::fabs(s.score - l.ref.at("score/" + tag + "/score").item()) <= atol);
      double mean = 0;
      for (double v : s.per_sample) mean += v / double(s.per_sample.size());
      CHECK(s.score == doctest::Approx(std::max(mean, 0.0)));
    }
  }
}

TEST_CASE("clip: frozen weights, gradients reach the image, double backward works") {
  Loaded l = load_case("tiny");
  for (auto& [name, p] : l.model.vision->named_parameters()) {
    CAPTURE(name);
    CHECK_FALSE(p->value.requires_grad());
  }
  for (auto& [name, p] : l.model.text->named_parameters()) CHECK_FALSE(p->value.requires_grad());
  const Tensor img = l.ref.at("level/1").detach().requires_grad_(true);
  ClipLossConfig cfg;
  cfg.kind = ClipLossKind::symmetric_contrastive;
  const ClipLossResult res = multi_level_clip_loss(*l.model.vision, {img}, l.ref.at("text_embeds"), cfg);
  CHECK(res.loss.requires_grad());
  // Double backward through the whole tower: d/dimg of sum(grad^2) via create_graph.
  const Tensor g = autograd::grad({res.loss}, {img}, {}, true)[0];
  CHECK(max_abs(g) > 0);
  const Tensor gg = autograd::grad({sum(square(g))}, {img})[0];
  CHECK(max_abs(gg) > 0);
  for (auto& [name, p] : l.model.vision->named_parameters()) CHECK_FALSE(p->value.grad().defined());
}

TEST_CASE("clip: resize2d and the preprocessing pass gradcheck and gradgradcheck (f64)") {
  Generator gen(5);
  const Tensor x = randn({1, 2, 5, 4}, gen, opts(DType::f64)).requires_grad_(true);
  for (bool aa : {false, true})
    for (ResizeKernel k : {ResizeKernel::bicubic, ResizeKernel::bilinear}) {
      auto f = [&](const TensorList& in) { return resize2d(in[0], 7, 3, k, aa); };
      CHECK(autograd::gradcheck(f, {x}) == "");
      CHECK(autograd::gradgradcheck(f, {x}) == "");
    }
  const Tensor img = randn({1, 3, 4, 4}, gen, opts(DType::f64)).requires_grad_(true);
  auto pre = [](const TensorList& in) { return clip_preprocess(in[0], 9); };
  CHECK(autograd::gradcheck(pre, {img}) == "");
}

TEST_CASE("clip: ViT-L/14 parameter counts in meta mode") {
  // Independent count from the architecture (openai/clip-vit-large-patch14):
  //   a transformer layer of width W and MLP M: 4 (W^2 + W) attention + 2 * 2W LayerNorms
  //     + (W M + M) + (M W + W) = 4W^2 + 2WM + 9W + M
  //   text, W 768, M 3072, 12 layers: 49408 * 768 token + 77 * 768 position + 12 layers + 2 * 768
  //     final LN = 37,945,344 + 59,136 + 12 * 7,087,872 + 1,536 = 123,060,480
  //   vision, W 1024, M 4096, 24 layers, patch 14, 224 px (257 tokens): 1024 * 3 * 14 * 14 patch
  //     + 1024 class + 257 * 1024 position + 2 * 2048 pre/post LN + 24 * 12,596,224
  //     = 602,112 + 1,024 + 263,168 + 4,096 + 302,309,376 = 303,179,776
  //   projections: text 768 * 768 = 589,824, visual 768 * 1024 = 786,432 (no biases); plus
  //   logit_scale: 427,616,513 in all, CLIP ViT-L/14's 427.6 M.
  auto layer = [](int64_t W, int64_t M) { return 4 * W * W + 2 * W * M + 9 * W + M; };
  const int64_t text = 49408 * 768 + 77 * 768 + 12 * layer(768, 3072) + 2 * 768;
  const int64_t vision = 1024 * 3 * 14 * 14 + 1024 + 257 * 1024 + 2 * 2 * 1024 + 24 * layer(1024, 4096);
  CHECK(text == 123060480);
  CHECK(vision == 303179776);
  ClipTextTower t;     // meta mode: nothing allocated
  ClipVisionTower v;
  CHECK(t.text_model.num_parameters() == text);
  CHECK(t.num_parameters() == text + 768 * 768);
  CHECK(v.vision_model.num_parameters() == vision);
  CHECK(v.num_parameters() == vision + 768 * 1024);
  CHECK(t.num_parameters() + v.num_parameters() + 1 == 427616513);
  // Names as in the HF checkpoint.
  bool q = false, pre = false, proj = false;
  for (auto& [name, p] : v.named_parameters()) {
    pre |= name == "vision_model.pre_layrnorm.weight";
    proj |= name == "visual_projection.weight";
  }
  for (auto& [name, p] : t.named_parameters()) q |= name == "text_model.encoder.layers.11.self_attn.q_proj.weight";
  CHECK(q);
  CHECK(pre);
  CHECK(proj);
  CHECK_FALSE(t.loaded());
  CHECK(contains(error_of([&] { t.encode(zeros({1, 77}, opts(DType::i64))); }), "not loaded"));
}

TEST_CASE("clip: one-line errors for a missing file, key or shape, and for bad inputs") {
  Loaded l = load_case("tiny");
  const std::string dir = parity_dir();
  const std::string model_path = dir + "/tiny.model.safetensors";
  auto one_line = [](const std::string& e) { return e.find('\n') == std::string::npos; };

  std::string e = error_of([&] { load_clip(dir + "/nope.safetensors", l.config); });
  CHECK(contains(e, "nope.safetensors"));
  CHECK(contains(e, "does not exist"));
  CHECK(one_line(e));

  const io::SafetensorsFile file = io::read_safetensors(model_path);
  const std::string key = "text_model.encoder.layers.1.mlp.fc2.bias";
  io::NamedTensors missing, reshaped;
  for (const auto& [name, t] : file.tensors) {
    if (name != key) missing.emplace_back(name, t);
    reshaped.emplace_back(name, name == "vision_model.embeddings.class_embedding" ? reshape(t, {2, -1}) : t);
  }
  io::save_safetensors(dir + "/missing.safetensors", missing);
  e = error_of([&] { load_clip(dir + "/missing.safetensors", l.config); });
  CHECK(contains(e, key));
  CHECK(contains(e, "missing.safetensors"));
  CHECK(contains(e, "[32]"));
  CHECK(one_line(e));

  io::save_safetensors(dir + "/reshaped.safetensors", reshaped);
  e = error_of([&] { load_clip(dir + "/reshaped.safetensors", l.config); });
  CHECK(contains(e, "vision_model.embeddings.class_embedding"));
  CHECK(contains(e, "[2,24]"));
  CHECK(contains(e, "[48]"));
  CHECK(one_line(e));

  // A config that does not match the file: the first mismatching key is named.
  ClipConfig wrong = l.config;
  wrong.text.mlp = 65;
  e = error_of([&] { load_clip(model_path, wrong); });
  CHECK(contains(e, "mlp.fc1.weight"));
  CHECK(contains(e, "[65,32]"));

  // Bad inputs.
  e = error_of([&] { l.model.text->encode(full({1, 77}, 1000, opts(DType::i64))); });
  CHECK(contains(e, "token id 1000"));
  e = error_of([&] { l.model.text->encode(zeros({1, 78}, opts(DType::i64))); });
  CHECK(contains(e, "[1,78]"));
  e = error_of([&] { l.model.vision->forward(zeros({1, 3, 8, 8})); });
  CHECK(contains(e, "[1,3,8,8]"));
  e = error_of([&] {
    ClipLossConfig cfg;
    cfg.level_weights = {1, 2};
    multi_level_clip_loss(*l.model.vision, {zeros({3, 3, 4, 4})}, zeros({3, 24}), cfg);
  });
  CHECK(contains(e, "2 level weights for 1 levels"));
  ClipLossConfig none;
  none.level_weights = {0};
  const ClipLossResult r0 = multi_level_clip_loss(*l.model.vision, {zeros({3, 3, 4, 4})}, zeros({3, 24}), none);
  CHECK(r0.loss.item() == 0);
  CHECK_FALSE(r0.levels[0].defined());
}

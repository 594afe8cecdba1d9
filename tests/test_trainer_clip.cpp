// test_trainer_clip.cpp: the CLIP wiring of the trainer (aurora/trainer.h, aurora/trainer_clip.cpp;
// docs/clip.md "Wiring into the trainer") and the `aurora clip-score` command
// (aurora/cli/clip_score.cpp).
//
// A tiny random-weight CLIP file with Hugging Face names is written here from C++ (the towers of
// aurora/clip.h built at a tiny size, every parameter drawn from a seeded normal, saved with
// io::save_safetensors): text width 8 (= the micro generator's text_in_dim), embed 16 (= the
// micro discriminator's text_dim), the full 49408-id vocabulary (the tokenizer's ids), vision
// width 16, patch 4, image 16. The towers themselves are checked against PyTorch in test_clip.cpp.
//
//  1. CLIP text + CLIP loss train: every loss finite, the CLIP loss (total and per level) in the
//     step result and in G's loss, the CLIP towers in no ParameterStore and never given a gradient.
//  2. The CLIP loss's share of G's gradient: G's gradient with clip_loss_weight > 0 minus the one
//     with weight 0 (same seed, same batch) equals the gradient of multi_level_clip_loss computed
//     separately (library call, outside the trainer) on the same G's images, two levels with
//     their level weights; and it is not zero.
//  3. Resume with CLIP on is bit-exact (every tensor of G, G_ema, D and the AdamW moments), across
//     an R1 step and a stage switch; the checkpoint holds no CLIP tensor but the file's hash.
//  4. One-line errors: widths that do not match the CLIP file (naming both keys), "clip" without
//     weights, a missing file, resuming with a CLIP file of other content or another text encoder.
//  5. `aurora train` with CLIP writes CLIP and CLIP_r into metrics.jsonl; `aurora sample` reloads
//     the CLIP text tower from the path the checkpoint recorded.
//  6. `aurora clip-score`: the printed score equals clip_score() computed directly, for a
//     checkpoint (the G_ema images reproduced here through load_sampler) and for an image folder
//     with .txt captions; missing files give one-line errors and exit code 1.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include "aurora/checkpoint.h"
#include "aurora/clip.h"
#include "aurora/clip_loss.h"
#include "aurora/config.h"
#include "aurora/train_config.h"
#include "aurora/trainer.h"
#include "autograd/engine.h"
#include "io/clip_tokenizer.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "nn/state_dict.h"
#include "tensor/error.h"
#include "tensor/ops.h"
#include "tests/train_fixtures.h"
#include "tests/trainer_compare.h"

using namespace engine;
using namespace engine::aurora;
using nlohmann::json;

namespace {

const std::string kRawKey = "mean of 100 x cosine (not floored at 0): ";
using test::kVocab;

std::string tmp_dir(const std::string& name) {
  const std::string d =
      (std::filesystem::temp_directory_path() / ("aurora_test_trainer_clip_" + name + "_" + std::to_string(::getpid())))
          .string();
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

ClipConfig tiny_clip_config() {
  ClipConfig c;
  c.text = ClipTextConfig{49408, 8, 1, 2, 16, 77};
  c.vision = ClipVisionConfig{16, 1, 2, 32, 4, 16};
  c.embed_dim = 16;
  return c;
}

// Random HF-named CLIP weights: N(0, 0.3^2) everywhere, LayerNorm gains around 1.
void write_tiny_clip(const std::string& path, uint64_t seed) {
  const ClipConfig c = tiny_clip_config();
  ClipTextTower text(c);
  ClipVisionTower vision(c);
  engine::Generator gen(seed, 0);
  io::NamedTensors out;
  for (nn::Module* m : {static_cast<nn::Module*>(&text), static_cast<nn::Module*>(&vision)})
    for (auto& [name, p] : m->named_parameters()) {
      Tensor v = mul(randn(p->shape, gen), 0.3);
      const bool ln_gain = name.find("norm") != std::string::npos && name.size() > 7 &&
                           name.compare(name.size() - 7, 7, ".weight") == 0;
      if (ln_gain) v = add(mul(v, 0.3), 1.0);
      out.emplace_back(name, v);
    }
  out.emplace_back("logit_scale", scalar_tensor(std::log(20.0)));
  io::save_safetensors(path, out);
}

// The micro model of test_trainer.cpp (G 4 -> 8 px, text_in_dim 8, D text_dim 16), with the CLIP
// text encoder and the CLIP loss on.
json micro_config(const std::string& clip_path, double clip_weight = 1.0) {
  json g = test::micro_generator_config();
  json d = test::micro_discriminator_config();
  json t = {{"batch_size", 4},
            {"seed", 7},
            {"r1_interval", 2},
            {"r1_gamma", 1.0},
            {"ema_kimg", 0.01},
            {"growing", {{"rule", "kimg"}, {"start_resolution", 4}, {"stage_kimg", 0.012}}},
            {"text_encoder", "clip"},
            {"clip_weights", clip_path},
            {"clip_text_heads", 2},
            {"clip_vision_heads", 2},
            {"clip_loss_weight", clip_weight},
            {"vocab", kVocab}};
  return {{"generator", g}, {"discriminator", d}, {"train", t}};
}

std::unique_ptr<Trainer> make_trainer(const json& doc, dist::Comm& comm) {
  const AuroraConfig cfg = parse_config(doc);
  return std::make_unique<Trainer>(cfg, parse_train_config(cfg.train), comm);
}

io::Batch make_batch(int64_t step, int64_t B, int64_t H) { return test::square_batch(step, B, H); }
using test::bit_equal;
using test::error_of;

bool one_line_with(const std::string& msg, std::initializer_list<const char*> parts) {
  if (msg.empty() || msg.find('\n') != std::string::npos) return false;
  for (const char* p : parts)
    if (msg.find(p) == std::string::npos) return false;
  return true;
}

// The CLIP file shared by the test cases (written once per process).
const std::string& clip_file() {
  static const std::string path = [] {
    const std::string d = tmp_dir("weights");
    write_tiny_clip(d + "/model.safetensors", 11);
    return d + "/model.safetensors";
  }();
  return path;
}

}  // namespace

TEST_CASE("train config: the CLIP keys") {
  const TrainConfig d = parse_train_config(json());
  CHECK(d.text_encoder == "small");
  CHECK(d.clip_weights.empty());
  CHECK(d.clip_loss_weight == 1.0);
  CHECK(d.clip_loss_kind == "symmetric_contrastive");
  const json j = {{"text_encoder", "clip"},
                  {"clip_weights", "x.safetensors"},
                  {"clip_loss_weight", 0.5},
                  {"clip_loss_kind", "cosine"},
                  {"clip_loss_resolutions", {4, 8}},
                  {"clip_loss_level_weights", {1.0, 2.0}}};
  const TrainConfig c = parse_train_config(j);
  CHECK(c.clip_loss_resolutions == std::vector<int64_t>{4, 8});
  CHECK(c.clip_loss_level_weights == std::vector<double>{1.0, 2.0});
  // Round trip through to_json.
  const TrainConfig r = parse_train_config(c.to_json());
  CHECK(r.to_json() == c.to_json());
  auto err = [](const json& bad) { return error_of([&] { parse_train_config(bad); }); };
  CHECK(one_line_with(err({{"clip_loss_weight", -1}}), {"config.train.clip_loss_weight", ">= 0"}));
  CHECK(one_line_with(err({{"clip_loss_kind", "l2"}}), {"config.train.clip_loss_kind", "cosine", "\"l2\""}));
  CHECK(one_line_with(err({{"clip_loss_resolutions", {4, 6}}}), {"config.train.clip_loss_resolutions", "6"}));
  CHECK(one_line_with(err({{"clip_loss_resolutions", {4, 8}}, {"clip_loss_level_weights", {1.0}}}),
                      {"config.train.clip_loss_level_weights", "1 weights for 2"}));
}

TEST_CASE("trainer + CLIP: text from the frozen CLIP tower, CLIP loss in G_main, finite losses") {
  auto comm = dist::make_local_comm();
  auto t = make_trainer(micro_config(clip_file()), *comm);
  REQUIRE(t->clip() != nullptr);
  REQUIRE(t->clip()->vision != nullptr);
  CHECK(t->clip()->config.text.width == 8);
  CHECK(t->clip()->config.embed_dim == 16);
  CHECK(t->clip()->config.vision.image == 16);
  // Only the generator is trained: no text encoder parameter in G's store or G's module tree.
  CHECK(t->G().small_text_encoder == nullptr);
  for (const auto& [name, p] : t->g_store().parameters()) CHECK(name.rfind("generator.", 0) == 0);
  CHECK(&t->G().text_encoder == t->clip()->text.get());
  CHECK(&t->G_ema().text_encoder == t->clip()->text.get());
  const Tensor clip_before = clone(t->clip()->text->text_projection.weight.value);
  const Tensor vision_before = clone(t->clip()->vision->visual_projection.weight.value);
  for (int64_t s = 0; s < 5; ++s) {
    const StepResult r = t->step(make_batch(s, 4, 8));
    for (double v : {r.g_loss, r.g_adv, r.g_match, r.moe, r.d_loss, r.d_real, r.d_fake, r.d_match, r.clip})
      CHECK(std::isfinite(v));
    CHECK(r.clip_applied);
    CHECK(r.clip > 0);  // contrastive CE over 4 captions: > 0
    // G's loss holds the CLIP term.
    CHECK(std::abs(r.g_loss - (r.g_adv + r.g_match + r.moe + r.clip)) <= 1e-4 * (1 + std::abs(r.g_loss)));
    // Levels: G's own, up to the stage (4 px, then 4 and 8 px after the switch at 12 images).
    CHECK(r.clip_levels.count(4) == 1);
    CHECK(r.clip_levels.count(8) == size_t(r.stage >= 8 ? 1 : 0));
    double sum = 0;
    for (const auto& [res, v] : r.clip_levels) sum += v;
    CHECK(std::abs(sum - r.clip) <= 1e-5 * (1 + sum));  // weight 1, level weights 1
  }
  CHECK(t->state().stage == 8);
  // The towers are constants: unchanged, no gradient.
  CHECK(bit_equal(clip_before, t->clip()->text->text_projection.weight.value));
  CHECK(bit_equal(vision_before, t->clip()->vision->visual_projection.weight.value));
  CHECK_FALSE(t->clip()->vision->visual_projection.weight.value.requires_grad());
  CHECK_FALSE(t->clip()->text->text_projection.weight.value.requires_grad());
  const Tensor img = t->sample({"red square", "blue square"}, t->make_z(2, 1, Trainer::kPurposeSample, 0), 0.7);
  CHECK(img.sizes() == Dims{2, 3, 8, 8});
}

TEST_CASE("trainer + CLIP: the CLIP loss's share of G's gradient is multi_level_clip_loss's gradient") {
  auto comm = dist::make_local_comm();
  const double lambda = 3.0;
  auto doc_for = [&](double weight) {
    json d = micro_config(clip_file(), weight);
    d["train"]["growing"] = {{"rule", "none"}};  // stage 8: two levels
    d["train"]["clip_loss_resolutions"] = {4, 8};
    d["train"]["clip_loss_level_weights"] = {0.5, 2.0};
    return d;
  };
  auto a = make_trainer(doc_for(0.0), *comm);
  auto b = make_trainer(doc_for(lambda), *comm);
  CHECK(a->clip()->vision == nullptr);  // weight 0: the vision tower is not even loaded
  const io::Batch batch = make_batch(0, 4, 8);
  const StepResult ra = a->step(batch), rb = b->step(batch);
  CHECK_FALSE(ra.clip_applied);
  REQUIRE(rb.clip_applied);
  CHECK(rb.clip_levels.size() == 2);
  const std::vector<double> ga = a->g_store().flat_grads().to_vector(), gb = b->g_store().flat_grads().to_vector();

  // Independently: the same G (fresh trainer, same seed), the same z and captions, the loss by the
  // library function, its gradient alone.
  auto c = make_trainer(doc_for(0.0), *comm);
  const TextToImage::Text text = c->G().encode(c->tokenize(batch.captions));
  const Tensor z = c->make_z(4, 7, Trainer::kPurposeZ_G, 0);
  const Tensor w = c->G().generator.mapping.forward(z, text.head.t_g);
  Synthesis::Output s = c->G().generator.synthesis.forward(w, text.head.t_seq, 8);
  ClipLossConfig cfg;
  cfg.weight = lambda;
  cfg.level_weights = {0.5, 2.0};
  const ClipLossResult ref = multi_level_clip_loss(*b->clip()->vision, {s.images.at(4), s.images.at(8)},
                                                   text.features.pooled, cfg, b->clip()->logit_scale_exp());
  CHECK(std::abs(ref.loss.item() - rb.clip) <= 1e-5 * std::abs(rb.clip));
  CHECK(std::abs(ref.levels[0].item() - rb.clip_levels.at(4)) <= 1e-5 * std::abs(rb.clip_levels.at(4)));
  CHECK(std::abs(ref.levels[1].item() - rb.clip_levels.at(8)) <= 1e-5 * std::abs(rb.clip_levels.at(8)));
  c->g_store().zero_grad();
  autograd::backward(ref.loss);
  const std::vector<double> gc = c->g_store().flat_grads().to_vector();
  REQUIRE(gc.size() == ga.size());
  double max_a = 0, max_c = 0, err2 = 0, norm2 = 0, diff2 = 0;
  for (size_t i = 0; i < gc.size(); ++i) {
    max_a = std::max(max_a, std::abs(ga[i]));
    max_c = std::max(max_c, std::abs(gc[i]));
    const double d = gb[i] - ga[i];
    diff2 += d * d;
    err2 += (d - gc[i]) * (d - gc[i]);
    norm2 += gc[i] * gc[i];
  }
  INFO("max|g_gan| " << max_a << ", max|g_clip| " << max_c << ", |diff - g_clip| / |g_clip| "
                     << std::sqrt(err2 / norm2));
  MESSAGE("gradient check: max|g_gan| " << max_a << ", max|g_clip| " << max_c << ", |g_b - g_a - g_clip| / |g_clip| "
                                     << std::sqrt(err2 / norm2));
  CHECK(max_c > 0);
  CHECK(diff2 > 0);  // the CLIP loss changes G's gradient
  CHECK(std::sqrt(err2 / norm2) < 1e-3);
  size_t bad = 0;
  for (size_t i = 0; i < gc.size(); ++i)
    if (std::abs(gb[i] - ga[i] - gc[i]) > 1e-4 * (max_a + max_c)) ++bad;
  CHECK(bad == 0);
}

TEST_CASE("trainer + CLIP: resume is bit-exact; the checkpoint records the CLIP file, not its tensors") {
  const int64_t N = 6;
  auto comm = dist::make_local_comm();
  const json doc = micro_config(clip_file());
  auto straight = make_trainer(doc, *comm);
  for (int64_t s = 0; s < N; ++s) straight->step(make_batch(s, 4, 8));
  const std::string dir = tmp_dir("resume");
  const std::string path = dir + "/" + checkpoint_file_name(N / 2);
  {
    auto first = make_trainer(doc, *comm);
    for (int64_t s = 0; s < N / 2; ++s) first->step(make_batch(s, 4, 8));
    save_checkpoint(*first, path);
  }
  {
    const io::SafetensorsFile f = io::read_safetensors(path);
    for (const auto& [name, t] : f.tensors) {
      INFO(name);
      CHECK(name.find("text_model") == std::string::npos);
      CHECK(name.find("vision_model") == std::string::npos);
      CHECK(name.find("text_encoder") == std::string::npos);
    }
    CHECK(f.metadata.at("clip_weights") == clip_file());
    CHECK(f.metadata.at("clip_hash") == clip_file_hash(clip_file()));
  }
  auto resumed = make_trainer(doc, *comm);
  load_checkpoint(*resumed, path);
  for (int64_t s = N / 2; s < N; ++s) resumed->step(make_batch(s, 4, 8));
  CHECK(resumed->state().step == N);
  CHECK(resumed->state().stage == 8);
  CHECK(test::check_same_training_state(*straight, *resumed) > 50);
  straight->step(make_batch(N, 4, 8));
  CHECK_FALSE(bit_equal(straight->g_store().flat_params(), resumed->g_store().flat_params()));

  // Resuming with a CLIP file of other content, or with the small text encoder: one-line errors.
  const std::string other = dir + "/other.safetensors";
  write_tiny_clip(other, 12);
  auto t_other = make_trainer(micro_config(other), *comm);
  const std::string msg = error_of([&] { load_checkpoint(*t_other, path); });
  INFO(msg);
  CHECK(one_line_with(msg, {"checkpoint", "CLIP weights", "other.safetensors", "another content"}));
  json small = micro_config(clip_file());
  small["train"]["text_encoder"] = "small";
  small["train"]["small_text_encoder"] = {{"vocab_size", 512}, {"layers", 1}, {"heads", 2}};
  auto t_small = make_trainer(small, *comm);
  const std::string msg2 = error_of([&] { load_checkpoint(*t_small, path); });
  INFO(msg2);
  CHECK(one_line_with(msg2, {"text_encoder \"clip\"", "\"small\""}));
  std::filesystem::remove_all(dir);
}

TEST_CASE("trainer + CLIP: configs that do not fit the CLIP file give one-line errors") {
  auto comm = dist::make_local_comm();
  auto err = [&](const json& doc) { return error_of([&] { make_trainer(doc, *comm); }); };
  json d = micro_config(clip_file());
  d["generator"]["text_in_dim"] = 12;
  std::string m = err(d);
  INFO(m);
  CHECK(one_line_with(m, {"generator.text_in_dim 12", "CLIP text width 8", "train.clip_weights"}));
  d = micro_config(clip_file());
  d["discriminator"]["text_dim"] = 24;
  d["discriminator"]["cond_dim"] = 24;
  m = err(d);
  CHECK(one_line_with(m, {"discriminator.text_dim 24", "CLIP embed dim 16", "train.clip_weights"}));
  d = micro_config("");
  m = err(d);
  CHECK(one_line_with(m, {"config.train.text_encoder", "config.train.clip_weights"}));
  d = micro_config("/nonexistent/model.safetensors");
  m = err(d);
  CHECK(one_line_with(m, {"/nonexistent/model.safetensors", "does not exist", "clip_weights"}));
  d = micro_config(clip_file());
  d["train"]["clip_text_heads"] = 0;  // width 8: heads cannot be inferred
  m = err(d);
  CHECK(one_line_with(m, {"width 8", "clip_text_heads"}));
  d = micro_config(clip_file());
  d["train"]["clip_loss_resolutions"] = {16};
  m = err(d);
  CHECK(one_line_with(m, {"config.train.clip_loss_resolutions", "16", "image_size 8"}));
}

// ---- aurora clip-score ------------------------------------------------------------------------

namespace {

struct Run {
  int code = -1;
  std::string out, err;
};

Run run_aurora(const std::string& args, const std::string& dir) {
  const std::string out_file = dir + "/stdout.txt", err_file = dir + "/stderr.txt";
  const std::string cmd = std::string(AURORA_BINARY) + " " + args + " > " + out_file + " 2> " + err_file;
  const int status = std::system(cmd.c_str());
  Run r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  auto slurp = [](const std::string& p) {
    std::ifstream in(p);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  r.out = slurp(out_file);
  r.err = slurp(err_file);
  return r;
}

double printed_score(const std::string& out, const std::string& key = "CLIP score: ") {
  const size_t at = out.find(key);
  REQUIRE(at != std::string::npos);
  return std::stod(out.substr(at + key.size()));
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

}  // namespace

TEST_CASE("clip-score: a checkpoint's G_ema images, scored as clip_score() computes it directly") {
  auto comm = dist::make_local_comm();
  const std::string dir = tmp_dir("score_ckpt");
  const std::string ckpt = dir + "/ckpt.safetensors";
  {
    auto t = make_trainer(micro_config(clip_file()), *comm);
    for (int64_t s = 0; s < 4; ++s) t->step(make_batch(s, 4, 8));  // stage 8
    save_checkpoint(*t, ckpt);
  }
  write_file(dir + "/captions.txt", "red square\n\nblue square\ngreen square\n");
  const std::string heads = " --clip-text-heads 2 --clip-vision-heads 2";
  const Run r = run_aurora("clip-score --ckpt " + ckpt + " --clip " + clip_file() + " --captions " + dir +
                               "/captions.txt --n 5 --seed 3" + heads,
                           dir);
  INFO(r.err);
  REQUIRE(r.code == 0);
  const double got = printed_score(r.out);

  // Directly: G_ema from the checkpoint, the z of `aurora sample` (seed 3), the CLIP loaded by the
  // library loader with the explicit configuration, clip_score() on all images at once.
  autograd::NoGradGuard no_grad;
  const auto m = load_sampler(ckpt);
  CHECK(m->stage == 8);
  const std::vector<std::string> caps = {"red square", "blue square", "green square", "red square", "blue square"};
  const Tensor ids = m->tokenize(caps);
  engine::Generator gen(Trainer::stream_seed(3, Trainer::kPurposeSample), 0);
  const Tensor z = randn({5, m->generator_config.z_dim}, gen);
  const Tensor images = m->G->synthesize(m->G->encode(ids), z, 1.0, m->stage,
                                         Trainer::stream_seed(3, Trainer::kPurposeTruncation));
  const ClipModel clip = load_clip(clip_file(), tiny_clip_config());
  const ClipScoreResult want = clip_score(*clip.vision, images, clip.text->encode(ids).pooled);
  double raw = 0;
  for (double v : want.per_sample) raw += v / double(want.per_sample.size());
  const double got_raw = printed_score(r.out, kRawKey);
  MESSAGE("clip-score (checkpoint): printed " << got << " (raw " << got_raw << "), direct " << want.score << " (raw "
                                              << raw << ")");
  CHECK(want.per_sample.size() == 5);
  CHECK(std::abs(got - want.score) <= 2e-6 + 1e-5 * std::abs(want.score));
  CHECK(std::abs(got_raw - raw) <= 2e-6 + 1e-5 * std::abs(raw));
  CHECK(raw != 0);
  // A different seed gives other images and another score (the check can fail).
  const Run r2 = run_aurora("clip-score --ckpt " + ckpt + " --clip " + clip_file() + " --captions " + dir +
                                "/captions.txt --n 5 --seed 4" + heads,
                            dir);
  REQUIRE(r2.code == 0);
  CHECK(printed_score(r2.out, kRawKey) != got_raw);
  std::filesystem::remove_all(dir);
}

TEST_CASE("clip-score: an image folder with .txt captions; missing files are one-line errors") {
  const std::string dir = tmp_dir("score_images");
  const std::string imgs = dir + "/images";
  std::filesystem::create_directories(imgs);
  // Three 12 px images (random pixels, fixed seed) with captions.
  engine::Generator gen(5, 0);
  const std::vector<std::string> caps = {"a red apple", "grinning face", "blue car"};
  TensorList floats;
  for (size_t i = 0; i < caps.size(); ++i) {
    std::vector<double> v = rand({12, 12, 3}, gen).to_vector();
    for (double& x : v) x = std::floor(x * 255.999);
    const Tensor u8 = from_vector(v, {12, 12, 3}).to(DType::u8);
    const std::string key = imgs + "/img" + std::to_string(i);
    io::write_png(key + ".png", u8);
    write_file(key + ".txt", caps[i] + "\n");
    floats.push_back(io::to_float(u8));
  }
  const std::string heads = " --clip-text-heads 2 --clip-vision-heads 2 --vocab " + kVocab;
  const Run r = run_aurora("clip-score --images " + imgs + " --clip " + clip_file() + heads, dir);
  INFO(r.err);
  REQUIRE(r.code == 0);
  const double got = printed_score(r.out);
  autograd::NoGradGuard no_grad;
  const ClipModel clip = load_clip(clip_file(), tiny_clip_config());
  io::ClipTokenizer tok(kVocab);
  const io::TokenBatch tb = tok.tokenize(std::span<const std::string>(caps));
  const Tensor ids = from_vector_i64(std::vector<int64_t>(tb.ids.begin(), tb.ids.end()), {tb.rows, tb.cols});
  const ClipScoreResult want = clip_score(*clip.vision, stack(floats, 0), clip.text->encode(ids).pooled);
  double raw = 0;
  for (double v : want.per_sample) raw += v / double(want.per_sample.size());
  const double got_raw = printed_score(r.out, kRawKey);
  MESSAGE("clip-score (folder): printed " << got << " (raw " << got_raw << "), direct " << want.score << " (raw "
                                          << raw << ")");
  CHECK(std::abs(got - want.score) <= 2e-6 + 1e-5 * std::abs(want.score));
  CHECK(std::abs(got_raw - raw) <= 2e-6 + 1e-5 * std::abs(raw));
  CHECK(raw != 0);

  // Errors: one line on stderr, exit code 1.
  auto fails_with = [&](const std::string& args, std::initializer_list<const char*> parts) {
    const Run e = run_aurora(args, dir);
    INFO(args << " -> " << e.err);
    CHECK(e.code == 1);
    CHECK(std::count(e.err.begin(), e.err.end(), '\n') == 1);
    for (const char* p : parts) CHECK(e.err.find(p) != std::string::npos);
  };
  fails_with("clip-score --images " + imgs + " --clip " + dir + "/none.safetensors" + heads,
             {"--clip", "none.safetensors", "does not exist"});
  fails_with("clip-score --ckpt " + dir + "/none.ckpt --clip " + clip_file() + " --captions x" + heads,
             {"--ckpt", "none.ckpt", "does not exist"});
  fails_with("clip-score --images " + dir + "/nofolder --clip " + clip_file() + heads, {"--images", "nofolder"});
  std::filesystem::remove(imgs + "/img1.txt");
  fails_with("clip-score --images " + imgs + " --clip " + clip_file() + heads, {"img1.png", "img1.txt"});
  std::filesystem::remove_all(dir);
}

TEST_CASE("aurora train with CLIP: metrics.jsonl holds the CLIP loss per step and per level") {
  const std::string dir = tmp_dir("cli_train");
  const std::string data = dir + "/data";
  std::filesystem::create_directories(data);
  const char* caps[] = {"red square", "green square", "blue square", "yellow square"};
  for (int i = 0; i < 4; ++i) {
    std::vector<double> v(size_t(16 * 16 * 3));
    for (size_t k = 0; k < v.size(); ++k) v[k] = (k % 3 == size_t(i % 3)) ? 230 : 20;
    io::write_png(data + "/im" + std::to_string(i) + ".png", from_vector(v, {16, 16, 3}).to(DType::u8));
    write_file(data + "/im" + std::to_string(i) + ".txt", caps[i]);
  }
  json doc = micro_config(clip_file());
  doc["train"]["log_every"] = 1;
  doc["train"]["sample_every"] = 0;
  doc["train"]["flip"] = false;
  write_file(dir + "/c.json", doc.dump(2));
  const Run r = run_aurora("train --config " + dir + "/c.json --out " + dir + "/run --steps 4 --data folder:" + data, dir);
  INFO(r.err);
  REQUIRE(r.code == 0);
  std::ifstream in(dir + "/run/metrics.jsonl");
  int64_t lines = 0;
  for (std::string line; std::getline(in, line);) {
    const json rec = json::parse(line);
    INFO(line);
    REQUIRE(rec.contains("CLIP"));
    CHECK(std::isfinite(rec["CLIP"].get<double>()));
    CHECK(rec.contains("CLIP_4"));
    CHECK(rec.contains("CLIP_8") == (rec["stage"].get<int64_t>() >= 8));
    ++lines;
  }
  CHECK(lines == 4);
  // The checkpoint records the CLIP file; `aurora sample` loads the CLIP text tower from it.
  const std::string ckpt = dir + "/run/checkpoints/" + checkpoint_file_name(4);
  const Run s = run_aurora("sample --ckpt " + ckpt + " --prompt \"red square\" --n 2 --out " + dir + "/g.png", dir);
  INFO(s.err);
  CHECK(s.code == 0);
  CHECK(std::filesystem::is_regular_file(dir + "/g.png"));
  std::filesystem::remove_all(dir);
}

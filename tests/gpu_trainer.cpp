// gpu_trainer.cpp: the Aurora trainer on a CUDA device (train.device = "cuda:0") against the
// same trainer on the CPU (aurora/trainer.h; docs/training.md "GPU training").
//
//  a. One step of the smallest preset (configs/tiny16.json) at its first stage (4 px; D is the
//     full 16 px MS-I/O discriminator), B = 2, R1 on this step (r1_interval 1): G_main, D_main and
//     D_r1 with their AdamW steps, the EMA and w_avg. Both trainers start from the same
//     parameters (counter-based init, drawn on each device) and see the same host batch and the
//     same z (Philox on each device). Compared: every logged loss, every parameter of G, G_ema and
//     D after the step, w_avg, and the flat gradients left by the last phase of each network (G:
//     G_main, D: D_r1).
//  b. R1 end to end on D alone: the penalty gamma/2 * mean_b |grad_x sum D(x, c)|^2 and the
//     gradient of every D parameter (a double backward through every D op) on cuda:0 vs CPU.
//  c. A checkpoint written by the cuda run resumes on the CPU: the CPU trainer that loads it holds
//     bit-identical G, G_ema, D and AdamW moments (the host copy is exact), and the same state.
//  d. precision "bf16" on cuda:0 (GEMM/conv inputs rounded to bf16, f32 accumulation): one step of
//     the micro model at 8 px (an MoE layer, whose router stays f32) gives finite losses close to
//     the f32 step's.
//
// Tolerances (they must hold on a real GPU, not only in the emulated build, where most results
// are bit-identical): a step is hundreds of ops, whose f32 results differ between devices in the
// last bits (FMA contraction, libm, cuBLASLt's summation order), so losses and gradients are
// compared at rtol 1e-4 (atol 1e-6, gradients atol 1e-4 x the largest |gradient|). AdamW with
// beta1 = 0 moves a parameter by lr * g / (|g| + eps) on its first step: with the usual eps 1e-8
// that is lr * sign(g), and a gradient that is zero up to rounding (seen: -4e-8 on the CPU,
// -1.2e-7 on the device, both within the gradient tolerance) moves its parameter by a different
// fraction of lr on each device. The test therefore runs AdamW in its linear regime (eps = 1,
// lr = 0.1: the update is about lr * g, so a gradient difference dg moves p by at most lr * dg) and
// compares parameters at rtol 1e-4, atol 1e-5 + lr * 1e-4 x the largest |gradient|. bf16: 8 mantissa bits (relative rounding 2^-9 = 0.2 %) on every GEMM input; the
// losses (softplus of logits of order 1) stay within 0.05 + 5 % of the f32 ones.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "aurora/checkpoint.h"
#include "aurora/config.h"
#include "aurora/discriminator.h"
#include "aurora/trainer.h"
#include "nn/losses.h"
#include "nn/state_dict.h"
#include "tests/gpu_fixtures.h"
#include "tests/train_fixtures.h"

using namespace engine;
using namespace engine::aurora;
using nlohmann::json;

namespace {

json read_json(const std::string& path) {
  std::ifstream in(path);
  REQUIRE_MESSAGE(in.good(), "cannot read ", path);
  return json::parse(in);
}

constexpr double kLr = 0.1;

// configs/tiny16.json (the smallest preset) with a one-step training section: B = 2 at the
// 4 px stage, R1 on step 0, lr 0.1, AdamW eps 1.
json tiny16_step_config(const std::string& device, const std::string& precision = "f32") {
  json doc = read_json(std::string(ENGINE_SOURCE_DIR) + "/configs/tiny16.json");
  json& t = doc["train"];
  t["batch_size"] = 2;
  t["r1_interval"] = 1;
  // AdamW in its linear regime (see the header): eps 1 >> |g|, so a step moves p by about
  // lr * g / (|g| + 1) and the parameter comparison measures the gradients' agreement.
  t["g_lr"] = kLr;
  t["d_lr"] = kLr;
  t["eps"] = 1.0;
  t["vocab"] = test::kVocab;
  t["device"] = device;
  t["precision"] = precision;
  return doc;
}

// The micro model of the trainer tests at full size (8 px, with its MoE layer).
json micro_step_config(const std::string& device, const std::string& precision) {
  json t = {{"batch_size", 2},      {"seed", 3},           {"r1_interval", 1},  {"r1_gamma", 1.0},
            {"g_lr", 1e-3},         {"d_lr", 1e-3},        {"vocab", test::kVocab},
            {"growing", {{"rule", "none"}}},
            {"small_text_encoder", {{"vocab_size", 512}, {"layers", 1}, {"heads", 2}}},
            {"device", device},     {"precision", precision}};
  return {{"generator", test::micro_generator_config()}, {"discriminator", test::micro_discriminator_config()},
          {"train", t}};
}

std::unique_ptr<Trainer> make_trainer(const json& doc, dist::Comm& comm) {
  const AuroraConfig cfg = parse_config(doc);
  return std::make_unique<Trainer>(cfg, parse_train_config(cfg.train), comm);
}

std::vector<std::pair<std::string, double>> losses_of(const StepResult& r) {
  return {{"g_loss", r.g_loss}, {"g_adv", r.g_adv},   {"g_match", r.g_match}, {"moe", r.moe}, {"d_loss", r.d_loss},
          {"d_real", r.d_real}, {"d_fake", r.d_fake}, {"d_match", r.d_match}, {"r1", r.r1}};
}

Tensor host(const Tensor& t) { return t.device().is_cpu() ? t : t.to(Device::cpu()); }

// Every tensor of a module's state_dict on the GPU trainer vs the CPU one.
void check_module(const std::string& what, nn::Module& gpu, nn::Module& cpu, double rtol, double atol) {
  auto a = nn::state_dict(gpu), b = nn::state_dict(cpu);
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    REQUIRE(a[i].first == b[i].first);
    gpu_test::check_close(what + "." + a[i].first, a[i].second, b[i].second, rtol, atol);
  }
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (double v : host(t).to_vector()) m = std::max(m, std::fabs(v));
  return m;
}

bool host_bit_equal(const Tensor& a, const Tensor& b) { return test::bit_equal(host(a), host(b)); }

}  // namespace

TEST_CASE("gpu trainer: one tiny16 step (G_main, D_main, D_r1) on cuda:0 matches the CPU") {
  if (gpu_test::no_device()) return;
  auto comm = dist::make_local_comm();
  auto cpu = make_trainer(tiny16_step_config("cpu"), *comm);
  auto gpu = make_trainer(tiny16_step_config("cuda:0"), *comm);
  REQUIRE(gpu->device() == gpu_test::kGpu);
  CHECK(gpu->g_store().flat_params().device() == gpu_test::kGpu);
  CHECK(gpu->g_opt().exp_avg().device() == gpu_test::kGpu);
  CHECK(gpu->G().generator.mapping.w_avg.value.device() == gpu_test::kGpu);
  // Same initial parameters (drawn on each device from the same Philox counters).
  gpu_test::check_equal("initial G", gpu->g_store().flat_params(), cpu->g_store().flat_params());
  gpu_test::check_equal("initial D", gpu->d_store().flat_params(), cpu->d_store().flat_params());

  const io::Batch batch = test::square_batch(0, 2, 16);  // host tensors, as the loader makes them
  const StepResult rc = cpu->step(batch);
  const StepResult rg = gpu->step(batch);
  REQUIRE(rc.r1_applied);
  REQUIRE(rg.r1_applied);
  for (size_t i = 0; i < losses_of(rc).size(); ++i) {
    const auto [name, c] = losses_of(rc)[i];
    const double g = losses_of(rg)[i].second;
    INFO(name << ": cuda " << g << " vs cpu " << c);
    CHECK(std::isfinite(g));
    CHECK(std::fabs(g - c) <= 1e-6 + 1e-4 * std::fabs(c));
  }
  // Gradients left by the last phase of each network (G_main for G, D_r1 for D).
  const double g_scale = max_abs(cpu->g_store().flat_grads()), d_scale = max_abs(cpu->d_store().flat_grads());
  gpu_test::check_close("G grads (G_main)", gpu->g_store().flat_grads(), cpu->g_store().flat_grads(), 1e-4,
                        1e-4 * g_scale + 1e-12);
  gpu_test::check_close("D grads (D_r1)", gpu->d_store().flat_grads(), cpu->d_store().flat_grads(), 1e-4,
                        1e-4 * d_scale + 1e-12);
  // Parameters after the AdamW steps, the EMA, w_avg (a buffer of G and G_ema).
  // A step moves p by lr * g / (|g| + 1), so a gradient difference dg moves it by at most lr * dg:
  // the gradient tolerance 1e-4 x the largest |gradient| times lr (D's D_main gradients, which
  // the buffers no longer hold, are taken at the larger of the two scales), on top of f32 noise.
  const double p_atol = 1e-5 + kLr * 1e-4 * std::max({g_scale, d_scale, 1.0});
  check_module("G", gpu->G(), cpu->G(), 1e-4, p_atol);
  check_module("G_ema", gpu->G_ema(), cpu->G_ema(), 1e-4, p_atol);
  check_module("D", gpu->D(), cpu->D(), 1e-4, p_atol);
  gpu_test::check_close("AdamW G exp_avg_sq", gpu->g_opt().exp_avg_sq(), cpu->g_opt().exp_avg_sq(), 2e-4,
                        1e-8 * g_scale * g_scale + 1e-20);
  // Samples come back to the host.
  const Tensor z = gpu->make_z(2, 1, Trainer::kPurposeSample, 0);
  CHECK(z.device() == gpu_test::kGpu);
  const Tensor img = gpu->sample({"red square", "blue square"}, z, 1.0);
  CHECK(img.device().is_cpu());
  CHECK(img.sizes() == Dims{2, 3, 4, 4});
}

TEST_CASE("gpu trainer: R1 penalty and its parameter gradients on cuda:0 match the CPU") {
  if (gpu_test::no_device()) return;
  const json doc = read_json(std::string(ENGINE_SOURCE_DIR) + "/configs/tiny16.json");
  const AuroraConfig cfg = parse_config(doc);
  Discriminator d_cpu(cfg.discriminator), d_gpu(cfg.discriminator);
  nn::ParameterStore s_cpu, s_gpu;
  s_cpu.materialize(d_cpu, 11);
  s_gpu.materialize(d_gpu, 11, opts(DType::f32, gpu_test::kGpu));
  const io::Batch batch = test::square_batch(1, 2, 16);
  engine::Generator gen(5);
  const Tensor t_D = randn({2, cfg.discriminator.text_dim}, gen);
  auto r1_of = [&](Discriminator& D, nn::ParameterStore& store, Device dev) {
    TensorList real = make_image_pyramid(batch.images.to(dev), cfg.discriminator.num_levels());
    for (Tensor& x : real) x = contiguous(x).detach().requires_grad_(true);
    TensorList outs;
    for (const DiscPrediction& p : D.forward(real, t_D.to(dev))) outs.push_back(p.logits);
    const Tensor r1 = nn::r1_penalty(outs, real, 0.2048);
    store.zero_grad();
    autograd::backward(r1);
    return r1.detach();
  };
  const Tensor r1_cpu = r1_of(d_cpu, s_cpu, Device::cpu());
  const Tensor r1_gpu = r1_of(d_gpu, s_gpu, gpu_test::kGpu);
  CHECK(r1_cpu.item() > 0);
  gpu_test::check_close("R1 penalty", r1_gpu, r1_cpu, 1e-4, 1e-8);
  const double scale = max_abs(s_cpu.flat_grads());
  REQUIRE(scale > 0);
  for (const auto& [name, p] : s_cpu.parameters()) {
    const Tensor g_gpu = s_gpu.find(name)->value.grad();
    gpu_test::check_close("dR1/d " + name, g_gpu, p->value.grad(), 1e-4, 1e-4 * scale + 1e-12);
  }
}

TEST_CASE("gpu trainer: a checkpoint written on cuda:0 resumes on the CPU with equal state") {
  if (gpu_test::no_device()) return;
  auto comm = dist::make_local_comm();
  auto gpu = make_trainer(tiny16_step_config("cuda:0"), *comm);
  gpu->step(test::square_batch(0, 2, 16));
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("aurora_gpu_trainer_" + std::to_string(::getpid()))).string();
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/" + checkpoint_file_name(1);
  save_checkpoint(*gpu, path);
  auto cpu = make_trainer(tiny16_step_config("cpu"), *comm);
  load_checkpoint(*cpu, path);
  CHECK(cpu->state().step == 1);
  CHECK(cpu->state().nimg == gpu->state().nimg);
  CHECK(cpu->g_opt().steps() == gpu->g_opt().steps());
  CHECK(cpu->d_opt().steps() == gpu->d_opt().steps());
  auto same_module = [](const std::string& what, nn::Module& a, nn::Module& b) {
    auto sa = nn::state_dict(a), sb = nn::state_dict(b);
    REQUIRE(sa.size() == sb.size());
    for (size_t i = 0; i < sa.size(); ++i) {
      INFO(what << "." << sa[i].first);
      CHECK(sb[i].second.device().is_cpu());
      CHECK(host_bit_equal(sa[i].second, sb[i].second));
    }
  };
  same_module("G", gpu->G(), cpu->G());
  same_module("G_ema", gpu->G_ema(), cpu->G_ema());
  same_module("D", gpu->D(), cpu->D());
  CHECK(host_bit_equal(gpu->g_opt().exp_avg(), cpu->g_opt().exp_avg()));
  CHECK(host_bit_equal(gpu->g_opt().exp_avg_sq(), cpu->g_opt().exp_avg_sq()));
  CHECK(host_bit_equal(gpu->d_opt().exp_avg(), cpu->d_opt().exp_avg()));
  CHECK(host_bit_equal(gpu->d_opt().exp_avg_sq(), cpu->d_opt().exp_avg_sq()));
  // And back: the CPU state loads onto a fresh cuda trainer.
  const std::string path2 = dir + "/" + checkpoint_file_name(2);
  save_checkpoint(*cpu, path2);
  auto gpu2 = make_trainer(tiny16_step_config("cuda:0"), *comm);
  load_checkpoint(*gpu2, path2);
  CHECK(gpu2->g_store().flat_params().device() == gpu_test::kGpu);
  CHECK(host_bit_equal(gpu2->g_store().flat_params(), gpu->g_store().flat_params()));
  CHECK(host_bit_equal(gpu2->d_opt().exp_avg_sq(), gpu->d_opt().exp_avg_sq()));
  std::filesystem::remove_all(dir);
}

TEST_CASE("gpu trainer: precision bf16 on cuda:0 runs a step with losses close to f32") {
  if (gpu_test::no_device()) return;
  auto comm = dist::make_local_comm();
  auto f32 = make_trainer(micro_step_config("cuda:0", "f32"), *comm);
  auto bf16 = make_trainer(micro_step_config("cuda:0", "bf16"), *comm);
  const io::Batch batch = test::square_batch(0, 2, 8);
  const StepResult a = f32->step(batch);
  const StepResult b = bf16->step(batch);
  REQUIRE(b.r1_applied);
  bool any_differs = false;
  for (size_t i = 0; i < losses_of(a).size(); ++i) {
    const auto [name, x] = losses_of(a)[i];
    const double y = losses_of(b)[i].second;
    INFO(name << ": bf16 " << y << " vs f32 " << x);
    CHECK(std::isfinite(y));
    CHECK(std::fabs(y - x) <= 0.05 + 0.05 * std::fabs(x));
    any_differs = any_differs || y != x;
  }
  CHECK_MESSAGE(any_differs, "bf16 GEMM inputs changed no loss: the precision scope had no effect");
  CHECK(b.moe > 0);
}

// test_train_device.cpp: the device and precision keys of the train section on the CPU
// (aurora/train_config.h, aurora/trainer.h; docs/training.md "GPU training").
//
//  1. train.device / train.precision: defaults, accepted values, errors naming the key; "tf32"
//     only with a CUDA device; the JSON round trip keeps them.
//  2. device "cuda" where it cannot run (a build without the CUDA backend, or a device index the
//     machine does not have): the trainer refuses at construction with a message naming the key.
//  3. precision "bf16" on the CPU: the CPU GEMMs round their inputs to bf16 exactly as the GPU's
//     do (tensor/precision.h), so one step of the micro model runs; its losses are finite, close
//     to the f32 step's (within 0.05 + 5 %: 8 mantissa bits on every GEMM input) and not all
//     equal to them (the scope took effect).
#include <doctest/doctest.h>

#include <cmath>
#include <string>

#include "aurora/config.h"
#include "aurora/train_config.h"
#include "aurora/trainer.h"
#include "tests/train_fixtures.h"

using namespace engine;
using namespace engine::aurora;
using nlohmann::json;
using test::error_of;

namespace {

json micro_config(const std::string& device, const std::string& precision) {
  json t = {{"batch_size", 2},
            {"seed", 3},
            {"r1_interval", 1},
            {"r1_gamma", 1.0},
            {"g_lr", 1e-3},
            {"d_lr", 1e-3},
            {"vocab", test::kVocab},
            {"growing", {{"rule", "none"}}},
            {"small_text_encoder", {{"vocab_size", 512}, {"layers", 1}, {"heads", 2}}},
            {"device", device},
            {"precision", precision}};
  return {{"generator", test::micro_generator_config()}, {"discriminator", test::micro_discriminator_config()},
          {"train", t}};
}

std::unique_ptr<Trainer> make_trainer(const json& doc, dist::Comm& comm) {
  const AuroraConfig cfg = parse_config(doc);
  return std::make_unique<Trainer>(cfg, parse_train_config(cfg.train), comm);
}

}  // namespace

TEST_CASE("train config: device and precision keys") {
  const TrainConfig d = parse_train_config(json());
  CHECK(d.device == "cpu");
  CHECK(d.precision == "f32");
  CHECK(parse_train_config(json{{"device", "cuda"}}).device == "cuda");
  CHECK(parse_train_config(json{{"device", "cuda:1"}, {"precision", "tf32"}}).precision == "tf32");
  CHECK(parse_train_config(json{{"precision", "bf16"}}).precision == "bf16");
  const DeviceSpec s = parse_device_spec("cuda:3");
  CHECK(s.cuda);
  CHECK(s.index == 3);
  CHECK_FALSE(parse_device_spec("cpu").cuda);
  CHECK(parse_device_spec("cuda").index == 0);
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "cuda:-1", "CUDA", ""}) {
    INFO(bad);
    CHECK(error_of([&] { parse_train_config(json{{"device", bad}}); })
              .find("config.train.device: expected \"cpu\", \"cuda\" or \"cuda:N\"") != std::string::npos);
  }
  CHECK(error_of([] { parse_train_config(json{{"precision", "fp16"}}); })
            .find("config.train.precision: expected one of f32, tf32, bf16") != std::string::npos);
  CHECK(error_of([] { parse_train_config(json{{"precision", "tf32"}}); }).find("CUDA") != std::string::npos);
  TrainConfig c;
  c.device = "cuda:2";
  c.precision = "bf16";
  CHECK(parse_train_config(c.to_json()).to_json() == c.to_json());
}

TEST_CASE("trainer: a CUDA device that cannot run is a clear error at start") {
  auto comm = dist::make_local_comm();
#if ENGINE_WITH_CUDA
  // A device index no machine here has.
  const std::string msg = error_of([&] { make_trainer(micro_config("cuda:63", "f32"), *comm); });
  CHECK(msg.find("config.train.device: \"cuda:63\"") != std::string::npos);
#else
  const std::string msg = error_of([&] { make_trainer(micro_config("cuda", "f32"), *comm); });
  CHECK(msg.find("config.train.device: \"cuda\" but this build has no CUDA backend") != std::string::npos);
  CHECK(msg.find("-DENGINE_CUDA=ON") != std::string::npos);
#endif
}

TEST_CASE("trainer: precision bf16 on the CPU") {
  auto comm = dist::make_local_comm();
  auto f32 = make_trainer(micro_config("cpu", "f32"), *comm);
  auto bf16 = make_trainer(micro_config("cpu", "bf16"), *comm);
  const io::Batch batch = test::square_batch(0, 2, 8);
  const StepResult a = f32->step(batch);
  const StepResult b = bf16->step(batch);
  REQUIRE(b.r1_applied);
  const std::vector<std::pair<double, double>> pairs = {{a.g_loss, b.g_loss}, {a.g_adv, b.g_adv},
                                                        {a.moe, b.moe},       {a.d_loss, b.d_loss},
                                                        {a.d_real, b.d_real}, {a.r1, b.r1}};
  bool any_differs = false;
  for (const auto& [x, y] : pairs) {
    INFO("f32 " << x << " bf16 " << y);
    CHECK(std::isfinite(y));
    CHECK(std::fabs(y - x) <= 0.05 + 0.05 * std::fabs(x));
    any_differs = any_differs || x != y;
  }
  CHECK_MESSAGE(any_differs, "bf16 GEMM inputs changed no loss: the precision scope had no effect");
}

// test_bench_train_step.cpp: smoke test of bench/bench_train_step (bench/README.md): the built
// bench runs one iteration on the CPU on the micro model of tests/train_fixtures.h, both sides
// (ours and bench/torch_train_step.py on /usr/bin/python3), and its JSON lines are checked:
//   train  one line per side with the step time, the peak bytes, the first step's losses; with
//          d_lr = 0 (so D's first AdamW step cannot amplify rounding, see bench_train_step.cpp)
//          --tight-check holds g_loss, d_loss and r1 of the two sides to 2e-3: the guard that the
//          PyTorch step built from the parity references is the trainer's step;
//   infer  images/s of both sides, the same FLOP count on both lines, and --check: the mean and
//          mean |x| of both sides' images agree to 2e-3 (the same generator on both sides).
// The path of the bench comes from CMake (BENCH_TRAIN_STEP_BINARY, bench/CMakeLists.txt). Not a
// performance test: one iteration of a tiny model, no timing assertions.
#include <doctest/doctest.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/temp_dir.h"
#include "tests/train_fixtures.h"

using nlohmann::json;

namespace {

struct Run {
  int rc = -1;
  std::string out;
  std::vector<json> lines;  // the JSON lines of stdout
};

Run run_bench(const std::string& args) {
  Run r;
  const std::string cmd = std::string(BENCH_TRAIN_STEP_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] == '{') r.lines.push_back(json::parse(line));
  return r;
}

std::string write_micro_config(const engine::test::TempDir& dir) {
  json doc = {{"generator", engine::test::micro_generator_config()},
              {"discriminator", engine::test::micro_discriminator_config()}};
  doc["train"] = {{"batch_size", 4}, {"g_lr", 0.002}, {"d_lr", 0.0}, {"r1_interval", 4}, {"r1_gamma", 0.5},
                  {"ema_kimg", 0.01}, {"small_text_encoder", {{"vocab_size", 512}, {"layers", 1}, {"heads", 2}}}};
  const std::string path = dir.file("micro.json");
  std::ofstream(path) << doc.dump(2);
  return path;
}

const json* side(const Run& r, const char* name) {
  for (const json& j : r.lines)
    if (j.value("side", "") == name) return &j;
  return nullptr;
}

}  // namespace

TEST_CASE("bench_train_step: one training step on both sides, JSON lines, same losses") {
  engine::test::TempDir dir("bench_train_step");
  const std::string cfg = write_micro_config(dir);
  const Run r = run_bench("--preset " + cfg + " --batch 4 --iters 1 --warmup 0 --threads 1 --tight-check --vocab " +
                          engine::test::kVocab);
  INFO(r.out);
  REQUIRE(r.rc == 0);
  const json* ours = side(r, "ours");
  const json* ref = side(r, "pytorch");
  REQUIRE(ours != nullptr);
  REQUIRE(ref != nullptr);
  for (const json* j : {ours, ref}) {
    CHECK(j->at("bench") == "train_step");
    CHECK(j->at("batch") == 4);
    CHECK(j->at("device") == "cpu");
    CHECK(j->at("precision") == "f32");
    CHECK(j->at("median_ms").get<double>() > 0);
    CHECK(j->at("peak_bytes").get<double>() > 0);
  }
  CHECK(ours->at("r1_every_step") == true);
  CHECK(ours->at("params_g").get<int64_t>() > 0);
  CHECK(ours->at("params_d").get<int64_t>() > 0);
  CHECK(r.out.find("BENCH case=train_step_micro metric=time_ms") != std::string::npos);
  CHECK(r.out.find("BENCH case=train_step_micro metric=peak_bytes") != std::string::npos);
  CHECK(r.out.find("MISMATCH") == std::string::npos);
}

TEST_CASE("bench_train_step: inference images/s on both sides with one FLOP count") {
  engine::test::TempDir dir("bench_train_step");
  const std::string cfg = write_micro_config(dir);
  const Run r = run_bench("--mode infer --preset " + cfg + " --batch 2 --iters 1 --warmup 0 --threads 1 "
                          "--peak-tflops 1 --check --vocab " + engine::test::kVocab);
  INFO(r.out);
  REQUIRE(r.rc == 0);
  const json* ours = side(r, "ours");
  const json* ref = side(r, "pytorch");
  REQUIRE(ours != nullptr);
  REQUIRE(ref != nullptr);
  CHECK(ours->at("images_per_s").get<double>() > 0);
  CHECK(ref->at("images_per_s").get<double>() > 0);
  CHECK(ours->at("flops_per_image").get<double>() > 0);
  CHECK(ours->at("flops_per_image") == ref->at("flops_per_image"));
  CHECK(ours->at("mfu").get<double>() > 0);
  CHECK(r.out.find("check images abs_mean") != std::string::npos);
  CHECK(r.out.find("MISMATCH") == std::string::npos);
}

TEST_CASE("bench_train_step: a CUDA device without the CUDA backend, and unknown precisions, are refused") {
#if !ENGINE_WITH_CUDA
  const Run r = run_bench("--device cuda --iters 1");
  CHECK(r.rc == 1);
  CHECK(r.out.find("no CUDA backend") != std::string::npos);
#endif
  const Run b = run_bench("--precision f16 --iters 1");
  CHECK(b.rc == 1);
  CHECK(b.out.find("unknown --precision 'f16'") != std::string::npos);
}

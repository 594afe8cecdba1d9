// test_cli.cpp: the `aurora` executable's train, sample and interpolate commands, run as a user
// would (a child process; the path comes from CMake as AURORA_BINARY).
//
//  1. Bad input: one line "aurora: error: ..." on stderr naming the problem, exit code 1, and no
//     output file left behind (missing config, unknown --set key, missing checkpoint, bad --mode,
//     an --out that already holds a run).
//  3. SIGTERM in the middle of a run: the step finishes, a checkpoint is written, exit code 0,
//     and --resume continues from it.
//  2. A very short run on a micro config and a folder dataset the test writes (coloured squares
//     with caption sidecars): metrics.jsonl, sample grids, the loss plot and checkpoints appear;
//     --resume continues from the newest checkpoint; sample and interpolate write PNGs of the
//     expected grid geometry.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aurora/inception.h"
#include "aurora/run_log.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "tensor/ops.h"
#include "tests/cli_runner.h"
#include "tests/train_fixtures.h"

using namespace engine;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

using test::kVocab;

using Result = test::CliResult;
Result run(const std::string& dir, const std::string& args) { return test::run_aurora(dir, args); }
using test::one_error_line;

json micro_config(const std::string& data) {
  json g = test::micro_generator_config();
  json d = test::micro_discriminator_config();
  json t = {{"batch_size", 4},
            {"steps", 4},
            {"r1_interval", 2},
            {"growing", {{"rule", "kimg"}, {"start_resolution", 4}, {"stage_kimg", 0.008}}},
            {"small_text_encoder", {{"vocab_size", 512}, {"layers", 1}, {"heads", 2}}},
            {"vocab", kVocab},
            {"data", data},
            {"log_every", 1},
            {"sample_every", 2},
            {"checkpoint_every", 2},
            {"keep_checkpoints", 2}};
  return {{"generator", g}, {"discriminator", d}, {"train", t}};
}

void write_folder_dataset(const std::string& dir) { test::write_square_folder(dir, 6); }

std::string tmp_dir() {
  const std::string d = (fs::temp_directory_path() / ("aurora_test_cli_" + std::to_string(::getpid()))).string();
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

}  // namespace

TEST_CASE("aurora CLI: bad input gives one error line, exit 1, nothing written") {
  const std::string dir = tmp_dir();
  Result r = run(dir, "train --config " + dir + "/missing.json --out " + dir + "/run");
  CHECK(r.code == 1);
  CHECK(one_error_line(r.err));
  CHECK(r.err.find("missing.json") != std::string::npos);
  CHECK_FALSE(fs::exists(dir + "/run"));

  std::ofstream(dir + "/c.json") << micro_config("folder:" + dir + "/data").dump();
  r = run(dir, "train --config " + dir + "/c.json --set train.bogus=1 --out " + dir + "/run");
  CHECK(r.code == 1);
  CHECK(one_error_line(r.err));
  CHECK(r.err.find("bogus") != std::string::npos);
  CHECK_FALSE(fs::exists(dir + "/run"));

  r = run(dir, "train --config " + dir + "/c.json --set train.r1_gamma=\\\"x\\\" --out " + dir + "/run");
  CHECK(r.code == 1);
  CHECK(one_error_line(r.err));
  CHECK(r.err.find("config.train.r1_gamma") != std::string::npos);

  r = run(dir, "train --config " + dir + "/c.json --out " + dir + "/run --data folder:" + dir + "/nowhere");
  CHECK(r.code == 1);
  CHECK(one_error_line(r.err));
  CHECK(r.err.find("nowhere") != std::string::npos);

  r = run(dir, "sample --ckpt " + dir + "/none.safetensors --prompt \"red apple\" --out " + dir + "/g.png");
  CHECK(r.code == 1);
  CHECK(one_error_line(r.err));
  CHECK(r.err.find("none.safetensors") != std::string::npos);
  CHECK_FALSE(fs::exists(dir + "/g.png"));

  r = run(dir, "train --out " + dir + "/run");
  CHECK(r.code == 1);
  CHECK(one_error_line(r.err));
  CHECK(r.err.find("--config") != std::string::npos);
  fs::remove_all(dir);
}

TEST_CASE("aurora CLI: a short train, resume, sample and interpolate") {
  const std::string dir = tmp_dir(), out = dir + "/run";
  write_folder_dataset(dir + "/data");
  std::ofstream(dir + "/c.json") << micro_config("folder:" + dir + "/data").dump(2);

  Result r = run(dir, "train --config " + dir + "/c.json --out " + out);
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK(fs::exists(out + "/config.json"));
  CHECK(fs::exists(out + "/losses.png"));
  CHECK(fs::exists(out + "/samples/reals.png"));
  CHECK(fs::exists(out + "/samples/step-00000000.png"));
  CHECK(fs::exists(out + "/samples/step-00000002.png"));
  CHECK(fs::exists(out + "/samples/latest.png"));
  CHECK(fs::exists(out + "/checkpoints/ckpt-00000002.safetensors"));
  CHECK(fs::exists(out + "/checkpoints/ckpt-00000004.safetensors"));
  auto records = aurora::read_metrics(out + "/metrics.jsonl");
  REQUIRE(records.size() == 4);
  CHECK(records[3]["step"] == 4);
  CHECK(records[0].contains("R1"));  // step 0 is an R1 step (logged as step 1); later records keep the latest
  CHECK(records[1]["R1"] == records[0]["R1"]);
  CHECK(records[2]["R1"] != records[0]["R1"]);  // step index 2 is the next R1 step
  CHECK(records[3]["stage"] == 8);   // grew after 2 steps (0.008 kimg at batch 4)
  // The grid: 6 captions (the dataset has 6), 8 per row, 64 px cells, 2 px padding.
  const Tensor grid = io::read_image(out + "/samples/latest.png");
  CHECK(grid.sizes() == Dims{68, 6 * 66 + 2, 3});

  // A second train into the same folder without --resume is refused; with it, it continues.
  r = run(dir, "train --config " + dir + "/c.json --out " + out);
  CHECK(r.code == 1);
  CHECK(one_error_line(r.err));
  CHECK(r.err.find("--resume") != std::string::npos);
  r = run(dir, "train --out " + out + " --resume --steps 6");
  REQUIRE(r.code == 0);
  CHECK(r.err.find("resumed from") != std::string::npos);
  CHECK(fs::exists(out + "/checkpoints/ckpt-00000006.safetensors"));
  CHECK_FALSE(fs::exists(out + "/checkpoints/ckpt-00000002.safetensors"));  // keep_checkpoints 2
  records = aurora::read_metrics(out + "/metrics.jsonl");
  REQUIRE(records.size() == 6);
  CHECK(records[5]["step"] == 6);

  const std::string ckpt = out + "/checkpoints/ckpt-00000006.safetensors";
  r = run(dir, "sample --ckpt " + ckpt + " --prompt \"red square\" --prompt \"blue square\" --n 4 --psi 0.7 --out " +
                   dir + "/s.png");
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK(io::read_image(dir + "/s.png").sizes() == Dims{68, 4 * 66 + 2, 3});
  r = run(dir, "interpolate --ckpt " + ckpt + " --prompt \"red square\" --prompt2 \"blue square\" --mode text --steps 5 "
               "--rows 2 --out " + dir + "/i.png");
  REQUIRE(r.code == 0);
  CHECK(io::read_image(dir + "/i.png").sizes() == Dims{2 * 66 + 2, 5 * 66 + 2, 3});
  r = run(dir, "interpolate --ckpt " + ckpt + " --prompt \"red square\" --mode z --steps 3 --rows 1 --out " + dir +
               "/z.png");
  REQUIRE(r.code == 0);
  CHECK(io::read_image(dir + "/z.png").sizes() == Dims{68, 3 * 66 + 2, 3});
  r = run(dir, "interpolate --ckpt " + ckpt + " --prompt a --mode fast --out " + dir + "/bad.png");
  CHECK(r.code == 1);
  CHECK(one_error_line(r.err));
  CHECK(r.err.find("--mode") != std::string::npos);
  CHECK_FALSE(fs::exists(dir + "/bad.png"));
  fs::remove_all(dir);
}

TEST_CASE("aurora CLI: SIGTERM writes a checkpoint and exits cleanly") {
  const std::string dir = tmp_dir(), out = dir + "/run";
  write_folder_dataset(dir + "/data");
  json cfg = micro_config("folder:" + dir + "/data");
  cfg["train"]["steps"] = 100000;
  cfg["train"]["checkpoint_every"] = 0;
  cfg["train"]["sample_every"] = 0;
  std::ofstream(dir + "/c.json") << cfg.dump(2);
  // SIGTERM once the first metrics record is written (the run is then past start-up and inside
  // the loop, however loaded the machine is; at most 60 s of waiting); the shell's exit status
  // is aurora's own (`wait`).
  const std::string cmd = std::string(AURORA_BINARY) + " train --config " + dir + "/c.json --out " + out +
                          " > /dev/null 2> " + dir + "/err.txt & pid=$!; i=0; while [ ! -s " + out +
                          "/metrics.jsonl ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; kill -TERM $pid; "
                          "wait $pid";
  const int status = std::system(cmd.c_str());
  std::ifstream f(dir + "/err.txt");
  std::stringstream ss;
  ss << f.rdbuf();
  INFO(ss.str());
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(ss.str().find("stopped by signal") != std::string::npos);
  std::vector<std::string> ckpts;
  for (const auto& e : fs::directory_iterator(out + "/checkpoints")) ckpts.push_back(e.path().string());
  REQUIRE(ckpts.size() == 1);
  CHECK(ckpts[0].find("ckpt-00000000.safetensors") == std::string::npos);  // at least one step was done
  const Result r = run(dir, "train --out " + out + " --resume --steps 0");
  CHECK(r.code == 0);
  CHECK(r.err.find("resumed from") != std::string::npos);
  fs::remove_all(dir);
}

TEST_CASE("aurora train: the reference-FID growing rule (spec 9) with a random-weight FID Inception") {
  // The rule's mechanics, not the FID's meaning: with a huge tolerance the generator's FID at 4 px
  // is "good enough" at the first check, so the stage grows to 8 px after step 1; both FIDs
  // (reference = even vs odd half of the real images, generator vs the even half) are logged.
  const std::string dir = tmp_dir() + "_fid";
  fs::create_directories(dir);
  write_folder_dataset(dir + "/data");
  {
    Generator g(1);
    io::NamedTensors w;
    for (const auto& [name, shape] : aurora::FidInception::parameter_shapes()) {
      const bool var = name.find("running_var") != std::string::npos || name.find("bn.weight") != std::string::npos;
      const double fan = shape.size() == 4 ? double(shape[1] * shape[2] * shape[3]) : 2048.0;
      w.emplace_back(name, var ? add(rand(shape, g), 0.5) : mul(randn(shape, g), std::sqrt(2.0 / fan)));
    }
    io::save_safetensors(dir + "/inception.safetensors", w);
  }
  json c = micro_config("folder:" + dir + "/data");
  c["train"]["steps"] = 3;
  c["train"]["growing"] = {{"rule", "fid"},       {"start_resolution", 4},  {"stage_kimg", 0},
                           {"fid_weights", ""},   {"fid_n", 3},             {"fid_check_kimg", 0.001},
                           {"fid_tolerance", 1e9}};
  std::ofstream(dir + "/c.json") << c.dump();
  // Without weights: one error line naming the key.
  Result r = run(dir, "train --config " + dir + "/c.json --out " + dir + "/run");
  CHECK(r.code == 1);
  CHECK(one_error_line(r.err));
  CHECK(r.err.find("config.train.growing.fid_weights") != std::string::npos);

  r = run(dir, "train --config " + dir + "/c.json --set train.growing.fid_weights=\\\"" + dir +
                   "/inception.safetensors\\\" --out " + dir + "/run");
  INFO(r.err);
  REQUIRE(r.code == 0);
  const std::vector<json> records = aurora::read_metrics(dir + "/run/metrics.jsonl");
  REQUIRE(records.size() == 3);
  CHECK(records[0]["stage"] == 4);
  CHECK(records[2]["stage"] == 8);
  // Step 1 checked at 4 px (reference computed once, then the generator's FID).
  REQUIRE(records[0].contains("fid"));
  const json& f = records[0]["fid"];
  REQUIRE(f.size() == 2);
  CHECK(f[0]["fid_kind"] == "reference");
  CHECK(f[1]["fid_kind"] == "generator");
  for (const json& x : f) {
    CHECK(x["resolution"] == 4);
    CHECK(x["n"] == 3);
    CHECK(std::isfinite(x["fid"].get<double>()));
    CHECK(x["fid"].get<double>() >= 0);
  }
  CHECK(r.err.find("growing 4 -> 8") != std::string::npos);
  fs::remove_all(dir);
}

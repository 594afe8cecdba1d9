// test_analysis_cli.cpp: `aurora router` (the paper's Fig. 6 and the tokens-per-expert table), the
// router statistics in the trainer's metrics.jsonl and `aurora interpolate` (Figs. 4, 5), run as a
// user would (a child process; the path comes from CMake as AURORA_BINARY, as in test_cli.cpp).
//
// A micro config with MoE layers at two resolutions (8x8: 4 experts, one block; 16x16: 3 experts,
// two blocks) is trained for one step through `aurora train`. Then:
//  1. The PNG has the size of the documented layout (docs/run-outputs.md, "aurora router").
//  2. Every pixel of every expert panel has the colour of the expert that the test computes itself:
//     the test loads the same checkpoint, draws the same z, runs Generator::forward (the text head,
//     mapping with Truncation and synthesis in one call, not the sampler path the command uses) and
//     reads Output::routing; the image panel shows the same image.
//  3. The stdout table and the --json file: per layer, tokens = B * r * r, the counts equal the
//     test's own bincount of the ids, the per-prompt counts sum to r * r, and the normalized
//     entropy and max/min fractions follow from the counts.
//  4. metrics.jsonl carries "router" (max/min fraction per MoE layer of the sample forward).
//  5. Bad input: one line "aurora: error: ...", exit code 1, no picture written.
//  6. `aurora interpolate` (Figs. 4 and 5): the first column of both modes is `aurora sample`'s
//     image of caption A for the same seed and psi, pixel for pixel; the last column differs.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aurora/checkpoint.h"
#include "aurora/router_viz.h"
#include "aurora/run_log.h"
#include "aurora/trainer.h"
#include "autograd/grad_mode.h"
#include "io/image.h"
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
std::string slurp(const std::string& path) { return test::read_text(path); }

// 16x16 images; MoE at 8 (4 experts, depth 1) and 16 (3 experts, depth 2). Training starts at
// `start` px, so start 16 gives a checkpoint with every layer and start 4 one without MoE.
json micro_config(const std::string& data, int64_t start) {
  json g = {{"image_size", 16},        {"image_channels", 3},  {"z_dim", 8},           {"w_dim", 16},
            {"mapping_layers", 2},     {"mapping_hidden", 16}, {"mapping_lr_mul", 0.01}, {"text_in_dim", 8},
            {"text_width", 16},        {"text_heads", 2},      {"text_layers", 1},     {"text_mlp_ratio", 2},
            {"text_lr_mul", 0.01},     {"attn_heads", 2},      {"attn_head_dim", 4},   {"attn_groups", 4},
            {"expert_hidden", 8},      {"residual_gain", 0.4}, {"attn_gain", 0.3},     {"fourier_sampling_rate", 4},
            {"fourier_bandwidth", 1},  {"compat_official", false}};
  g["stages"] = {{"4", {{"channels", 16}, {"conv_blocks", 1}, {"attn_modules", 0}, {"attn_depth", 0},
                        {"num_kernels", 1}, {"num_experts", 0}, {"mtm", true}}},
                 {"8", {{"channels", 8}, {"conv_blocks", 1}, {"attn_modules", 1}, {"attn_depth", 1},
                        {"num_kernels", 2}, {"num_experts", 4}, {"mtm", true}}},
                 {"16", {{"channels", 8}, {"conv_blocks", 1}, {"attn_modules", 1}, {"attn_depth", 2},
                         {"num_kernels", 1}, {"num_experts", 3}, {"mtm", false}}}};
  json d = {{"image_size", 16}, {"image_channels", 3}, {"channels", {{"16", 8}, {"8", 8}, {"4", 16}, {"1", 16}}},
            {"attention_resolutions", json::array({4})}, {"attention_head_dim", 8}, {"text_dim", 16},
            {"text_layers", 1}, {"cond_dim", 16}, {"predictor_layers", 2}};
  json t = {{"batch_size", 4},
            {"steps", 1},
            {"r1_interval", 2},
            {"growing", {{"rule", "kimg"}, {"start_resolution", start}, {"stage_kimg", 1000}}},
            {"small_text_encoder", {{"vocab_size", 512}, {"layers", 1}, {"heads", 2}}},
            {"vocab", kVocab},
            {"data", data},
            {"log_every", 1},
            {"sample_every", 1},
            {"checkpoint_every", 1},
            {"keep_checkpoints", 1}};
  return {{"generator", g}, {"discriminator", d}, {"train", t}};
}

void write_folder_dataset(const std::string& dir) { test::write_square_folder(dir, 4); }

std::string tmp_dir() {
  const std::string d = (fs::temp_directory_path() / ("aurora_test_analysis_" + std::to_string(::getpid()))).string();
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// Train one step into dir/NAME; returns the checkpoint path.
std::string train_micro(const std::string& dir, const std::string& name, int64_t start) {
  std::ofstream(dir + "/" + name + ".json") << micro_config("folder:" + dir + "/data", start).dump(2);
  const Result r = run(dir, "train --config " + dir + "/" + name + ".json --out " + dir + "/" + name);
  INFO(r.err);
  REQUIRE(r.code == 0);
  const std::string ckpt = dir + "/" + name + "/checkpoints/ckpt-00000001.safetensors";
  REQUIRE(fs::exists(ckpt));
  return ckpt;
}

struct Expected {
  std::string name;
  int64_t resolution = 0, num_experts = 0;
  std::vector<std::vector<int64_t>> ids;  // [B][r * r]
};

}  // namespace

TEST_CASE("aurora router: picture layout, expert colours, statistics; metrics.jsonl router record") {
  const std::string dir = tmp_dir();
  write_folder_dataset(dir + "/data");
  const std::string ckpt = train_micro(dir, "run", 16);

  // metrics.jsonl: the step-0 sample forward's max/min fraction of each MoE layer.
  {
    const auto records = aurora::read_metrics(dir + "/run/metrics.jsonl");
    REQUIRE(records.size() == 1);
    REQUIRE(records[0].contains("router"));
    const json& router = records[0]["router"];
    CHECK(router["step"] == 0);
    const std::vector<std::pair<std::string, int>> layers = {
        {"b8.attn0.block0", 4}, {"b16.attn0.block0", 3}, {"b16.attn0.block1", 3}};
    CHECK(router["layers"].size() == layers.size());
    for (const auto& [name, E] : layers) {
      INFO(name);
      REQUIRE(router["layers"].contains(name));
      const double mx = router["layers"][name]["max_fraction"], mn = router["layers"][name]["min_fraction"];
      // The largest share is at least the mean 1/E and the smallest at most 1/E.
      CHECK(mx >= 1.0 / E - 1e-12);
      CHECK(mn <= 1.0 / E + 1e-12);
      CHECK(mn >= 0.0);
      CHECK(mx <= 1.0);
    }
  }

  const std::vector<std::string> prompts = {"red square", "blue square"};
  const int64_t B = 2, cell = 48, seed = 3;
  const double psi = 0.7;
  const Result r = run(dir, "router --ckpt " + ckpt + " --prompt \"red square\" --prompt \"blue square\" --seed 3 "
                            "--psi 0.7 --cell 48 --json " + dir + "/stats.json --out " + dir + "/router.png");
  INFO(r.err);
  REQUIRE(r.code == 0);

  // The same forward in this process: the checkpoint's G_ema, z row b of the sample stream of the
  // seed, the text-conditional truncation mean over 16 z's of the truncation stream.
  auto m = aurora::load_sampler(ckpt);
  REQUIRE(m->stage == 16);
  std::vector<Expected> expected;
  Tensor images;
  {
    autograd::NoGradGuard no_grad;
    const aurora::TextFeatures f = m->G->text_encoder.encode(m->tokenize(prompts));
    const aurora::Generator& G = m->G->generator;
    const int64_t zd = m->generator_config.z_dim;
    engine::Generator zgen(aurora::Trainer::stream_seed(uint64_t(seed), aurora::Trainer::kPurposeSample), 0);
    const Tensor z = randn({B, zd}, zgen);
    engine::Generator tgen(aurora::Trainer::stream_seed(uint64_t(seed), aurora::Trainer::kPurposeTruncation), 0);
    const Tensor zs = reshape(randn({16 * B, zd}, tgen), {16, B, zd});
    const nn::TextHeadOutput head = G.text_head.forward(f.states, f.eot);
    aurora::Truncation trunc;
    trunc.psi = psi;
    trunc.w_text_avg = G.text_w_avg(head.t_g, zs);
    const aurora::Generator::Output out = G.forward(z, f.states, f.eot, m->stage, trunc);
    images = out.images.at(16);
    for (const aurora::RouterLayer& layer : out.routing) {
      Expected e;
      e.name = layer.name;
      e.resolution = layer.resolution;
      e.num_experts = m->generator_config.stages.at(layer.resolution).num_experts;
      const Tensor ids = layer.expert_ids.to(DType::i64).contiguous();
      REQUIRE(ids.sizes() == Dims{B, layer.resolution * layer.resolution});
      for (int64_t b = 0; b < B; ++b)
        e.ids.emplace_back(ids.data<int64_t>() + b * ids.size(1), ids.data<int64_t>() + (b + 1) * ids.size(1));
      expected.push_back(e);
    }
  }
  REQUIRE(expected.size() == 3);
  CHECK(expected[0].name == "b8.attn0.block0");
  CHECK(expected[1].name == "b16.attn0.block0");
  CHECK(expected[2].name == "b16.attn0.block1");
  // The colour check is only meaningful if some map uses more than one expert.
  std::set<int64_t> distinct;
  for (const auto& e : expected)
    for (const auto& row : e.ids) distinct.insert(row.begin(), row.end());
  CHECK(distinct.size() > 1);

  // 1. Size: 4 panels of 48 px + 6 px gaps; 2 rows of (12 caption + 48 + 6); one legend row of 14
  //    px (title "experts" and 4 swatches fit in 222 px) and the bottom pad.
  const Tensor pic = io::read_image(dir + "/router.png");
  const int64_t L = int64_t(expected.size());
  const int64_t W = aurora::kRouterPad + (1 + L) * (cell + aurora::kRouterPad);
  const int64_t H = aurora::kRouterPad + B * (aurora::kRouterLabel + cell + aurora::kRouterPad) + 14 + aurora::kRouterPad;
  CHECK(W == 222);
  REQUIRE(pic.sizes() == Dims{H, W, 3});

  // 2. Colours of every panel pixel.
  const uint8_t* px = pic.data<uint8_t>();
  auto at = [&](int64_t x, int64_t y) { return io::Rgb{px[(y * W + x) * 3], px[(y * W + x) * 3 + 1], px[(y * W + x) * 3 + 2]}; };
  for (int64_t b = 0; b < B; ++b) {
    const int64_t y0 = aurora::kRouterPad + b * (aurora::kRouterLabel + cell + aurora::kRouterPad) + aurora::kRouterLabel;
    for (int64_t k = 0; k < L; ++k) {
      const Expected& e = expected[size_t(k)];
      const int64_t x0 = aurora::kRouterPad + (k + 1) * (cell + aurora::kRouterPad), res = e.resolution;
      int64_t wrong = 0;
      for (int64_t y = 0; y < cell; ++y)
        for (int64_t x = 0; x < cell; ++x) {
          const int64_t id = e.ids[size_t(b)][size_t((y * res / cell) * res + x * res / cell)];
          wrong += at(x0 + x, y0 + y) == aurora::expert_colour(id) ? 0 : 1;
        }
      INFO("row ", b, " layer ", e.name);
      CHECK(wrong == 0);
    }
    // The image panel: the same image, nearest-upsampled (3x).
    const Tensor img = io::to_u8(narrow(images, 0, b, 1).reshape({3, 16, 16}));  // [16, 16, 3]
    const uint8_t* ip = img.data<uint8_t>();
    int64_t off = 0;
    for (int64_t y = 0; y < cell; ++y)
      for (int64_t x = 0; x < cell; ++x) {
        const uint8_t* s = ip + ((y * 16 / cell) * 16 + x * 16 / cell) * 3;
        const io::Rgb c = at(aurora::kRouterPad + x, y0 + y);
        off = std::max<int64_t>({off, std::abs(c.r - s[0]), std::abs(c.g - s[1]), std::abs(c.b - s[2])});
      }
    INFO("image panel of row ", b);
    CHECK(off <= 1);  // rounding at a quantisation boundary at most
  }

  // 3a. The stdout table: header, then one line per layer.
  std::istringstream lines(r.out);
  std::string line;
  REQUIRE(std::getline(lines, line));
  CHECK(line.rfind("layer", 0) == 0);
  for (const Expected& e : expected) {
    REQUIRE(std::getline(lines, line));
    INFO(line);
    std::istringstream f(line);
    std::string name, used;
    int64_t res = 0, experts = 0, tokens = 0;
    double entropy = 0, max_pct = 0, min_pct = 0;
    f >> name >> res >> experts >> tokens >> used >> entropy >> max_pct >> min_pct;
    std::vector<int64_t> counts;
    for (int64_t c; f >> c;) counts.push_back(c);
    CHECK(name == e.name);
    CHECK(res == e.resolution);
    CHECK(experts == e.num_experts);
    CHECK(tokens == B * res * res);
    std::vector<int64_t> mine(size_t(e.num_experts), 0);
    for (const auto& row : e.ids)
      for (int64_t id : row) ++mine[size_t(id)];
    CHECK(counts == mine);
    int64_t sum = 0, used_n = 0;
    for (int64_t c : counts) sum += c, used_n += c > 0;
    CHECK(sum == B * res * res);
    CHECK(used == std::to_string(used_n) + "/" + std::to_string(e.num_experts));
  }
  CHECK_FALSE(std::getline(lines, line));

  // 3b. The JSON file.
  const json stats = json::parse(slurp(dir + "/stats.json"));
  CHECK(stats["stage"] == 16);
  CHECK(stats["seed"] == 3);
  CHECK(stats["prompts"] == json(prompts));
  REQUIRE(stats["layers"].size() == expected.size());
  for (size_t k = 0; k < expected.size(); ++k) {
    const Expected& e = expected[k];
    const json& l = stats["layers"][k];
    INFO(e.name);
    CHECK(l["name"] == e.name);
    CHECK(l["tokens"] == B * e.resolution * e.resolution);
    double h = 0, mx = 0, mn = 1;
    std::vector<int64_t> total(size_t(e.num_experts), 0);
    for (int64_t b = 0; b < B; ++b) {
      std::vector<int64_t> mine(size_t(e.num_experts), 0);
      for (int64_t id : e.ids[size_t(b)]) ++mine[size_t(id)], ++total[size_t(id)];
      CHECK(l["counts_per_prompt"][size_t(b)].get<std::vector<int64_t>>() == mine);
    }
    CHECK(l["counts"].get<std::vector<int64_t>>() == total);
    for (int64_t c : total) {
      const double p = double(c) / double(B * e.resolution * e.resolution);
      if (p > 0) h -= p * std::log(p);
      mx = std::max(mx, p), mn = std::min(mn, p);
    }
    CHECK(l["normalized_entropy"].get<double>() == doctest::Approx(h / std::log(double(e.num_experts))).epsilon(1e-12));
    CHECK(l["max_fraction"].get<double>() == doctest::Approx(mx).epsilon(1e-12));
    CHECK(l["min_fraction"].get<double>() == doctest::Approx(mn).epsilon(1e-12));
  }
  fs::remove_all(dir);
}

TEST_CASE("aurora router: bad input gives one error line, exit 1, no picture") {
  const std::string dir = tmp_dir();
  write_folder_dataset(dir + "/data");
  const std::string ckpt = train_micro(dir, "run", 16);
  const std::string out = dir + "/r.png";
  struct Case {
    std::string args, needle;
  };
  const std::vector<Case> cases = {
      {"router --ckpt " + dir + "/none.safetensors --prompt a --out " + out, "none.safetensors"},
      {"router --ckpt " + ckpt + " --out " + out, "--prompt"},
      {"router --ckpt " + ckpt + " --prompt a --cell 2 --out " + out, "--cell"},
      {"router --ckpt " + ckpt + " --prompt a --psi -1 --out " + out, "--psi"},
      {"router --ckpt " + ckpt + " --prompt a --out " + dir + "/no/such/folder/r.png", "no/such/folder"},
  };
  for (const Case& c : cases) {
    const Result r = run(dir, c.args);
    INFO(c.args, "\n", r.err);
    CHECK(r.code == 1);
    CHECK(one_error_line(r.err));
    CHECK(r.err.find(c.needle) != std::string::npos);
    CHECK_FALSE(fs::exists(out));
  }
  // A checkpoint still at 4 px has no MoE layer to show: said so, naming the stage.
  const std::string ckpt4 = train_micro(dir, "run4", 4);
  const Result r = run(dir, "router --ckpt " + ckpt4 + " --prompt a --out " + out);
  INFO(r.err);
  CHECK(r.code == 1);
  CHECK(one_error_line(r.err));
  CHECK(r.err.find("stage 4") != std::string::npos);
  CHECK_FALSE(fs::exists(out));
  fs::remove_all(dir);
}

// `aurora interpolate` (Figs. 4 and 5): rows are the z's of the sample stream, so the first column
// (a = 0: caption A in text mode, w of the first z in z mode) is exactly what `aurora sample` draws
// for caption A with the same seed and psi, and the walk actually moves away from it.
TEST_CASE("aurora interpolate: the first column is aurora sample's image; the last one differs") {
  const std::string dir = tmp_dir();
  write_folder_dataset(dir + "/data");
  const std::string ckpt = train_micro(dir, "run", 16);
  const std::string common = " --ckpt " + ckpt + " --seed 5 --psi 0.7";
  Result r = run(dir, "sample" + common + " --prompt \"red square\" --n 2 --nrow 1 --out " + dir + "/s.png");
  INFO(r.err);
  REQUIRE(r.code == 0);
  r = run(dir, "interpolate" + common + " --prompt \"red square\" --prompt2 \"blue square\" --mode text --steps 3 "
               "--rows 2 --out " + dir + "/t.png");
  REQUIRE(r.code == 0);
  r = run(dir, "interpolate" + common + " --prompt \"red square\" --mode z --steps 3 --rows 2 --out " + dir + "/z.png");
  REQUIRE(r.code == 0);
  // Grids: 16 px images shown in 64 px cells, 2 px apart; cell (row i, column j) at 2 + 66 j, 2 + 66 i.
  const Tensor s = io::read_image(dir + "/s.png"), t = io::read_image(dir + "/t.png"), z = io::read_image(dir + "/z.png");
  REQUIRE(s.sizes() == Dims{2 * 66 + 2, 66 + 2, 3});
  REQUIRE(t.sizes() == Dims{2 * 66 + 2, 3 * 66 + 2, 3});
  REQUIRE(z.sizes() == Dims{2 * 66 + 2, 3 * 66 + 2, 3});
  // Largest channel difference between cell (i, j) of a and cell (i, k) of b.
  auto cell_diff = [](const Tensor& a, int64_t i, int64_t j, const Tensor& b, int64_t k) {
    const int64_t wa = a.size(1), wb = b.size(1);
    int d = 0;
    for (int64_t y = 0; y < 64; ++y)
      for (int64_t x = 0; x < 64; ++x)
        for (int64_t c = 0; c < 3; ++c) {
          const int64_t yy = 2 + 66 * i + y;
          d = std::max(d, std::abs(int(a.data<uint8_t>()[(yy * wa + 2 + 66 * j + x) * 3 + c]) -
                                   int(b.data<uint8_t>()[(yy * wb + 2 + 66 * k + x) * 3 + c])));
        }
    return d;
  };
  for (int64_t i = 0; i < 2; ++i) {
    INFO("row ", i);
    CHECK(cell_diff(t, i, 0, s, 0) == 0);
    CHECK(cell_diff(z, i, 0, s, 0) == 0);
    CHECK(cell_diff(t, i, 2, s, 0) > 0);
    CHECK(cell_diff(z, i, 2, s, 0) > 0);
  }
  fs::remove_all(dir);
}

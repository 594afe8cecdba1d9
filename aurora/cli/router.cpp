// router.cpp: `aurora router`, the router picture of the Aurora paper (Fig. 6) and the load
// balance of every MoE layer (docs/run-outputs.md, "aurora router").
//
//   aurora router --ckpt CKPT --prompt "red apple" [--prompt ...] [--seed S] [--psi 0.7]
//                 [--cell 128] [--vocab PATH] [--json stats.json] --out router.png
// For prompt b (b = 0 .. B-1) the checkpoint's G_ema draws one image from z row b of the sample
// stream of (seed) at the checkpoint's stage, exactly as `aurora sample --n B` with the same
// prompts, seed and psi does, and records which expert each token of each MoE layer was routed to
// (aurora/generator.h, RouterLayer). The PNG has one row per prompt:
//   [image] [layer 0 expert map] [layer 1 expert map] ...   (aurora/router_viz.h panels)
// with the prompt as the image panel's caption and one legend of expert colours at the bottom.
// Every map is drawn by render_router_maps; this file only stacks the rows (Layout below).
//
// Statistics (aurora/router_stats.h): per layer, over the B images, the tokens routed to each
// expert (B * r * r in all), the normalized entropy and the max/min fraction; printed as a table
// on stdout and, with --json, written as a JSON document (also the counts of every prompt).
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aurora/checkpoint.h"
#include "aurora/cli/commands.h"
#include "aurora/router_stats.h"
#include "aurora/router_viz.h"
#include "aurora/trainer.h"
#include "autograd/grad_mode.h"
#include "io/atomic_file.h"
#include "io/bitmap_font.h"
#include "io/image.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace engine::cli {
namespace {

using aurora::kRouterLabel;
using aurora::kRouterPad;

struct RouterOptions {
  std::string ckpt, out, vocab, json;
  std::vector<std::string> prompts;
  int64_t cell = 128;
  double psi = 0.7;
  uint64_t seed = 0;
};

// Layout. render_router_maps draws one prompt's row as a picture of its own:
//   kRouterPad | caption band kRouterLabel + panel `cell` + kRouterPad | legend
// The rows are stacked by keeping the top pad of the first picture, the band of every picture
// (row b starts at kRouterPad + b * (kRouterLabel + cell + kRouterPad)) and the legend of the last
// one. The result is the picture render_router_maps would draw for all panels of all rows with
// (1 + #layers) columns: panel k of row b at x = kRouterPad + k * (cell + kRouterPad),
// y = kRouterPad + b * (kRouterLabel + cell + kRouterPad) + kRouterLabel.
Tensor stack_rows(const std::vector<Tensor>& rows, const std::vector<std::string>& captions, int64_t cell) {
  const int64_t band = kRouterLabel + cell + kRouterPad, B = int64_t(rows.size());
  const int64_t W = rows[0].size(1), single_h = rows[0].size(0), legend = single_h - kRouterPad - band;
  const int64_t H = kRouterPad + B * band + legend;
  Tensor out = empty({H, W, 3}, opts(DType::u8));
  uint8_t* dst = out.data<uint8_t>();
  const size_t line = size_t(W * 3);
  auto copy = [&](const Tensor& src, int64_t src_row, int64_t dst_row, int64_t n) {
    std::memcpy(dst + dst_row * int64_t(line), src.data<uint8_t>() + src_row * int64_t(line), size_t(n) * line);
  };
  copy(rows[0], 0, 0, kRouterPad);
  for (int64_t b = 0; b < B; ++b) {
    ENGINE_CHECK(rows[size_t(b)].size(0) == single_h && rows[size_t(b)].size(1) == W,
                 "aurora router: row {} is {} but row 0 is {}", b, rows[size_t(b)].sizes().str(), rows[0].sizes().str());
    const int64_t y = kRouterPad + b * band;
    copy(rows[size_t(b)], kRouterPad, y, band);
    // The image panel's caption "image" becomes the prompt (cut to the panel width).
    for (int64_t j = 0; j < kRouterLabel; ++j)
      std::memset(dst + (y + j) * int64_t(line) + kRouterPad * 3, 255, size_t(cell * 3));
    const std::string& text = captions[size_t(b)];
    const size_t chars = size_t(std::max<int64_t>(0, (cell + 1) / io::kGlyphAdvance));
    io::draw_text(dst, W, H, kRouterPad, y + 2, text.size() <= chars ? text : text.substr(0, chars), io::Rgb{20, 20, 20});
  }
  copy(rows.back(), kRouterPad + band, kRouterPad + B * band, legend);
  return out;
}

void run_router(const RouterOptions& o) {
  ENGINE_CHECK(!o.prompts.empty(), "--prompt is required");
  ENGINE_CHECK(o.prompts.size() <= 256, "--prompt: at most 256 prompts, got {}", o.prompts.size());
  ENGINE_CHECK(o.cell >= 8 && o.cell <= 1024, "--cell: expected 8..1024 pixels, got {}", o.cell);
  ENGINE_CHECK(o.psi >= 0, "--psi: expected >= 0, got {}", o.psi);
  auto m = aurora::load_sampler(o.ckpt, o.vocab);
  autograd::NoGradGuard no_grad;
  const int64_t B = int64_t(o.prompts.size());

  // The same z and truncation streams as `aurora sample`.
  const auto text = m->G->encode(m->tokenize(o.prompts));
  engine::Generator gen(aurora::Trainer::stream_seed(o.seed, aurora::Trainer::kPurposeSample), 0);
  const Tensor z = randn({B, m->generator_config.z_dim}, gen);
  std::vector<aurora::RouterLayer> routing;
  const Tensor images = m->G->synthesize(text, z, o.psi, m->stage,
                                         aurora::Trainer::stream_seed(o.seed, aurora::Trainer::kPurposeTruncation), 16,
                                         &routing);
  ENGINE_CHECK(!routing.empty(), "{}: the generator has no MoE layer at resolutions up to the checkpoint's stage {} "
               "(nothing to show; MoE stages: see the config's generator.stages.*.num_experts)", o.ckpt, m->stage);

  const std::vector<aurora::RouterLayerStats> stats = aurora::router_stats(routing, m->generator_config);
  int64_t num_experts = 0;
  for (const auto& s : stats) num_experts = std::max(num_experts, s.num_experts);

  // One picture per prompt, then stacked.
  aurora::RouterVizOptions viz;
  viz.cell = o.cell;
  viz.num_experts = num_experts;
  std::vector<Tensor> rows;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<aurora::RouterMap> maps;
    for (const auto& layer : routing)
      maps.push_back(aurora::router_map_from_ids(layer.name, layer.resolution, layer.expert_ids, b));
    rows.push_back(aurora::render_router_maps(narrow(images, 0, b, 1).reshape({images.size(1), images.size(2),
                                                                                images.size(3)}),
                                              maps, viz));
  }
  const Tensor picture = stack_rows(rows, o.prompts, o.cell);

  std::fputs(aurora::format_router_table(stats).c_str(), stdout);
  std::fflush(stdout);

  nlohmann::json doc;
  if (!o.json.empty()) {
    doc = {{"checkpoint", o.ckpt}, {"step", m->step}, {"stage", m->stage}, {"seed", o.seed},
           {"psi", o.psi},         {"prompts", o.prompts}};
    doc["layers"] = nlohmann::json::array();
    for (size_t k = 0; k < stats.size(); ++k) {
      nlohmann::json layer = stats[k].to_json();
      nlohmann::json per_prompt = nlohmann::json::array();
      for (int64_t b = 0; b < B; ++b) {
        const aurora::RouterLayer row{routing[k].name, routing[k].resolution,
                                      narrow(routing[k].expert_ids.to(Device::cpu()), 0, b, 1)};
        per_prompt.push_back(row.tokens_per_expert(stats[k].num_experts));
      }
      layer["counts_per_prompt"] = per_prompt;
      doc["layers"].push_back(layer);
    }
  }
  io::write_png(o.out, picture);
  if (!o.json.empty()) io::write_file_atomically(o.json, doc.dump(2) + "\n");
  std::fprintf(stderr, "aurora router: %lld prompt(s), %zu MoE layer(s) (step %lld, %lld px) -> %s%s%s\n",
               static_cast<long long>(B), routing.size(), static_cast<long long>(m->step),
               static_cast<long long>(m->stage), o.out.c_str(), o.json.empty() ? "" : ", ", o.json.c_str());
}

const RegisterCommand registered(40, [](CLI::App& app) {
  auto o = std::make_shared<RouterOptions>();
  CLI::App* sub = app.add_subcommand(
      "router", "which expert each pixel uses in every MoE layer (paper Fig. 6), and tokens per expert");
  sub->add_option("--ckpt", o->ckpt, "checkpoint (.safetensors) written by aurora train")->required();
  sub->add_option("--prompt", o->prompts, "caption (repeatable; one picture row each)")->required();
  sub->add_option("--psi", o->psi, "truncation psi (1 = none; default 0.7)");
  sub->add_option("--seed", o->seed, "z seed (default 0; row b uses z row b, as aurora sample)");
  sub->add_option("--cell", o->cell, "panel side in pixels (default 128)");
  sub->add_option("--vocab", o->vocab, "CLIP BPE vocabulary (default: the checkpoint's train.vocab)");
  sub->add_option("--json", o->json, "also write the statistics as JSON to this file");
  sub->add_option("--out", o->out, "output PNG")->required();
  sub->callback([o] { run_router(*o); });
});

}  // namespace
}  // namespace engine::cli

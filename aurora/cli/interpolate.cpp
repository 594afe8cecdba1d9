// interpolate.cpp: `aurora interpolate` (the Aurora paper's Figs. 4 and 5; docs/training.md).
//
//   aurora interpolate --ckpt CKPT --prompt A [--prompt2 B] [--mode text|z] [--steps 8]
//                      [--rows 4] [--psi 0.7] [--seed S] --out x.png
// One grid row per z (rows), `steps` columns:
//   text  fixed z per row; the text conditions interpolate linearly from prompt A to prompt B:
//         (t_g, t_seq) = lerp(head(A), head(B), a), a = 0 .. 1 (the generator's text head
//         outputs, i.e. what the mapping network and the cross-attention consume)
//   z     fixed prompt A; w interpolates linearly between the (truncated) w of two z's, so each
//         row walks the latent space of one caption
// Truncation (psi) as in `aurora sample`. The PNG is written atomically.
#include <memory>
#include <string>
#include <vector>

#include "aurora/checkpoint.h"
#include "aurora/cli/commands.h"
#include "aurora/trainer.h"
#include "autograd/grad_mode.h"
#include "io/image.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace engine::cli {
namespace {

struct InterpOptions {
  std::string ckpt, out, vocab, prompt, prompt2, mode = "text";
  int64_t steps = 8, rows = 4;
  double psi = 0.7;
  uint64_t seed = 0;
};

Tensor lerp(const Tensor& a, const Tensor& b, double t) { return add(a, mul(sub(b, a), t)); }

void run_interpolate(const InterpOptions& o) {
  ENGINE_CHECK(o.mode == "text" || o.mode == "z", "--mode: expected text or z, got '{}'", o.mode);
  ENGINE_CHECK(o.steps >= 2 && o.steps <= 256, "--steps: expected 2..256, got {}", o.steps);
  ENGINE_CHECK(o.rows >= 1 && o.rows <= 256, "--rows: expected 1..256, got {}", o.rows);
  ENGINE_CHECK(o.mode != "text" || !o.prompt2.empty(), "--mode text needs --prompt2 (the caption to interpolate to)");
  auto m = aurora::load_sampler(o.ckpt, o.vocab);
  autograd::NoGradGuard no_grad;
  const int64_t zd = m->generator_config.z_dim, S = o.steps, R = o.rows;
  const uint64_t tseed = aurora::Trainer::stream_seed(o.seed, aurora::Trainer::kPurposeTruncation);
  engine::Generator gen(aurora::Trainer::stream_seed(o.seed, aurora::Trainer::kPurposeSample), 0);
  TensorList cells;  // row-major
  if (o.mode == "text") {
    const Tensor z = randn({R, zd}, gen);
    const auto a = m->G->encode(m->tokenize(std::vector<std::string>(size_t(R), o.prompt)));
    const auto b = m->G->encode(m->tokenize(std::vector<std::string>(size_t(R), o.prompt2)));
    TensorList cols;
    for (int64_t s = 0; s < S; ++s) {
      const double t = double(s) / double(S - 1);
      aurora::TextToImage::Text mix = a;
      mix.head.t_g = lerp(a.head.t_g, b.head.t_g, t);
      mix.head.t_seq = lerp(a.head.t_seq, b.head.t_seq, t);
      cols.push_back(m->G->synthesize(mix, z, o.psi, m->stage, tseed));  // [R, C, r, r]
    }
    for (int64_t r = 0; r < R; ++r)
      for (int64_t s = 0; s < S; ++s) cells.push_back(narrow(cols[size_t(s)], 0, r, 1));
  } else {
    const Tensor z0 = randn({R, zd}, gen), z1 = randn({R, zd}, gen);
    const auto a = m->G->encode(m->tokenize(std::vector<std::string>(size_t(R), o.prompt)));
    const Tensor w0 = m->G->mapping_w(a, z0, o.psi, tseed), w1 = m->G->mapping_w(a, z1, o.psi, tseed);
    TensorList cols;
    for (int64_t s = 0; s < S; ++s)
      cols.push_back(m->G->synthesize_w(a, lerp(w0, w1, double(s) / double(S - 1)), m->stage));
    for (int64_t r = 0; r < R; ++r)
      for (int64_t s = 0; s < S; ++s) cells.push_back(narrow(cols[size_t(s)], 0, r, 1));
  }
  io::write_png(o.out, aurora::display_grid(cat(cells, 0), S));
  std::fprintf(stderr, "aurora interpolate: %lld x %lld (%s) -> %s\n", static_cast<long long>(R),
               static_cast<long long>(S), o.mode.c_str(), o.out.c_str());
}

const RegisterCommand registered(30, [](CLI::App& app) {
  auto o = std::make_shared<InterpOptions>();
  CLI::App* sub = app.add_subcommand("interpolate", "text or latent interpolation grids from a checkpoint");
  sub->add_option("--ckpt", o->ckpt, "checkpoint (.safetensors) written by aurora train")->required();
  sub->add_option("--prompt", o->prompt, "caption A")->required();
  sub->add_option("--prompt2", o->prompt2, "caption B (--mode text)");
  sub->add_option("--mode", o->mode, "text (A -> B, fixed z) or z (fixed caption, w between two z's)");
  sub->add_option("--steps", o->steps, "columns (default 8)");
  sub->add_option("--rows", o->rows, "rows, one z each (default 4)");
  sub->add_option("--psi", o->psi, "truncation psi (default 0.7)");
  sub->add_option("--seed", o->seed, "z seed (default 0)");
  sub->add_option("--vocab", o->vocab, "CLIP BPE vocabulary (default: the checkpoint's train.vocab)");
  sub->add_option("--out", o->out, "output PNG")->required();
  sub->callback([o] { run_interpolate(*o); });
});

}  // namespace
}  // namespace engine::cli

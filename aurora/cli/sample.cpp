// sample.cpp: `aurora sample` (docs/aurora-spec.md section 7; docs/training.md).
//
//   aurora sample --ckpt runs/NAME/checkpoints/ckpt-N.safetensors --prompt "red apple" [--prompt ...]
//                 [--n 16] [--psi 0.7] [--seed S] [--nrow 8] [--vocab PATH] --out grid.png
// Draws n images from the checkpoint's EMA generator (G_ema) at the checkpoint's stage; the
// prompts are used in turn (image i has prompt i mod #prompts). psi < 1 applies the released
// text-conditional truncation (spec 7: towards w_avg, then towards the caption's mean w over 16
// z's). z comes from the Philox stream of (seed, sample purpose), so a seed always gives the same
// grid. The PNG is written atomically (nothing half-written on failure).
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

struct SampleOptions {
  std::string ckpt, out, vocab;
  std::vector<std::string> prompts;
  int64_t n = 16, nrow = 8;
  double psi = 0.7;
  uint64_t seed = 0;
};

void run_sample(const SampleOptions& o) {
  ENGINE_CHECK(o.n >= 1 && o.n <= 4096, "--n: expected 1..4096, got {}", o.n);
  ENGINE_CHECK(o.nrow >= 1, "--nrow: expected >= 1, got {}", o.nrow);
  ENGINE_CHECK(o.psi >= 0, "--psi: expected >= 0, got {}", o.psi);
  ENGINE_CHECK(!o.prompts.empty(), "--prompt is required");
  auto m = aurora::load_sampler(o.ckpt, o.vocab);
  autograd::NoGradGuard no_grad;
  std::vector<std::string> captions;
  for (int64_t i = 0; i < o.n; ++i) captions.push_back(o.prompts[size_t(i) % o.prompts.size()]);
  const auto text = m->G->encode(m->tokenize(captions));
  engine::Generator gen(aurora::Trainer::stream_seed(o.seed, aurora::Trainer::kPurposeSample), 0);
  const Tensor z = randn({o.n, m->generator_config.z_dim}, gen);
  const Tensor images = m->G->synthesize(text, z, o.psi, m->stage,
                                         aurora::Trainer::stream_seed(o.seed, aurora::Trainer::kPurposeTruncation));
  io::write_png(o.out, aurora::display_grid(images, o.nrow));
  std::fprintf(stderr, "aurora sample: %lld images (%lld px, step %lld) -> %s\n", static_cast<long long>(o.n),
               static_cast<long long>(images.size(2)), static_cast<long long>(m->step), o.out.c_str());
}

const RegisterCommand registered(20, [](CLI::App& app) {
  auto o = std::make_shared<SampleOptions>();
  CLI::App* sub = app.add_subcommand("sample", "images of prompts from a checkpoint's G_ema, as a PNG grid");
  sub->add_option("--ckpt", o->ckpt, "checkpoint (.safetensors) written by aurora train")->required();
  sub->add_option("--prompt", o->prompts, "caption (repeatable; used in turn)")->required();
  sub->add_option("--n", o->n, "number of images (default 16)");
  sub->add_option("--psi", o->psi, "truncation psi (1 = none; default 0.7)");
  sub->add_option("--seed", o->seed, "z seed (default 0)");
  sub->add_option("--nrow", o->nrow, "images per grid row (default 8)");
  sub->add_option("--vocab", o->vocab, "CLIP BPE vocabulary (default: the checkpoint's train.vocab)");
  sub->add_option("--out", o->out, "output PNG")->required();
  sub->callback([o] { run_sample(*o); });
});

}  // namespace
}  // namespace engine::cli

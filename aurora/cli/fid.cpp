// fid.cpp: `aurora fid`, the Frechet Inception Distance (aurora/fid.h; docs/evaluation.md).
//
//   aurora fid --real A --real2 B [--n N]     the paper's reference FID (docs/aurora-spec.md
//                                             section 9): two disjoint real sets, n images each;
//                                             with B == A (or no --real2) the even and odd
//                                             images of A
//   aurora fid --ckpt CKPT --real A [--n N] [--captions FILE] [--psi 1] [--seed S]
//                                             a checkpoint's EMA generator (at its stage
//                                             resolution) against the first n real images;
//                                             captions from FILE (one per line, used in turn) or
//                                             else the real images' own captions, in order
// Real statistics are cached under --cache (keyed by dataset spec, resolution, subset, n, resize
// convention and the weights' hash), so the real side is computed once per setting.
// Output: one line "FID <value> ..." on stdout, and with --json the same as a JSON object.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aurora/checkpoint.h"
#include "aurora/cli/commands.h"
#include "aurora/fid.h"
#include "aurora/trainer.h"
#include "autograd/grad_mode.h"
#include "io/dataset.h"
#include "tensor/error.h"

namespace engine::cli {
namespace {

struct FidCliOptions {
  std::string weights;
  std::string real, real2, ckpt, captions, vocab;
  int64_t n = 10000;
  double psi = 1.0;
  uint64_t seed = 0;
  int64_t resolution = 64;
  int64_t batch = 32;
  std::string resize = "pytorch-fid";
  std::string cache = "runs/fid_stats";
  bool json = false;
};

// The default weights path: $AURORA_FID_WEIGHTS, else weights/pt_inception-2015-12-05.safetensors.
std::string default_weights() {
  const char* env = std::getenv("AURORA_FID_WEIGHTS");
  return env && *env ? env : "weights/pt_inception-2015-12-05.safetensors";
}

// Captions for generated image i: --captions FILE (one per non-empty line, used in turn), else the
// caption of real image i (the set the fakes are compared with).
std::vector<std::string> read_captions(const std::string& path) {
  std::ifstream in(path);
  ENGINE_CHECK(in.good(), "fid: cannot read --captions file '{}'", path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(line);
  ENGINE_CHECK(!lines.empty(), "fid: --captions file '{}' has no captions", path);
  return lines;
}

// FID of the checkpoint's G_ema at its stage resolution against the first n images of `real`
// prepared at that resolution. z of image i is row i of the Philox stream of (seed, sample
// purpose), as `aurora sample` draws it, so the result does not depend on --batch.
double generator_fid(const FidCliOptions& o, aurora::FidEvaluator& fid, const io::Dataset& real,
                     int64_t& resolution) {
  auto m = aurora::load_sampler(o.ckpt, o.vocab);
  resolution = m->stage;
  ENGINE_CHECK(size_t(o.n) <= real.size(), "fid: --n {} is more than '{}' holds ({} images)", o.n, o.real,
               real.size());
  const std::vector<std::string> file_captions = o.captions.empty() ? std::vector<std::string>{}
                                                                    : read_captions(o.captions);
  const int64_t z_dim = m->generator_config.z_dim;
  auto sample = [&](int64_t first, int64_t count) {
    autograd::NoGradGuard no_grad;
    std::vector<std::string> captions;
    for (int64_t i = first; i < first + count; ++i)
      captions.push_back(file_captions.empty() ? real.get(size_t(i)).caption
                                               : file_captions[size_t(i) % file_captions.size()]);
    const auto text = m->G->encode(m->tokenize(captions));
    engine::Generator gen(aurora::Trainer::stream_seed(o.seed, aurora::Trainer::kPurposeSample),
                          uint64_t(first * z_dim));
    const Tensor z = randn({count, z_dim}, gen);
    return m->G->synthesize(text, z, o.psi, resolution,
                            aurora::Trainer::stream_seed(o.seed, aurora::Trainer::kPurposeTruncation));
  };
  return fid.fid_of_generator(sample, real, o.real, resolution, o.n);
}

void run_fid(const FidCliOptions& o) {
  ENGINE_CHECK(o.n >= 2, "fid: --n must be >= 2, got {}", o.n);
  ENGINE_CHECK(o.resolution >= 4, "fid: --resolution must be >= 4 (the first stage), got {}", o.resolution);
  ENGINE_CHECK(o.ckpt.empty() || o.real2.empty(), "fid: --real2 is for the reference FID, not with --ckpt");
  ENGINE_CHECK(!o.ckpt.empty() || o.captions.empty(), "fid: --captions is only used with --ckpt");
  aurora::FidOptions fo;
  fo.weights = o.weights;
  fo.resize = aurora::parse_fid_resize(o.resize);
  fo.batch_size = o.batch;
  fo.cache_dir = o.cache;
  aurora::FidEvaluator fid(fo);
  const std::shared_ptr<io::Dataset> a = io::open_dataset(o.real);
  double value = 0;
  std::string what, kind = "reference";
  int64_t resolution = o.resolution;
  if (!o.ckpt.empty()) {
    kind = "generator";
    value = generator_fid(o, fid, *a, resolution);
    what = fmt::format("G_ema of {} vs the first images of {}, psi {}", o.ckpt, o.real, o.psi);
  } else if (o.real2.empty() || o.real2 == o.real) {
    value = fid.reference_fid(*a, o.real, resolution, o.n);
    what = fmt::format("reference, even vs odd images of {}", o.real);
  } else {
    const std::shared_ptr<io::Dataset> b = io::open_dataset(o.real2);
    ENGINE_CHECK(size_t(o.n) <= a->size() && size_t(o.n) <= b->size(),
                 "fid: --n {} is more than the datasets hold ({}: {}, {}: {})", o.n, o.real, a->size(), o.real2,
                 b->size());
    value = fid.reference_fid(*a, o.real, *b, o.real2, resolution, o.n);
    what = fmt::format("reference, {} vs {}", o.real, o.real2);
  }
  if (o.json) {
    nlohmann::json j = {{"fid", value},        {"kind", kind},          {"real", o.real},
                        {"real2", o.real2},    {"ckpt", o.ckpt},        {"n", o.n},
                        {"resolution", resolution}, {"resize", o.resize}, {"weights", fid.weights_hash()}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("FID %.4f (%s; n = %lld per set, resolution %lld, resize %s, weights %s)\n", value, what.c_str(),
                (long long)o.n, (long long)resolution, o.resize.c_str(), fid.weights_hash().c_str());
  }
}

const RegisterCommand registered(60, [](CLI::App& app) {
  auto o = std::make_shared<FidCliOptions>();
  o->weights = default_weights();
  CLI::App* sub =
      app.add_subcommand("fid", "Frechet Inception Distance: reference FID of two real sets, or a checkpoint");
  sub->add_option("--real", o->real, "real images: emoji, folder:PATH, wds:PATTERN, a folder or a .tar")->required();
  sub->add_option("--real2", o->real2, "second real set for the reference FID (default: the odd images of --real)");
  sub->add_option("--ckpt", o->ckpt, "generator checkpoint to evaluate against --real");
  sub->add_option("--captions", o->captions,
                  "captions for the generated images (one per line, used in turn; default: the real images' own)");
  sub->add_option("--psi", o->psi, "truncation psi for --ckpt (1 = none, the FID convention)")->capture_default_str();
  sub->add_option("--seed", o->seed, "z seed for --ckpt")->capture_default_str();
  sub->add_option("--vocab", o->vocab, "CLIP BPE vocabulary for --ckpt (default: the checkpoint's)");
  sub->add_option("--n", o->n, "images per set (FID depends on n: always report it)")->capture_default_str();
  sub->add_option("--resolution", o->resolution,
                  "side the real images are cropped and resized to before Inception (--ckpt: its stage)")
      ->capture_default_str();
  sub->add_option("--weights", o->weights,
                  "FID Inception weights (safetensors; aurora/tools/convert_fid_inception.py makes them; "
                  "default $AURORA_FID_WEIGHTS)")
      ->capture_default_str();
  sub->add_option("--resize", o->resize, "resize to 299: pytorch-fid (F.interpolate) or tf1 (torch-fidelity/NVlabs)")
      ->capture_default_str();
  sub->add_option("--batch", o->batch, "images per Inception forward")->capture_default_str();
  sub->add_option("--cache", o->cache, "folder for cached real statistics ('' disables)")->capture_default_str();
  sub->add_flag("--json", o->json, "print the result as one JSON object");
  sub->callback([o] { run_fid(*o); });
});

}  // namespace
}  // namespace engine::cli

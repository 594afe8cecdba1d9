// fid.cpp: `aurora fid`, the Frechet Inception Distance (aurora/fid.h; docs/evaluation.md).
//
//   aurora fid --real A --real2 B [--n N]     the paper's reference FID (docs/aurora-spec.md
//                                             section 9): two disjoint real sets, n images each;
//                                             with B == A (or no --real2) the even and odd
//                                             images of A
//   aurora fid --ckpt CKPT --real A [--n N] [--captions FILE]
//                                             a generator checkpoint against real images
// Real statistics are cached under --cache (keyed by dataset spec, resolution, subset, n, resize
// convention and the weights' hash), so the real side is computed once per setting.
// Output: one line "FID <value> ..." on stdout, and with --json the same as a JSON object.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "aurora/cli/commands.h"
#include "aurora/fid.h"
#include "io/dataset.h"
#include "tensor/error.h"

namespace engine::cli {
namespace {

struct FidCliOptions {
  std::string weights;
  std::string real, real2, ckpt, captions;
  int64_t n = 10000;
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

void run_fid(const FidCliOptions& o) {
  ENGINE_CHECK(o.n >= 2, "fid: --n must be >= 2, got {}", o.n);
  ENGINE_CHECK(o.resolution >= 8, "fid: --resolution must be >= 8, got {}", o.resolution);
  if (!o.ckpt.empty()) {
    // The generator side needs the trainer's checkpoint loader and sampler (aurora/checkpoint.h,
    // aurora/trainer.h), which this build does not have yet; FidEvaluator::fid_of_generator is the
    // call it will make.
    throw Error(fmt::format(
        "fid: --ckpt is not available yet in this build (it needs the trainer's checkpoint loader); "
        "the reference FID (--real A [--real2 B]) works, and aurora::FidEvaluator::fid_of_generator is ready "
        "for a sampling function (checkpoint '{}')",
        o.ckpt));
  }
  ENGINE_CHECK(o.captions.empty(), "fid: --captions is only used with --ckpt");
  aurora::FidOptions fo;
  fo.weights = o.weights;
  fo.resize = aurora::parse_fid_resize(o.resize);
  fo.batch_size = o.batch;
  fo.cache_dir = o.cache;
  aurora::FidEvaluator fid(fo);
  const std::shared_ptr<io::Dataset> a = io::open_dataset(o.real);
  double value = 0;
  std::string what;
  if (o.real2.empty() || o.real2 == o.real) {
    value = fid.reference_fid(*a, o.real, o.resolution, o.n);
    what = fmt::format("reference, even vs odd images of {}", o.real);
  } else {
    const std::shared_ptr<io::Dataset> b = io::open_dataset(o.real2);
    ENGINE_CHECK(size_t(o.n) <= a->size() && size_t(o.n) <= b->size(),
                 "fid: --n {} is more than the datasets hold ({}: {}, {}: {})", o.n, o.real, a->size(), o.real2,
                 b->size());
    value = fid.reference_fid(*a, o.real, *b, o.real2, o.resolution, o.n);
    what = fmt::format("reference, {} vs {}", o.real, o.real2);
  }
  if (o.json) {
    nlohmann::json j = {{"fid", value},           {"kind", "reference"},  {"real", o.real},
                        {"real2", o.real2},       {"n", o.n},             {"resolution", o.resolution},
                        {"resize", o.resize},     {"weights", fid.weights_hash()}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("FID %.4f (%s; n = %lld per set, resolution %lld, resize %s, weights %s)\n", value, what.c_str(),
                (long long)o.n, (long long)o.resolution, o.resize.c_str(), fid.weights_hash().c_str());
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
  sub->add_option("--captions", o->captions, "captions for the generated images (one per line; with --ckpt)");
  sub->add_option("--n", o->n, "images per set (FID depends on n: always report it)")->capture_default_str();
  sub->add_option("--resolution", o->resolution, "side the real images are cropped and resized to before Inception")
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

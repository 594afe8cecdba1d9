// clip_score.cpp: `aurora clip-score` (docs/eval-data-formats.md section 2: CLIP score, the
// torchmetrics convention; docs/clip.md "CLIP score").
//
//   aurora clip-score --ckpt CKPT --clip CLIP.safetensors --captions FILE [--n N] [--psi P] [--seed S]
//   aurora clip-score --images FOLDER --clip CLIP.safetensors [--vocab PATH]
//
// Generator mode: N images from the checkpoint's EMA generator (G_ema) at the checkpoint's stage,
// image i captioned by line i mod L of FILE (L non-empty lines), z row i of the Philox stream of
// (seed, sample purpose) and the truncation of `aurora sample` (same seed = same images as
// `aurora sample` with those prompts). Folder mode: every image KEY.{png,jpg,jpeg,bmp} of FOLDER
// with its caption KEY.txt, centre-cropped to a square. Either way the score is
// clip_score(vision, images, CLIP text_embeds of the captions) (aurora/clip_loss.h): the mean of
// 100 * cos(image_embeds, text_embeds), floored at 0, printed on stdout as
//   CLIP score: <value>
//   mean of 100 x cosine (not floored at 0): <value>
// The scoring CLIP (--clip) is independent of the model's own text encoder; its tower sizes come
// from the file (heads: --clip-text-heads / --clip-vision-heads, 0 = width / 64 as ViT-L/14).
// Images are scored in chunks of --batch (per-sample values do not depend on the chunking; with
// psi < 1 the caption means of the truncation are drawn per chunk, as `aurora sample` does per call).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "aurora/checkpoint.h"
#include "aurora/cli/commands.h"
#include "aurora/clip_loss.h"
#include "aurora/trainer.h"
#include "autograd/grad_mode.h"
#include "io/clip_tokenizer.h"
#include "io/image.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace engine::cli {
namespace {

struct ClipScoreOptions {
  std::string ckpt, clip, captions, images, vocab;
  int64_t n = 1000, batch = 16;
  double psi = 1.0;
  uint64_t seed = 0;
  int64_t text_heads = 0, vision_heads = 0;
};

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::string read_text(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  ENGINE_CHECK(in.good(), "{}: cannot read {}", what, path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

Tensor tokenize(const io::ClipTokenizer& tok, const std::vector<std::string>& captions) {
  const io::TokenBatch t = tok.tokenize(std::span<const std::string>(captions));
  std::vector<int64_t> ids(t.ids.begin(), t.ids.end());
  return from_vector_i64(ids, {t.rows, t.cols});
}

void run_clip_score(const ClipScoreOptions& o) {
  ENGINE_CHECK(o.ckpt.empty() != o.images.empty(), "give exactly one of --ckpt (generate) and --images (a folder)");
  ENGINE_CHECK(o.batch >= 1, "--batch: expected >= 1, got {}", o.batch);
  std::error_code ec;
  ENGINE_CHECK(std::filesystem::is_regular_file(o.clip, ec),
               "--clip: {} does not exist (a Hugging Face CLIP model.safetensors, e.g. openai/clip-vit-large-patch14)",
               o.clip);
  autograd::NoGradGuard no_grad;
  std::vector<double> per_sample;

  if (!o.ckpt.empty()) {
    ENGINE_CHECK(std::filesystem::is_regular_file(o.ckpt, ec), "--ckpt: {} does not exist", o.ckpt);
    ENGINE_CHECK(!o.captions.empty(), "--captions is required with --ckpt (a text file, one caption per line)");
    ENGINE_CHECK(std::filesystem::is_regular_file(o.captions, ec), "--captions: {} does not exist", o.captions);
    ENGINE_CHECK(o.n >= 1, "--n: expected >= 1, got {}", o.n);
    ENGINE_CHECK(o.psi >= 0, "--psi: expected >= 0, got {}", o.psi);
    std::vector<std::string> lines;
    {
      std::istringstream in(read_text(o.captions, "--captions"));
      for (std::string line; std::getline(in, line);)
        if (!trim(line).empty()) lines.push_back(trim(line));
    }
    ENGINE_CHECK(!lines.empty(), "--captions: {} has no caption (one per line)", o.captions);
    const auto m = aurora::load_sampler(o.ckpt, o.vocab);
    const auto clip = aurora::load_run_clip(o.clip, o.text_heads, o.vision_heads, true);
    engine::Generator gen(aurora::Trainer::stream_seed(o.seed, aurora::Trainer::kPurposeSample), 0);
    const Tensor z = randn({o.n, m->generator_config.z_dim}, gen);
    for (int64_t i0 = 0; i0 < o.n; i0 += o.batch) {
      const int64_t b = std::min(o.batch, o.n - i0);
      std::vector<std::string> caps;
      for (int64_t i = i0; i < i0 + b; ++i) caps.push_back(lines[size_t(i) % lines.size()]);
      const Tensor ids = m->tokenize(caps);
      const Tensor images =
          m->G->synthesize(m->G->encode(ids), narrow(z, 0, i0, b), o.psi, m->stage,
                           aurora::Trainer::stream_seed(o.seed, aurora::Trainer::kPurposeTruncation));
      const aurora::ClipScoreResult r = aurora::clip_score(*clip->vision, images, clip->text->encode(ids).pooled);
      per_sample.insert(per_sample.end(), r.per_sample.begin(), r.per_sample.end());
    }
  } else {
    ENGINE_CHECK(std::filesystem::is_directory(o.images, ec), "--images: {} is not a folder", o.images);
    std::vector<std::filesystem::path> files;
    for (const auto& e : std::filesystem::directory_iterator(o.images, ec)) {
      std::string ext = e.path().extension().string();
      std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
      if (e.is_regular_file() && (ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp"))
        files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    ENGINE_CHECK(!files.empty(), "--images: {} holds no .png/.jpg/.jpeg/.bmp image", o.images);
    const std::string vocab =
        aurora::resolve_vocab_path(o.vocab.empty() ? aurora::TrainConfig{}.vocab : o.vocab);
    const io::ClipTokenizer tok(vocab);
    const auto clip = aurora::load_run_clip(o.clip, o.text_heads, o.vision_heads, true);
    for (const auto& f : files) {
      std::filesystem::path txt = f;
      txt.replace_extension(".txt");
      ENGINE_CHECK(std::filesystem::is_regular_file(txt, ec), "--images: {} has no caption file {}", f.string(),
                   txt.string());
      const std::string caption = trim(read_text(txt.string(), "--images"));
      const Tensor image = unsqueeze(io::to_float(io::center_crop_square(io::read_image(f.string(), 3))), 0);
      const Tensor ids = tokenize(tok, {caption});
      const aurora::ClipScoreResult r = aurora::clip_score(*clip->vision, image, clip->text->encode(ids).pooled);
      per_sample.push_back(r.per_sample.at(0));
    }
  }
  double mean = 0;
  for (double v : per_sample) mean += v;
  mean /= double(per_sample.size());
  std::printf("CLIP score: %.6f\nmean of 100 x cosine (not floored at 0): %.6f\n", std::max(mean, 0.0), mean);
  std::fflush(stdout);
  std::fprintf(stderr, "aurora clip-score: %zu images, %s, CLIP %s\n", per_sample.size(),
               o.ckpt.empty() ? o.images.c_str() : o.ckpt.c_str(), o.clip.c_str());
}

const RegisterCommand registered(40, [](CLI::App& app) {
  auto o = std::make_shared<ClipScoreOptions>();
  CLI::App* sub = app.add_subcommand("clip-score", "CLIP score (100 x cosine, torchmetrics) of G_ema images or a folder");
  sub->add_option("--ckpt", o->ckpt, "checkpoint (.safetensors) written by aurora train: score its G_ema");
  sub->add_option("--images", o->images, "folder of images KEY.png|jpg with captions KEY.txt: score them");
  sub->add_option("--clip", o->clip, "CLIP weights (Hugging Face model.safetensors)")->required();
  sub->add_option("--captions", o->captions, "captions, one per line, used in turn (with --ckpt)");
  sub->add_option("--n", o->n, "number of generated images (default 1000)");
  sub->add_option("--psi", o->psi, "truncation psi (default 1 = none)");
  sub->add_option("--seed", o->seed, "z seed (default 0; the z of aurora sample)");
  sub->add_option("--batch", o->batch, "images per forward pass (default 16)");
  sub->add_option("--vocab", o->vocab, "CLIP BPE vocabulary (default: the checkpoint's train.vocab)");
  sub->add_option("--clip-text-heads", o->text_heads, "attention heads of the text tower (0 = width / 64)");
  sub->add_option("--clip-vision-heads", o->vision_heads, "attention heads of the vision tower (0 = width / 64)");
  sub->callback([o] { run_clip_score(*o); });
});

}  // namespace
}  // namespace engine::cli

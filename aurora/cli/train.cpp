// train.cpp: `aurora train` (DESIGN.md sections 10, 11; docs/training.md).
//
//   aurora train --config configs/tiny16.json [--set key=value ...] --out runs/NAME
//                [--resume] [--data SPEC] [--steps N | --kimg K] [--device cpu|cuda[:N]]
//                [--precision f32|tf32|bf16] [--conv-algorithm im2col|cudnn]
//
// Writes under OUT (rank 0 only; every rank trains):
//   config.json                 the resolved config (train section complete)
//   metrics.jsonl               one record every log_every steps (aurora/run_log.h); the first
//                               record after a sample grid adds "router": that G_ema forward's
//                               max/min fraction of tokens per expert per MoE layer
//   losses.png                  loss curves (io/plot.h), refreshed with the samples
//   samples/reals.png           the fixed captions' real images (reference)
//   samples/step-<N>.png        G_ema grids: fixed z and fixed captions (captions.txt), every
//                               sample_every steps, at step 0 and at the end; latest.png = newest
//   checkpoints/ckpt-<N>.safetensors   every checkpoint_every steps, on SIGINT/SIGTERM and at the
//                               end; the last keep_checkpoints are kept (aurora/checkpoint.h)
// --resume continues from the newest checkpoint under OUT (its config, unless --config is given;
// --set still applies). Without --resume an OUT that already holds checkpoints is an error, so a
// run is never overwritten by accident.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "aurora/checkpoint.h"
#include "aurora/cli/commands.h"
#include "aurora/cli/train_setup.h"
#include "aurora/config.h"
#include "aurora/fid.h"
#include "aurora/router_stats.h"
#include "aurora/run_log.h"
#include "aurora/trainer.h"
#include "io/atomic_file.h"
#include "io/dataset.h"
#include "io/image.h"
#include "io/plot.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace engine::cli {
namespace {

struct TrainOptions {
  std::string config, out, data, device, precision, conv_algorithm;
  std::vector<std::string> overrides;
  bool resume = false;
  int64_t steps = -1;
  double kimg = -1;
};

constexpr int64_t kNumSamples = 16;

void write_loss_plot(const std::string& out) {
  const std::vector<nlohmann::json> records = aurora::read_metrics(out + "/metrics.jsonl");
  std::vector<io::PlotSeries> series;
  for (const char* key : {"G", "D", "G_match", "D_match", "R1", "CLIP"}) {
    io::PlotSeries s;
    s.name = key;
    for (const auto& r : records)
      if (r.contains(key) && r[key].is_number() && r.contains("step")) {
        s.x.push_back(r["step"].get<double>());
        s.y.push_back(r[key].get<double>());
      }
    if (!s.x.empty()) series.push_back(std::move(s));
  }
  if (series.empty()) return;
  io::PlotOptions o;
  o.title = "losses (" + out + ")";
  o.smooth = 5;
  io::write_line_plot(out + "/losses.png", series, o);
}

void run_train(const TrainOptions& opt) {
  dist::Comm& comm = world();
  const bool root = comm.is_root();
  const std::string ckpt_dir = opt.out + "/checkpoints", sample_dir = opt.out + "/samples";
  const std::vector<std::string> existing = aurora::list_checkpoints(ckpt_dir);
  ENGINE_CHECK(opt.resume || existing.empty(),
               "--out {}: already holds checkpoints (e.g. {}); pass --resume to continue, or choose another --out",
               opt.out, existing.empty() ? std::string() : existing.back());
  ENGINE_CHECK(!opt.config.empty() || (opt.resume && !existing.empty()),
               "--config is required (only --resume from an existing checkpoint can take the config from it)");

  TrainConfigSource src;
  src.config = opt.config;
  src.checkpoint = existing.empty() ? std::string() : existing.back();
  src.overrides = opt.overrides;
  src.data = opt.data;
  src.device = opt.device;
  src.precision = opt.precision;
  src.conv_algorithm = opt.conv_algorithm;
  src.steps = opt.steps;
  src.kimg = opt.kimg;
  const ResolvedTrainConfig resolved = resolve_train_config(src);
  const nlohmann::json& doc = resolved.doc;
  const aurora::TrainConfig& train = resolved.train;
  const std::string& source = resolved.source;
  BuiltTrainer built = build_trainer(resolved, opt.out, comm);
  const std::shared_ptr<io::Dataset>& dataset = built.dataset;
  const std::shared_ptr<aurora::StageFid>& stage_fid = built.stage_fid;
  aurora::Trainer& trainer = *built.trainer;
  if (opt.resume && !existing.empty()) {
    aurora::load_checkpoint(trainer, existing.back());
    if (root) std::fprintf(stderr, "aurora train: resumed from %s (step %lld)\n", existing.back().c_str(),
                           static_cast<long long>(trainer.state().step));
  }
  const int64_t start_step = trainer.state().step;

  if (root) {
    io::make_directories(ckpt_dir);
    io::make_directories(sample_dir);
    io::write_file_atomically(opt.out + "/config.json", doc.dump(2) + "\n");
    if (start_step == 0) std::filesystem::remove(opt.out + "/metrics.jsonl");
    std::fprintf(stderr, "aurora train: %s, %s, G %.2f M + D %.2f M parameters, batch %lld on %d rank(s), %lld steps\n",
                 source.c_str(), dataset->describe().c_str(), trainer.g_store().numel() / 1e6,
                 trainer.d_store().numel() / 1e6, static_cast<long long>(train.batch_size), comm.size(),
                 static_cast<long long>(train.steps));
  }

  // Fixed captions (spread over the dataset) and z for the sample grids.
  std::vector<std::string> captions;
  Tensor reals;
  {
    const int64_t n = std::min<int64_t>(kNumSamples, int64_t(dataset->size()));
    TensorList imgs;
    for (int64_t i = 0; i < n; ++i) {
      const io::RawSample s = dataset->get(size_t(i * int64_t(dataset->size()) / n));
      captions.push_back(s.caption);
      if (root && start_step == 0) {
        const int64_t R = trainer.state().image_size;
        Tensor im = io::center_crop_square(s.image);
        imgs.push_back(io::to_float(io::resize_image(im, R, R)));
      }
    }
    if (root && !imgs.empty()) {
      io::write_png(sample_dir + "/reals.png", aurora::display_grid(stack(imgs, 0), 8));
      std::string text;
      for (size_t i = 0; i < captions.size(); ++i) text += fmt::format("{:2d} {}\n", i, captions[i]);
      io::write_file_atomically(sample_dir + "/captions.txt", text);
    }
  }
  const Tensor sample_z = trainer.make_z(int64_t(captions.size()), train.seed, aurora::Trainer::kPurposeSample, 0);
  nlohmann::json router_record;  // aurora/router_stats.h; logged with the next metrics record
  auto write_samples = [&](int64_t step) {
    trainer.gather_experts();  // every rank (collective; a no-op without expert parallelism)
    if (!root) return;
    std::vector<aurora::RouterLayer> routing;
    Tensor imgs = trainer.sample(captions, sample_z, train.sample_psi, &routing);
    router_record = {{"step", step}, {"layers", nlohmann::json::object()}};
    for (const auto& s : aurora::router_stats(routing, trainer.G_ema().generator.config))
      router_record["layers"][s.name] = {{"max_fraction", s.max_fraction}, {"min_fraction", s.min_fraction}};
    const Tensor grid = aurora::display_grid(imgs, 8);  // every stage shown at 64 px per cell
    io::write_png(fmt::format("{}/step-{:08d}.png", sample_dir, step), grid);
    io::write_png(sample_dir + "/latest.png", grid);
    write_loss_plot(opt.out);
  };
  auto write_checkpoint = [&] {
    // Every rank: save_checkpoint checks that the ranks agree (collective); rank 0 writes.
    aurora::save_checkpoint(trainer, ckpt_dir + "/" + aurora::checkpoint_file_name(trainer.state().step));
    if (root) aurora::prune_checkpoints(ckpt_dir, train.keep_checkpoints);
  };

  io::DataLoader loader(dataset, loader_options(trainer, comm, start_step));

  std::unique_ptr<aurora::MetricsLog> metrics;
  if (root) metrics = std::make_unique<aurora::MetricsLog>(opt.out + "/metrics.jsonl", start_step);
  aurora::StopSignal::install();
  aurora::ProgressBar bar(train.steps, train.batch_size);
  if (start_step == 0) write_samples(0);

  auto last = std::chrono::steady_clock::now();
  int64_t steps_since_log = 0;
  bool stopped = false;
  // R1 runs every r1_interval steps, which rarely coincide with log steps: log the latest value.
  double last_r1 = std::nan("");
  size_t fid_records_logged = 0;
  while (trainer.state().step < train.steps) {
    // Every rank must stop at the same step, or the others would wait in a collective: the flag
    // is max-reduced (a signal may reach the ranks of an mpirun job at different moments).
    bool stop = aurora::StopSignal::requested();
    if (comm.size() > 1) {
      Tensor flag = scalar_tensor(stop ? 1.0 : 0.0);
      comm.allreduce(flag, dist::ReduceOp::max);
      stop = flag.item() > 0;
    }
    if (stop) {
      stopped = true;
      break;
    }
    const io::Batch batch = loader.next();
    const int64_t stage_before = trainer.state().stage;
    const aurora::StepResult r = trainer.step(batch);
    ++steps_since_log;
    if (r.r1_applied) last_r1 = r.r1;
    const int64_t step = trainer.state().step;
    if (root && r.grew)
      bar.message(fmt::format("step {}: growing {} -> {} px ({})", step, stage_before, trainer.state().stage,
                              trainer.stage_rule().describe()));
    std::vector<std::pair<std::string, double>> shown = {{"G", r.g_loss}, {"D", r.d_loss}, {"res", double(r.stage)}};
    if (root) bar.update(step, shown);
    if (root && (step % train.log_every == 0 || step == train.steps)) {
      const auto now = std::chrono::steady_clock::now();
      const double sec = std::chrono::duration<double>(now - last).count();
      last = now;
      nlohmann::json rec = {{"step", step},         {"kimg", trainer.state().kimg()}, {"stage", r.stage},
                            {"G", r.g_loss},        {"G_adv", r.g_adv},               {"G_match", r.g_match},
                            {"moe", r.moe},         {"D", r.d_loss},                  {"D_real", r.d_real},
                            {"D_fake", r.d_fake},   {"D_match", r.d_match},
                            {"sec_per_step", sec / double(std::max<int64_t>(steps_since_log, 1))}};
      if (std::isfinite(last_r1)) rec["R1"] = last_r1;  // the latest R1 penalty (gamma/2 mean |grad|^2)
      if (r.clip_applied) {  // multi-level CLIP loss: weighted total (in G) and each level's term
        rec["CLIP"] = r.clip;
        for (const auto& [res, v] : r.clip_levels) rec[fmt::format("CLIP_{}", res)] = v;
      }
      if (!router_record.is_null()) rec["router"] = std::exchange(router_record, nullptr);
      if (stage_fid) {  // the FIDs computed by the stage rule since the last record
        nlohmann::json fids = nlohmann::json::array();
        for (; fid_records_logged < stage_fid->history().size(); ++fid_records_logged)
          fids.push_back(nlohmann::json::parse(stage_fid->history()[fid_records_logged].to_json()));
        if (!fids.empty()) rec["fid"] = fids;
      }
      metrics->write(rec);
      steps_since_log = 0;
    }
    if (train.sample_every > 0 && step % train.sample_every == 0 && step < train.steps) write_samples(step);
    if (train.checkpoint_every > 0 && step % train.checkpoint_every == 0 && step < train.steps) write_checkpoint();
  }
  write_checkpoint();
  if (trainer.state().step > start_step) write_samples(trainer.state().step);
  if (root) {
    bar.finish();
    std::fprintf(stderr, "aurora train: %s at step %lld; checkpoint %s/%s, samples %s/latest.png\n",
                 stopped ? "stopped by signal" : "done", static_cast<long long>(trainer.state().step), ckpt_dir.c_str(),
                 aurora::checkpoint_file_name(trainer.state().step).c_str(), sample_dir.c_str());
  }
}

const RegisterCommand registered(10, [](CLI::App& app) {
  auto opts = std::make_shared<TrainOptions>();
  CLI::App* sub = app.add_subcommand("train", "train a preset (progress, metrics, samples, loss plot, checkpoints)");
  sub->add_option("--config", opts->config, "JSON preset, e.g. configs/tiny16.json");
  sub->add_option("--set", opts->overrides, "override a key: --set train.batch_size=8");
  sub->add_option("--out", opts->out, "run folder, e.g. runs/demo")->required();
  sub->add_flag("--resume", opts->resume, "continue from the newest checkpoint in --out");
  sub->add_option("--data", opts->data, "dataset: emoji, emoji:ROOT, folder:PATH, wds:PATTERN (train.data)");
  sub->add_option("--steps", opts->steps, "total steps (train.steps)");
  sub->add_option("--device", opts->device, "cpu, cuda or cuda:N (train.device); a checkpoint resumes on any device");
  sub->add_option("--precision", opts->precision, "f32, tf32 (CUDA) or bf16 GEMMs (train.precision)");
  sub->add_option("--conv-algorithm", opts->conv_algorithm,
                  "im2col or cudnn (CUDA, a cuDNN build) convolutions (train.conv_algorithm)");
  sub->add_option("--kimg", opts->kimg, "total thousands of images (sets train.steps)");
  sub->callback([opts] { run_train(*opts); });
});

}  // namespace
}  // namespace engine::cli

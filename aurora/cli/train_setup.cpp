// train_setup.cpp: config resolution and trainer construction shared by `aurora train` and
// `aurora profile` (train_setup.h).
#include "aurora/cli/train_setup.h"

#include <cmath>
#include <utility>

#include <fmt/format.h>

#include "aurora/checkpoint.h"
#include "io/atomic_file.h"
#include "tensor/error.h"

namespace engine::cli {

ResolvedTrainConfig resolve_train_config(const TrainConfigSource& src) {
  ENGINE_CHECK(src.steps < 0 || src.kimg < 0, "--steps and --kimg are exclusive: give one");
  ResolvedTrainConfig out;
  // Config document: file (or checkpoint), train defaults filled in, --set, CLI shortcuts.
  out.doc = src.config.empty() ? aurora::checkpoint_config(src.checkpoint) : aurora::read_config_json(src.config);
  ENGINE_CHECK(out.doc.is_object(), "config: expected a JSON object");
  out.doc["train"] =
      aurora::parse_train_config(out.doc.contains("train") ? out.doc["train"] : nlohmann::json()).to_json();
  for (const std::string& o : src.overrides) aurora::apply_override(out.doc, o);
  if (!src.data.empty()) out.doc["train"]["data"] = src.data;
  if (!src.device.empty()) out.doc["train"]["device"] = src.device;
  if (!src.precision.empty()) out.doc["train"]["precision"] = src.precision;
  if (!src.conv_algorithm.empty()) out.doc["train"]["conv_algorithm"] = src.conv_algorithm;
  if (src.steps >= 0) out.doc["train"]["steps"] = src.steps;
  out.source = src.config.empty() ? src.checkpoint : src.config;
  try {
    out.model = aurora::parse_config(out.doc, out.source);
    out.train = aurora::parse_train_config(out.model.train);
  } catch (const Error& e) {
    throw Error(fmt::format("{} (in {})", e.what(), out.source));
  }
  if (src.kimg >= 0) {
    out.train.steps = int64_t(std::ceil(src.kimg * 1000.0 / double(out.train.batch_size)));
    out.doc["train"]["steps"] = out.train.steps;
  }
  return out;
}

BuiltTrainer build_trainer(const ResolvedTrainConfig& resolved, const std::string& out, dist::Comm& comm) {
  const aurora::TrainConfig& train = resolved.train;
  BuiltTrainer b;
  (void)aurora::resolve_train_device(train, comm.size());  // device errors before any data is read
  b.dataset = io::open_dataset(train.data);
  // The paper's stage switch (spec 9): FIDs from the FID Inception-v3 (aurora/fid.h). The rule's
  // callbacks run inside Trainer::step, on every rank (each computes the same FID from the same
  // replicated G_ema, so all ranks grow at the same step).
  b.trainer_ref = std::make_shared<aurora::Trainer*>(nullptr);
  std::unique_ptr<aurora::StageRule> rule;
  if (train.growing.rule == "fid") {
    ENGINE_CHECK(!train.growing.fid_weights.empty(),
                 "config.train.growing.fid_weights: the \"fid\" growing rule needs the FID Inception weights "
                 "(a safetensors file made by aurora/tools/convert_fid_inception.py; docs/evaluation.md)");
    aurora::FidOptions fo;
    fo.weights = train.growing.fid_weights;
    fo.cache_dir = out + "/fid_cache";
    fo.verbose = comm.is_root();
    if (comm.is_root()) io::make_directories(fo.cache_dir);
    comm.barrier();
    b.fid_evaluator = std::make_unique<aurora::FidEvaluator>(fo);
    b.stage_fid = std::make_shared<aurora::StageFid>(*b.fid_evaluator, b.dataset, train.data, train.growing.fid_n);
    const uint64_t seed = train.seed;
    std::shared_ptr<aurora::StageFid> stage_fid = b.stage_fid;
    std::shared_ptr<aurora::Trainer*> trainer_ref = b.trainer_ref;
    rule = std::make_unique<aurora::ReferenceFidRule>(
        [stage_fid](int64_t r) { return stage_fid->reference(r); },
        [stage_fid, trainer_ref, seed](int64_t r) {
          aurora::Trainer& t = **trainer_ref;
          return stage_fid->generator(
              [&](int64_t first, int64_t count) {
                // G_ema at resolution r on the even half's captions; z from the sample stream at
                // row `first` (rank-independent).
                const Tensor z = t.make_z(count, seed, aurora::Trainer::kPurposeSample, first);
                return t.G_ema().synthesize(t.G_ema().encode(t.tokenize(stage_fid->captions(first, count))), z, 1.0,
                                            r);
              },
              r);
        },
        train.growing.fid_check_kimg, train.growing.fid_tolerance);
  }
  b.trainer = std::make_unique<aurora::Trainer>(resolved.model, train, comm, std::move(rule));
  *b.trainer_ref = b.trainer.get();
  b.trainer->set_model_json(resolved.doc);
  return b;
}

io::LoaderOptions loader_options(const aurora::Trainer& trainer, const dist::Comm& comm, int64_t start_step) {
  io::LoaderOptions lo;
  lo.batch_size = trainer.local_batch();
  lo.resolution = trainer.state().image_size;
  lo.flip = trainer.train_config().flip;
  lo.seed = trainer.train_config().seed;
  lo.rank = comm.rank();
  lo.world_size = comm.size();
  lo.start_step = uint64_t(start_step);
  return lo;
}

}  // namespace engine::cli

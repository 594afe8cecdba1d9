// train_setup.h: the config resolution and trainer construction shared by `aurora train` and
// `aurora profile` (DESIGN.md sections 6, 10 and 13; docs/training.md, docs/memory.md).
//
// Why shared: a profile is only meaningful if it measures the trainer that `aurora train` would
// run: the same config document (file or checkpoint, train defaults, --set overrides, --data,
// --steps / --kimg), the same dataset and the same stage rule (including the FID growing rule).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aurora/config.h"
#include "aurora/fid.h"
#include "aurora/train_config.h"
#include "aurora/trainer.h"
#include "dist/comm.h"
#include "io/dataset.h"

namespace engine::cli {

// What the command line says about the config.
struct TrainConfigSource {
  std::string config;      // JSON preset; empty: take the config from `checkpoint`
  std::string checkpoint;  // used only when `config` is empty
  std::vector<std::string> overrides;  // --set key=value, applied in order
  std::string data;        // --data (train.data) or empty
  std::string device;      // --device (train.device) or empty
  std::string precision;   // --precision (train.precision) or empty
  std::string conv_algorithm;  // --conv-algorithm (train.conv_algorithm) or empty
  int64_t steps = -1;      // --steps (train.steps) or -1
  double kimg = -1;        // --kimg (sets train.steps) or -1
};

// The resolved config: the whole document (train section complete), where it came from, and
// both parsed forms. Errors are engine::Error naming the file.
struct ResolvedTrainConfig {
  nlohmann::json doc;
  std::string source;
  aurora::AuroraConfig model;
  aurora::TrainConfig train;
};
ResolvedTrainConfig resolve_train_config(const TrainConfigSource& source);

// A trainer as `aurora train` builds it, with what must outlive it (dataset, FID evaluator).
struct BuiltTrainer {
  std::shared_ptr<io::Dataset> dataset;
  std::unique_ptr<aurora::FidEvaluator> fid_evaluator;
  std::shared_ptr<aurora::StageFid> stage_fid;  // null unless train.growing.rule == "fid"
  std::shared_ptr<aurora::Trainer*> trainer_ref;  // read by the FID rule's callbacks
  std::unique_ptr<aurora::Trainer> trainer;
};
// `out`: the run folder (the FID rule keeps its cache under out/fid_cache). Collective under MPI.
BuiltTrainer build_trainer(const ResolvedTrainConfig& resolved, const std::string& out, dist::Comm& comm);

// The data loader of `trainer` as `aurora train` sets it up: the trainer's local batch and
// current stage, train.flip / seed, this rank's share, continuing at `start_step`.
io::LoaderOptions loader_options(const aurora::Trainer& trainer, const dist::Comm& comm, int64_t start_step);

}  // namespace engine::cli

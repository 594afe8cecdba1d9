// profile.cpp: `aurora profile`, where the memory and the time of a training step go
// (DESIGN.md section 6; docs/memory.md "aurora profile").
//
//   aurora profile --config CONFIG [--set key=value ...] [--data SPEC] [--steps N] [--warmup W]
//                  [--out DIR] [--device cpu|cuda|cuda:N] [--conv-algorithm im2col|cudnn]
//
// Builds the trainer exactly as `aurora train` does (train_setup.h: same config resolution,
// dataset, stage rule and data loader), runs W unprofiled warm-up steps (first-touch allocations:
// optimizer moments, arena chunks, lazily created library state), then N profiled full steps
// (G_main, D_main, D_r1), and writes into DIR:
//   table.md, table.csv    ops by (op, module, pass, phase), sorted by bytes alive at the peak
//   calls.csv              one row per op call
//   live_set.md            every block alive at the peak
//   trace.json             Chrome / Perfetto trace (op slices, GPU slices, memory counters)
//   per_module.md/.csv     aggregated by module path
//   summary.txt            one line per step (peak split by pass, reserved, top op, time per
//                          phase), the session's peak and, on a GPU, the reconciliation with
//                          cudaMemGetInfo (bytes used outside the arena)
//   config.json            the resolved config that was profiled
// R1 is lazy (every train.r1_interval steps); so that every profiled step has its D_r1 phase
// (the double backward, pass bwd2), the profile sets train.r1_interval = 1. That changes only the
// penalty's scale and D's lr / beta adjustment, not the ops or their memory. A config with R1 off
// (r1_interval 0 or r1_gamma 0) is profiled as it is, without D_r1.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "aurora/cli/commands.h"
#include "aurora/cli/train_setup.h"
#include "io/atomic_file.h"
#include "io/dataset.h"
#include "tensor/error.h"
#include "tensor/memory/profiler.h"

namespace engine::cli {
namespace {

struct ProfileOptions {
  std::string config, data, out = "runs/profile", device;  // device "": the config's train.device
  std::string conv_algorithm;                               // "": the config's train.conv_algorithm
  std::vector<std::string> overrides;
  int64_t steps = 3, warmup = 1;
};

// "cpu", "cuda", "cuda:N" (the values of train.device); anything else is an error naming it.
Device check_device_name(const std::string& device) {
  bool ok = device == "cpu" || device == "cuda";
  if (!ok && device.rfind("cuda:", 0) == 0 && device.size() > 5 && device.size() <= 9) {
    ok = true;
    for (size_t i = 5; i < device.size(); ++i) ok = ok && device[i] >= '0' && device[i] <= '9';
  }
  ENGINE_CHECK(ok, "--device: unknown device \"{}\" (expected cpu, cuda or cuda:N)", device);
  if (device == "cpu") return Device::cpu();
  return Device::cuda(device == "cuda" ? 0 : std::stoi(device.substr(5)));
}

// Time of each phase of one step, from its op calls: the wall-clock span from the phase's first
// call to its last, and, for calls timed with CUDA events, the GPU time of its outermost calls.
std::string phase_times(const std::vector<memory::OpRecord>& records, uint64_t first_id) {
  struct Span {
    double begin = std::numeric_limits<double>::infinity(), end = 0, gpu = 0;
    bool gpu_timed = false;
  };
  std::map<std::string, Span> spans;
  std::vector<std::string> order;
  for (const memory::OpRecord& r : records) {
    if (r.id < first_id || r.phase.empty()) continue;
    if (!spans.count(r.phase)) order.push_back(r.phase);
    Span& s = spans[r.phase];
    s.begin = std::min(s.begin, r.start_us);
    s.end = std::max(s.end, r.end_us);
    if (r.parent == 0 && r.gpu_timed()) {
      s.gpu += r.time_us();
      s.gpu_timed = true;
    }
  }
  std::string out;
  for (const std::string& phase : order) {
    const Span& s = spans[phase];
    out += fmt::format("{}{} {:.1f} ms", out.empty() ? "" : ", ", phase, (s.end - s.begin) / 1000.0);
    if (s.gpu_timed) out += fmt::format(" (GPU {:.1f} ms)", s.gpu / 1000.0);
  }
  return out.empty() ? "-" : out;
}

void run_profile(const ProfileOptions& opt) {
  dist::Comm& comm = world();
  const bool root = comm.is_root();
  ENGINE_CHECK(!opt.config.empty(), "--config is required");
  ENGINE_CHECK(opt.steps >= 1, "--steps: expected an integer >= 1, got {}", opt.steps);
  ENGINE_CHECK(opt.warmup >= 0, "--warmup: expected an integer >= 0, got {}", opt.warmup);
  if (!opt.device.empty()) check_device_name(opt.device);

  TrainConfigSource src;
  src.config = opt.config;
  src.overrides = opt.overrides;
  src.data = opt.data;
  src.device = opt.device;  // empty: the config's train.device
  src.conv_algorithm = opt.conv_algorithm;
  ResolvedTrainConfig resolved = resolve_train_config(src);
  const bool r1_on = resolved.train.r1_interval > 0 && resolved.train.r1_gamma > 0;
  if (r1_on && resolved.train.r1_interval != 1) {
    // Every profiled step runs D_r1 (see the file comment).
    src.overrides.push_back("train.r1_interval=1");
    resolved = resolve_train_config(src);
  }
  const std::string device_name =
      resolved.doc["train"].contains("device") ? resolved.doc["train"]["device"].get<std::string>() : "cpu";
  const Device run_device = check_device_name(device_name);
  // The devices whose peaks are reported (the CPU holds the batches even on a GPU run).
  std::vector<Device> devices = {Device::cpu()};
  if (run_device.is_cuda()) devices.push_back(run_device);
  resolved.train.steps = opt.warmup + opt.steps;
  resolved.doc["train"]["steps"] = resolved.train.steps;

  BuiltTrainer built = build_trainer(resolved, opt.out, comm);
  aurora::Trainer& trainer = *built.trainer;
  io::DataLoader loader(built.dataset, loader_options(trainer, comm, trainer.state().step));
  if (root) {
    io::make_directories(opt.out);
    io::write_file_atomically(opt.out + "/config.json", resolved.doc.dump(2) + "\n");
    std::fprintf(stderr,
                 "aurora profile: %s on %s, G %.2f M + D %.2f M parameters, batch %lld, %lld warm-up + %lld "
                 "profiled step(s)%s\n",
                 resolved.source.c_str(), device_name.c_str(), trainer.g_store().numel() / 1e6,
                 trainer.d_store().numel() / 1e6, static_cast<long long>(resolved.train.batch_size),
                 static_cast<long long>(opt.warmup), static_cast<long long>(opt.steps),
                 r1_on ? ", R1 every step (train.r1_interval = 1)" : ", R1 off in this config");
  }
  using Clock = std::chrono::steady_clock;
  auto seconds_since = [](Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };

  for (int64_t i = 0; i < opt.warmup; ++i) {
    const io::Batch batch = loader.next();
    const auto t0 = Clock::now();
    trainer.step(batch);
    if (root)
      std::fprintf(stderr, "aurora profile: warm-up step %lld/%lld: %.2f s\n", static_cast<long long>(i + 1),
                   static_cast<long long>(opt.warmup), seconds_since(t0));
  }

  memory::Profiler::reset();
  memory::Profiler::enable(true);
  std::vector<std::string> lines;
  int64_t main_peak = -1;
  Device main_device = Device::cpu();
  try {
    uint64_t first_id = 1;  // ids of this step's op calls are >= first_id
    for (int64_t i = 0; i < opt.steps; ++i) {
      const io::Batch batch = loader.next();
      {
        const std::vector<memory::OpRecord> before = memory::Profiler::records();
        first_id = before.empty() ? 1 : before.back().id + 1;
      }
      memory::Profiler::begin_step();
      const auto t0 = Clock::now();
      const aurora::StepResult r = trainer.step(batch);
      const double sec = seconds_since(t0);
      // records() resolves the step's CUDA events (one synchronisation).
      const std::vector<memory::OpRecord> records = memory::Profiler::records();
      int64_t step_peak = 0;
      for (Device d : devices) step_peak = std::max(step_peak, memory::Profiler::step_peak_bytes(d));
      const std::string line =
          fmt::format("{} | peak_bytes {} | time {} | step {:.3f} s{}", memory::Profiler::step_summary(trainer.state().step),
                      step_peak, phase_times(records, first_id), sec, r.r1_applied ? "" : " | no D_r1");
      lines.push_back(line);
      if (root)
        std::fprintf(stderr, "aurora profile: step %lld/%lld: %s\n", static_cast<long long>(i + 1),
                     static_cast<long long>(opt.steps), line.c_str());
    }
  } catch (...) {
    memory::Profiler::enable(false);
    throw;
  }
  memory::Profiler::enable(false);
  if (!root) return;

  memory::Profiler::write_all(opt.out);
  // The session: every device's peak over the profiled steps, split into what op calls of the
  // session allocated (the at_peak column of table.csv) and what was alive before (state).
  std::string text;
  for (const std::string& line : lines) text += line + "\n";
  for (Device d : devices) {
    const int64_t peak = memory::Profiler::peak_bytes(d);
    if (peak <= 0) continue;
    const int64_t outside = memory::Profiler::outside_ops_at_peak(d);
    text += fmt::format(
        "session {} | peak_bytes {} ({}) over {} step(s) | at_peak_bytes {} (op calls; table.csv) | "
        "outside_ops_bytes {} (parameters, optimizer state, setup)\n",
        d.str(), peak, memory::format_bytes(peak), opt.steps, peak - outside, outside);
    if (peak > main_peak) {
      main_peak = peak;
      main_device = d;
    }
  }
  for (const memory::Reconciliation& rc : memory::Profiler::reconciliation())
    text += fmt::format(
        "reconcile {} | unattributed_bytes {} ({}) | cudaMemGetInfo used {} -> {} | arena reserved {} -> {}\n",
        rc.device.str(), rc.unattributed, memory::format_bytes(rc.unattributed), rc.baseline_used, rc.used,
        rc.baseline_reserved, rc.reserved);
  io::write_file_atomically(opt.out + "/summary.txt", text);
  std::fprintf(stderr,
               "aurora profile: peak %s on %s; wrote %s/{summary.txt, table.md, table.csv, calls.csv, live_set.md, "
               "per_module.md, per_module.csv, trace.json (chrome://tracing or ui.perfetto.dev), config.json}\n",
               memory::format_bytes(main_peak).c_str(), main_device.str().c_str(), opt.out.c_str());
}

const RegisterCommand registered(80, [](CLI::App& app) {
  auto opts = std::make_shared<ProfileOptions>();
  CLI::App* sub = app.add_subcommand(
      "profile", "profile memory and time of full training steps (per op, module, pass, phase; Chrome trace)");
  sub->add_option("--config", opts->config, "JSON preset, e.g. configs/tiny16.json")->required();
  sub->add_option("--set", opts->overrides, "override a key: --set train.batch_size=8");
  sub->add_option("--data", opts->data, "dataset: emoji, emoji:ROOT, folder:PATH, wds:PATTERN (train.data)");
  sub->add_option("--steps", opts->steps, "profiled steps (default 3)");
  sub->add_option("--warmup", opts->warmup, "unprofiled steps first (default 1)");
  sub->add_option("--out", opts->out, "output folder (default runs/profile)");
  sub->add_option("--device", opts->device, "cpu, cuda or cuda:N (sets train.device; default: the config's)");
  sub->add_option("--conv-algorithm", opts->conv_algorithm,
                  "im2col or cudnn (sets train.conv_algorithm; default: the config's)");
  sub->callback([opts] { run_profile(*opts); });
});

}  // namespace
}  // namespace engine::cli

// mpi_trainer.cpp: the trainer under data parallelism (issue 6's trainer-level tests;
// docs/distributed.md, "Rank-count invariance"). Run by ctest through mpirun at np = 1, 2, 4.
//
//   invariance   one training step (G_main, D_main and D_r1: step 0 is an R1 step) of a micro
//                config (G 8 px with an MoE stage, D 8 px) at a global batch of 4 split over the
//                ranks, data keyed by the global sample index: every parameter and buffer of G,
//                G_ema and D equals a one-process run over the whole batch computed here with
//                LocalComm: within 1e-5 (relative; see the comment at the check for the two
//                absolute terms) with MPI_Allreduce and the whole local batch in one pass;
//                bit for bit in deterministic mode with micro-batches of 1 (the same micro-batch
//                size at every rank count). The logged losses are the global means: every rank
//                reports the one-process values (not its own rows' losses).
//   checkpoint   (np >= 2) ranks {0, 1} train 2 steps as a 2-rank job and write a checkpoint;
//                every rank then loads it into a trainer on the whole world (np = 2 or 4) and
//                into a one-process trainer (np = 1): the loaded state equals an uninterrupted
//                one-process run after 2 steps, and one more step equals it after 3 steps, bit
//                for bit (deterministic mode, micro-batches of 1).
//   expert_parallel  (np >= 2) two steps with train.expert_parallel = 2 (G's 2 experts sharded over
//                EP groups of 2 ranks) equal two steps with expert_parallel = 1, within the
//                rounding tolerances of the invariance test, after gather_experts().
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <unistd.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "aurora/checkpoint.h"
#include "aurora/config.h"
#include "aurora/train_config.h"
#include "aurora/trainer.h"
#include "mpi_test.h"
#include "nn/state_dict.h"
#include "tensor/error.h"
#include "tensor/ops.h"
#include "tests/train_fixtures.h"

using namespace engine;
using namespace engine::aurora;
using mpi_test::Context;
using nlohmann::json;

namespace {

using test::kVocab;
constexpr int64_t kGlobalBatch = 4, kImage = 8;

// A micro model (tests/test_trainer.cpp's): G 8 px whose 8 px stage has 2 experts, D 8 px. No
// growing, so the MoE stage takes part from step 0.
json micro_config(int64_t micro_batch) {
  json g = test::micro_generator_config();
  json d = test::micro_discriminator_config();
  json t = {{"batch_size", kGlobalBatch},
            {"micro_batch", micro_batch},
            {"seed", 7},
            {"r1_interval", 2},
            {"r1_gamma", 1.0},
            {"ema_kimg", 0.01},
            {"growing", {{"rule", "none"}}},
            {"small_text_encoder", {{"vocab_size", 512}, {"layers", 1}, {"heads", 2}}},
            {"vocab", kVocab}};
  return {{"generator", g}, {"discriminator", d}, {"train", t}};
}

std::unique_ptr<Trainer> make_trainer(dist::Comm& comm, int64_t micro_batch, bool deterministic) {
  const AuroraConfig cfg = parse_config(micro_config(micro_batch));
  auto t = std::make_unique<Trainer>(cfg, parse_train_config(cfg.train), comm);
  t->set_deterministic_reduce(deterministic);
  return t;
}

// Rows [first, first + count) of the global batch of `step`: a coloured square per caption,
// chosen by the global sample index, so a sample is the same on any rank count.
io::Batch make_batch(int64_t step, int64_t first, int64_t count) {
  static const char* names[] = {"red square", "green square", "blue square", "yellow square", "black square"};
  static const double colors[][3] = {{1, -1, -1}, {-1, 1, -1}, {-1, -1, 1}, {1, 1, -1}, {-1, -1, -1}};
  const int64_t H = kImage;
  io::Batch b;
  b.step = uint64_t(step);
  std::vector<double> px(size_t(count * 3 * H * H), 1.0);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t k = (step * kGlobalBatch + first + i) % 5;
    b.captions.push_back(names[k]);
    b.indices.push_back(uint64_t(k));
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t y = H / 4; y < 3 * H / 4; ++y)
        for (int64_t x = H / 4 - (k % 2); x < 3 * H / 4; ++x) px[size_t(((i * 3 + c) * H + y) * H + x)] = colors[k][c];
  }
  b.images = from_vector(px, {count, 3, H, H});
  return b;
}

// This rank's rows of step `step`.
StepResult train_step(Trainer& t, int64_t step) {
  const int64_t local = t.local_batch();
  return t.step(make_batch(step, int64_t(t.comm().rank()) * local, local));
}

// Every parameter and buffer of G, G_ema and D, in state-dict order, as doubles (f32 values are
// exact in a double, so equal doubles mean equal bits).
std::vector<double> params_of(Trainer& t) {
  std::vector<double> out;
  for (nn::Module* m : {static_cast<nn::Module*>(&t.G()), static_cast<nn::Module*>(&t.G_ema()),
                        static_cast<nn::Module*>(&t.D())})
    for (auto& [name, v] : nn::state_dict(*m)) {
      const std::vector<double> x = v.to_vector();
      out.insert(out.end(), x.begin(), x.end());
    }
  return out;
}

// The AdamW moments of G and D. With beta1 = 0 the first moment IS the last reduced gradient, so
// this is where a wrong loss normalisation shows (Adam's first step, about lr * sign(g), hides
// the gradient's scale from the parameters).
std::vector<double> moments_of(Trainer& t) {
  std::vector<double> out;
  for (const Tensor& v : {t.g_opt().exp_avg(), t.g_opt().exp_avg_sq(), t.d_opt().exp_avg(), t.d_opt().exp_avg_sq()}) {
    const std::vector<double> x = v.to_vector();
    out.insert(out.end(), x.begin(), x.end());
  }
  return out;
}

std::vector<double> state_of(Trainer& t) {
  std::vector<double> out = params_of(t);
  const std::vector<double> m = moments_of(t);
  out.insert(out.end(), m.begin(), m.end());
  return out;
}

// Number of elements whose bits differ (-1 for a size mismatch) and the first such index.
int64_t bit_differences(const std::vector<double>& a, const std::vector<double>& b, size_t* first) {
  if (a.size() != b.size()) return -1;
  int64_t n = 0;
  *first = a.size();
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(double)) != 0 && n++ == 0) *first = i;
  return n;
}

std::vector<double> losses_of(const StepResult& r) {
  return {r.g_loss, r.g_adv, r.g_match, r.moe, r.d_loss, r.d_real, r.d_fake, r.d_match, r.r1};
}

// Two trainers' states after the same training, up to f32 rounding:
//  - gradients (the AdamW moments, per buffer): |a - b| <= 1e-5 max|b| (f32 sums over the batch
//    in another order: elements that nearly cancel keep an absolute, not a relative, error);
//  - parameters: rtol 1e-5 plus 1% of one step (lr 0.0025): Adam's first step
//    lr * g / (|g| + eps) amplifies rounding-level gradient differences where |g| ~ eps.
void close_to(Context& t, Trainer& got, Trainer& want, const std::string& what) {
  std::string why;  // (filled before MT_CHECK formats it: argument order is unspecified)
  const std::vector<Tensor> mg = {got.g_opt().exp_avg(), got.g_opt().exp_avg_sq(), got.d_opt().exp_avg(),
                                  got.d_opt().exp_avg_sq()};
  const std::vector<Tensor> mw = {want.g_opt().exp_avg(), want.g_opt().exp_avg_sq(), want.d_opt().exp_avg(),
                                  want.d_opt().exp_avg_sq()};
  for (size_t k = 0; k < mg.size(); ++k) {
    const std::vector<double> a = mg[k].to_vector(), b = mw[k].to_vector();
    double scale = 0;
    for (double v : b) scale = std::max(scale, std::fabs(v));
    MT_CHECK(t, scale > 0, "{}: moment buffer {} is zero", what, k);
    const bool close_m = mpi_test::allclose(a, b, 0.0, 1e-5 * scale, &why);
    MT_CHECK(t, close_m, "{}, AdamW moment buffer {} (max {}): {}", what, k, scale, why);
  }
  const bool close_p = mpi_test::allclose(params_of(got), params_of(want), 1e-5, 0.01 * 0.0025, &why);
  MT_CHECK(t, close_p, "{}, parameters: {}", what, why);
}

void test_invariance(Context& t) {
  const int R = t.comm.size();
  auto local_comm = dist::make_local_comm();
  for (bool det : {false, true}) {
    // Deterministic mode needs the same micro-batch size at every rank count; the plain mode runs
    // each rank's whole local batch in one pass (4, 2 or 1 rows).
    const int64_t micro = det ? 1 : 0;
    auto ref = make_trainer(*local_comm, micro, det);
    const std::vector<double> before = state_of(*ref);
    const StepResult ref_loss = train_step(*ref, 0);
    const std::vector<double> want = state_of(*ref);
    auto dist_trainer = make_trainer(t.comm, micro, det);
    MT_CHECK(t, dist_trainer->local_batch() == kGlobalBatch / R);
    const StepResult got_loss = train_step(*dist_trainer, 0);
    const std::vector<double> got = state_of(*dist_trainer);
    MT_CHECK(t, ref_loss.r1_applied && got_loss.r1_applied, "the step must include D_r1");
    MT_CHECK(t, want != before, "the step did not change the parameters");
    if (det) {
      size_t first = 0;
      const int64_t n = bit_differences(got, want, &first);
      MT_CHECK(t, n == 0, "deterministic mode: {} of {} values differ from the one-process run (first at {}: {} vs {})",
               n, got.size(), first, first < got.size() ? got[first] : 0.0, first < want.size() ? want[first] : 0.0);
    } else {
      close_to(t, *dist_trainer, *ref, "allreduce mode");
    }
    // Logged losses: the global means, on every rank (rank 0's own rows alone would differ).
    std::string why;
    const bool close = mpi_test::allclose(losses_of(got_loss), losses_of(ref_loss), 1e-5, 1e-7, &why);
    MT_CHECK(t, close, "losses ({} mode): {}", det ? "deterministic" : "allreduce", why);
  }
}

void test_checkpoint(Context& t) {
  const int R = t.comm.size();
  if (R < 2) {
    if (t.comm.is_root()) std::printf("[np=1] checkpoint: needs np >= 2 (written at np = 2), skipped\n");
    return;
  }
  auto local_comm = dist::make_local_comm();
  // One folder for the job: rank 0's pid, broadcast.
  Tensor pid = from_vector_i64({int64_t(::getpid())}, {1});
  t.comm.broadcast(pid);
  const std::string dir =
      (std::filesystem::temp_directory_path() / fmt::format("aurora_mpi_trainer_{}_{}", R, pid.data<int64_t>()[0])).string();
  const std::string path = dir + "/" + checkpoint_file_name(2);
  // Write with a 2-rank job: ranks 0 and 1 (the others wait at the barrier).
  {
    std::unique_ptr<dist::Comm> pair = t.comm.split(t.comm.rank() < 2 ? 0 : 1, t.comm.rank());
    if (t.comm.rank() < 2) {
      if (pair->is_root()) std::filesystem::create_directories(dir);
      auto writer = make_trainer(*pair, 1, true);
      MT_CHECK(t, writer->local_batch() == kGlobalBatch / 2);
      for (int64_t s = 0; s < 2; ++s) train_step(*writer, s);
      save_checkpoint(*writer, path);  // collective over the pair; its rank 0 writes
    }
    t.comm.barrier();
  }
  // Uninterrupted one-process run: the state after 2 and after 3 steps.
  auto straight = make_trainer(*local_comm, 1, true);
  for (int64_t s = 0; s < 2; ++s) train_step(*straight, s);
  const std::vector<double> want2 = state_of(*straight);
  train_step(*straight, 2);
  const std::vector<double> want3 = state_of(*straight);
  MT_CHECK(t, want2 != want3);

  auto check_resume = [&](dist::Comm& comm, const char* what) {
    auto resumed = make_trainer(comm, 1, true);
    load_checkpoint(*resumed, path);
    MT_CHECK(t, resumed->state().step == 2 && resumed->state().nimg == 2 * kGlobalBatch, "{}: step {}, nimg {}", what,
             resumed->state().step, resumed->state().nimg);
    size_t first = 0;
    int64_t n = bit_differences(state_of(*resumed), want2, &first);
    MT_CHECK(t, n == 0, "{}: {} loaded values differ from the uninterrupted run (first at {})", what, n, first);
    train_step(*resumed, 2);
    n = bit_differences(state_of(*resumed), want3, &first);
    MT_CHECK(t, n == 0, "{}: after one more step {} values differ from the uninterrupted run (first at {})", what, n,
             first);
    MT_CHECK(t, resumed->state().step == 3);
  };
  check_resume(t.comm, R == 2 ? "resume at np = 2" : "resume at np = 4");
  check_resume(*local_comm, "resume at np = 1");
  t.comm.barrier();
  if (t.comm.is_root()) std::filesystem::remove_all(dir);
}

// Expert parallelism in the trainer: G's experts sharded over EP groups of 2 (the 8 px stage has
// 2 experts, so each EP rank owns one) train like EP = 1, both on the whole world.
void test_expert_parallel(Context& t) {
  if (t.comm.size() < 2) {
    if (t.comm.is_root()) std::printf("[np=1] expert_parallel: needs np >= 2, skipped\n");
    return;
  }
  auto make = [&](int64_t ep) {
    json doc = micro_config(0);
    doc["train"]["expert_parallel"] = ep;
    const AuroraConfig cfg = parse_config(doc);
    return std::make_unique<Trainer>(cfg, parse_train_config(cfg.train), t.comm);
  };
  // Two steps: the experts get no gradient in the first (the MoE branch's output starts at zero
  // weight), so the second is where they train.
  auto fresh = make(1);
  auto dense = make(1);
  for (int64_t s = 0; s < 2; ++s) train_step(*dense, s);
  auto sharded = make(2);
  for (int64_t s = 0; s < 2; ++s) train_step(*sharded, s);
  // Expert parameters: trained, and before the gather the experts this rank does not own are
  // stale (the hooks really shard them).
  auto experts_of = [](Trainer& tr) {
    std::vector<double> out;
    for (auto& [name, v] : nn::state_dict(tr.G()))
      if (name.find(".moe.experts.") != std::string::npos) {
        const std::vector<double> x = v.to_vector();
        out.insert(out.end(), x.begin(), x.end());
      }
    return out;
  };
  const std::vector<double> e_fresh = experts_of(*fresh), e_dense = experts_of(*dense);
  MT_CHECK(t, !e_dense.empty() && e_dense != e_fresh, "the experts did not train");
  std::string why;
  const bool stale_close = mpi_test::allclose(experts_of(*sharded), e_dense, 1e-5, 0.01 * 0.0025, &why);
  MT_CHECK(t, !stale_close, "before gather_experts the non-owned experts should be stale");
  sharded->gather_experts();
  close_to(t, *sharded, *dense, "EP = 2 vs EP = 1");
}

}  // namespace

int main(int argc, char** argv) {
  return mpi_test::run(argc, argv, {{"invariance", test_invariance}, {"checkpoint", test_checkpoint}, {"expert_parallel", test_expert_parallel}});
}

// mpi_data_parallel.cpp: DataParallel (dist/data_parallel.h) at np = 1, 2, 4.
//
//   buckets        the plan against an independent walk of the parameters: reverse registration
//                  order, contiguous, within the cap, every parameter exactly once;
//   broadcast      ranks initialised with different seeds agree after broadcast_parameters();
//                  check_consistency() then passes, and after one rank changes one parameter it
//                  fails on every rank naming that parameter;
//   allreduce      rank-dependent gradients become their mean (computed from the formula);
//   average        average_buffer;
//   invariance     one G-like step (non-saturating loss through D), one D-like step (real/fake
//                  logistic loss) and one R1-like step (double backward) of a small G/D pair with
//                  AdamW, at the same global batch of 8 (micro-batches of 2, sample data drawn by
//                  global sample index): the parameters after the three steps equal those of a
//                  one-process run over the whole batch, computed here independently with
//                  LocalComm (rtol 1e-5 with MPI_Allreduce; bit-identical in deterministic mode).
// The trainer-level version (G_main, D_main, D_r1 of the tiny Aurora preset) belongs with the
// trainer; docs/distributed.md says what it needs.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "autograd/engine.h"
#include "autograd/grad_mode.h"
#include "dist/data_parallel.h"
#include "mpi_test.h"
#include "nn/adamw.h"
#include "nn/layers.h"
#include "nn/losses.h"
#include "tensor/error.h"
#include "tensor/ops.h"

using namespace engine;
using mpi_test::Context;

namespace {

struct Mlp : nn::Module {
  nn::EqualLinear& fc0;
  nn::EqualLinear& fc1;
  nn::EqualLinear& fc2;
  Mlp(int64_t in, int64_t hidden, int64_t out)
      : Module("Mlp"),
        fc0(register_module<nn::EqualLinear>("fc0", in, hidden, true, 0.0, 1.0, nn::Activation::lrelu)),
        fc1(register_module<nn::EqualLinear>("fc1", hidden, hidden, true, 0.1, 0.5, nn::Activation::lrelu)),
        fc2(register_module<nn::EqualLinear>("fc2", hidden, out, true)) {}
  Tensor forward(const Tensor& x) const { return fc2.forward(fc1.forward(fc0.forward(x))); }
};

constexpr int64_t kZ = 8, kX = 6, kHidden = 16;

// Sample data keyed by (purpose, global sample index): the same sample on any rank count.
Tensor sample_rows(uint64_t purpose, int64_t first, int64_t count, int64_t width) {
  TensorList rows;
  for (int64_t i = first; i < first + count; ++i) {
    Generator gen(1234 + purpose, uint64_t(i) * 4096);
    rows.push_back(randn({1, width}, gen));
  }
  return cat(rows, 0);
}

void test_buckets(Context& t) {
  Mlp m(kZ, kHidden, kX);
  nn::ParameterStore store;
  store.materialize(m, 1);
  const int64_t cap = 600;  // bytes: 150 f32, so fc1.weight (256) is a bucket of its own
  dist::DataParallel dp(t.comm, store, m, cap);
  // Independent walk: reverse order, greedy merge while contiguous and within the cap.
  std::vector<std::pair<int64_t, int64_t>> want;
  const auto& ps = store.parameters();
  for (auto it = ps.rbegin(); it != ps.rend(); ++it) {
    const int64_t off = it->second->offset, n = it->second->shape.product();
    if (!want.empty() && off + n == want.back().first && (want.back().second + n) * 4 <= cap) {
      want.back().first = off;
      want.back().second += n;
    } else {
      want.emplace_back(off, n);
    }
  }
  const auto& got = dp.buckets();
  MT_CHECK(t, got.size() == want.size(), "{} buckets vs {}", got.size(), want.size());
  int64_t covered = 0;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    MT_CHECK(t, got[i].offset == want[i].first && got[i].numel == want[i].second, "bucket {}: [{}, +{}) vs [{}, +{})",
             i, got[i].offset, got[i].numel, want[i].first, want[i].second);
    MT_CHECK(t, got[i].numel * 4 <= cap || got[i].first == got[i].last, "bucket {} over the cap", i);
    covered += got[i].numel;
  }
  MT_CHECK(t, covered == store.numel(), "buckets cover {} of {} elements", covered, store.numel());
  MT_CHECK(t, !got.empty() && got.front().last == "fc2.bias", "the first bucket must hold the last parameter");
}

void test_broadcast_consistency(Context& t) {
  Mlp m(kZ, kHidden, kX);
  nn::ParameterStore store;
  store.materialize(m, 100 + uint64_t(t.comm.rank()));  // deliberately different per rank
  Mlp ref(kZ, kHidden, kX);
  nn::ParameterStore ref_store;
  ref_store.materialize(ref, 100);  // what rank 0 holds
  dist::DataParallel dp(t.comm, store, m);
  dp.broadcast_parameters();
  MT_CHECK(t, store.flat_params().to_vector() == ref_store.flat_params().to_vector(),
           "after broadcast every rank holds rank 0's parameters");
  bool threw = false;
  try {
    dp.check_consistency();
  } catch (const Error&) {
    threw = true;
  }
  MT_CHECK(t, !threw, "consistent parameters must pass check_consistency");
  if (t.comm.size() == 1) return;
  if (t.comm.rank() == t.comm.size() - 1) {
    autograd::NoGradGuard no_grad;
    Tensor w = m.fc1.weight.value;
    Tensor one = narrow(reshape(w, {-1}), 0, 5, 1);
    add_(one, full({1}, 1e-6));
  }
  std::string msg;
  try {
    dp.check_consistency();
  } catch (const Error& e) {
    msg = e.what();
  }
  MT_CHECK(t, msg.find("'fc1.weight'") != std::string::npos && msg.find(fmt::format("rank {}", t.comm.size() - 1)) !=
                                                                     std::string::npos,
           "the error must name fc1.weight and the differing rank; got '{}'", msg);
}

void test_allreduce(Context& t) {
  for (bool det : {false, true}) {
    Mlp m(kZ, kHidden, kX);
    nn::ParameterStore store;
    store.materialize(m, 7);
    dist::DataParallel dp(t.comm, store, m, 256);
    dp.set_deterministic(det);
    const int R = t.comm.size();
    Tensor g = store.flat_grads();
    const int64_t n = g.numel();
    std::vector<double> mine(static_cast<size_t>(n)), want(static_cast<size_t>(n), 0.0);
    for (int64_t i = 0; i < n; ++i) {
      mine[size_t(i)] = double((t.comm.rank() + 1) * (i % 7 + 1)) * 0.25;
      for (int r = 0; r < R; ++r) want[size_t(i)] += double((r + 1) * (i % 7 + 1)) * 0.25 / R;
    }
    copy_(g, from_vector(mine, {n}));
    dp.allreduce_gradients();
    std::string why;
    MT_CHECK(t, mpi_test::allclose(store.flat_grads().to_vector(), want, 1e-6, 0, &why), "deterministic={}: {}", det,
             why);
  }
  Mlp m(kZ, kHidden, kX);
  nn::ParameterStore store;
  store.materialize(m, 7);
  dist::DataParallel dp(t.comm, store, m);
  Tensor b = full({3}, double(t.comm.rank()), TensorOptions{DType::f64});
  dp.average_buffer(b);
  MT_CHECK(t, b.to_vector()[2] == double(t.comm.size() - 1) / 2.0, "average {}", b.to_vector()[2]);
}

// ---- One G-like, one D-like and one R1-like step ----------------------------------------------

struct Gan {
  Mlp g{kZ, kHidden, kX}, d{kX, kHidden, 1};
  nn::ParameterStore gs, ds;
};

constexpr int64_t kGlobalBatch = 8, kMicro = 2;

// Run the three phases on samples [first, first + count) with comm; return G and D parameters.
std::vector<double> run_steps(dist::Comm& comm, int64_t first, int64_t count, bool deterministic, uint64_t init_seed) {
  Gan gan;
  gan.gs.materialize(gan.g, init_seed);
  gan.ds.materialize(gan.d, init_seed + 1);
  dist::DataParallel dpg(comm, gan.gs, gan.g, 512), dpd(comm, gan.ds, gan.d, 512);
  dpg.set_deterministic(deterministic);
  dpd.set_deterministic(deterministic);
  dpg.broadcast_parameters();
  dpd.broadcast_parameters();
  nn::AdamW optg(gan.gs, {0.01, 0.0, 0.99, 1e-8, 0.0}), optd(gan.ds, {0.01, 0.0, 0.99, 1e-8, 0.0});
  const int64_t k = count / kMicro;           // micro-batches on this rank
  const double micro_scale = 1.0 / double(k);  // rank gradient = mean over the local batch
  // G_main: non-saturating loss through D; D's gradients are dropped.
  for (int64_t mb = 0; mb < k; ++mb) {
    const Tensor z = sample_rows(1, first + mb * kMicro, kMicro, kZ);
    autograd::backward(mul(nn::g_loss(gan.d.forward(gan.g.forward(z))), micro_scale));
    dpg.end_micro_batch();
  }
  gan.ds.zero_grad();
  dpg.allreduce_gradients();
  optg.step();
  gan.gs.zero_grad();
  // D_main: logistic loss on fakes (G detached) and reals.
  for (int64_t mb = 0; mb < k; ++mb) {
    const Tensor z = sample_rows(1, first + mb * kMicro, kMicro, kZ);
    const Tensor real = sample_rows(2, first + mb * kMicro, kMicro, kX);
    Tensor fake;
    {
      autograd::NoGradGuard no_grad;
      fake = gan.g.forward(z);
    }
    const Tensor loss = add(nn::d_loss_fake(gan.d.forward(fake)), nn::d_loss_real(gan.d.forward(real)));
    autograd::backward(mul(loss, micro_scale));
    dpd.end_micro_batch();
  }
  dpd.allreduce_gradients();
  optd.step();
  gan.ds.zero_grad();
  // D_r1: gamma/2 * E||grad_x D(x)||^2 by double backward.
  for (int64_t mb = 0; mb < k; ++mb) {
    Tensor real = sample_rows(2, first + mb * kMicro, kMicro, kX).detach();
    real.requires_grad_(true);
    const Tensor out = gan.d.forward(real);
    const Tensor gx = autograd::grad({sum(out)}, {real}, {}, true)[0];
    const Tensor penalty = mul(mean(sum(square(gx), {1})), 0.5 * 4.0);
    autograd::backward(mul(penalty, micro_scale));
    dpd.end_micro_batch();
  }
  dpd.allreduce_gradients();
  optd.step();
  dpd.check_consistency();
  dpg.check_consistency();
  std::vector<double> out = gan.gs.flat_params().to_vector();
  const std::vector<double> d = gan.ds.flat_params().to_vector();
  out.insert(out.end(), d.begin(), d.end());
  return out;
}

void test_invariance(Context& t) {
  const int R = t.comm.size();
  ENGINE_CHECK(kGlobalBatch % (R * kMicro) == 0, "global batch {} does not split over {} ranks", kGlobalBatch, R);
  const int64_t local = kGlobalBatch / R;
  auto local_comm = dist::make_local_comm();
  for (bool det : {false, true}) {
    // Reference: one process, the whole global batch, in micro-batch order.
    const std::vector<double> ref = run_steps(*local_comm, 0, kGlobalBatch, det, 42);
    // Distributed: each rank starts from a different init; broadcast makes them rank 0's (= 42).
    const std::vector<double> got = run_steps(t.comm, t.comm.rank() * local, local, det, 42 + 1000 * t.comm.rank());
    if (det) {
      size_t differ = 0, first = got.size();
      for (size_t i = 0; i < got.size() && i < ref.size(); ++i)
        if (std::memcmp(&got[i], &ref[i], sizeof(double)) != 0 && differ++ == 0) first = i;
      MT_CHECK(t, got.size() == ref.size() && differ == 0,
               "deterministic mode: {} of {} parameters differ from the one-process run (first at {})", differ,
               got.size(), first);
    } else {
      std::string why;
      MT_CHECK(t, mpi_test::allclose(got, ref, 1e-5, 1e-7, &why), "allreduce mode: {}", why);
    }
    // The step moved the parameters (the comparison is not between two untouched inits).
    Gan fresh;
    fresh.gs.materialize(fresh.g, 42);
    MT_CHECK(t, fresh.gs.flat_params().to_vector() != std::vector<double>(got.begin(), got.begin() + fresh.gs.numel()));
  }
}

}  // namespace

int main(int argc, char** argv) {
  return mpi_test::run(argc, argv,
                       {{"buckets", test_buckets},
                        {"broadcast_consistency", test_broadcast_consistency},
                        {"allreduce", test_allreduce},
                        {"invariance", test_invariance}});
}

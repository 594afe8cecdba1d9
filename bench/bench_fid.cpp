// bench_fid.cpp: the two costs of an FID evaluation against their usual implementations, in one
// run with the same thread count (DESIGN.md section 13):
//   inception_bB   FidInception::features on B images of 299x299 vs the same network in PyTorch
//                  (tests/parity/ref_inception.py, eval mode); images/s = B / time
//   frechet_dD     the Frechet distance of two D x D covariances (ours: pivoted Cholesky +
//                  tridiagonal eigenvalues, aurora/fid.cpp) vs pytorch-fid's scipy.linalg.sqrtm
// Weights are random (the cost does not depend on their values).
//   bench_fid [--batch B] [--dim D] [--reps R] [--profile]   (--profile: per-op table of one forward)
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include "aurora/fid.h"
#include "aurora/inception.h"
#include "bench/bench_util.h"
#include "tensor/memory/profiler.h"
#include "tensor/ops.h"

using namespace engine;

int main(int argc, char** argv) {
  int64_t batch = 4, dim = 2048;
  int reps = 3;
  bool profile = false;
  for (int i = 1; i < argc; ++i)
    if (!std::strcmp(argv[i], "--profile")) profile = true;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--batch")) batch = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--dim")) dim = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[i + 1]);
  }
  const int threads = omp_get_max_threads();
  Generator g(1);
  io::NamedTensors w;
  for (const auto& [name, shape] : aurora::FidInception::parameter_shapes()) {
    const bool pos = name.find("running_var") != std::string::npos || name.find("bn.weight") != std::string::npos;
    w.emplace_back(name, pos ? add(rand(shape, g), 0.5) : mul(randn(shape, g), 0.05));
  }
  const aurora::FidInception net(io::parse_safetensors(io::serialize_safetensors(w).data(),
                                                        io::serialize_safetensors(w).size(), "random"));
  const Tensor x = sub(mul(rand({batch, 3, 299, 299}, g), 2.0), 1.0);
  std::map<std::string, bench::Result> ours;
  const std::string inc = "inception_b" + std::to_string(batch);
  ours[inc] = bench::measure([&] { net.features(x); }, reps);
  if (profile) {  // where the Inception forward spends its time, per op
    memory::Profiler::reset();
    memory::Profiler::enable(true);
    net.features(x);
    memory::Profiler::enable(false);
    std::printf("%s\n", memory::Profiler::table_markdown(12).c_str());
  }

  // Two covariances of random features (N = D + 500 rows), as the reference builds them.
  auto cov = [&](double scale) {
    aurora::FidAccumulator acc(dim);
    acc.add(mul(randn({dim + 500, dim}, g, opts(DType::f64)), scale));
    return acc.finish();
  };
  const aurora::FidStatistics s1 = cov(1.0), s2 = cov(1.1);
  const std::string fr = "frechet_d" + std::to_string(dim);
  const auto t0 = std::chrono::steady_clock::now();
  const double fid = aurora::frechet_distance(s1, s2);
  ours[fr].time_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  const std::string cmd = std::string(ENGINE_PYTHON) + " " + ENGINE_SOURCE_DIR +
                          "/bench/bench_fid_torch.py --threads " + std::to_string(threads) +
                          " --batch " + std::to_string(batch) + " --dim " + std::to_string(dim) +
                          " --reps " + std::to_string(reps);
  const nlohmann::json ref = nlohmann::json::parse(bench::run_command(cmd, "bench_fid"));
  std::printf("threads %d; FID of the bench covariances %.6f\n", threads, fid);
  std::printf("%-16s %12s %12s %8s\n", "case", "ours ms", "ref ms", "ratio");
  for (const auto& [name, r] : ours) {
    const double t_ref = ref[name]["time_ms"].get<double>();
    std::printf("%-16s %12.1f %12.1f %8.3f\n", name.c_str(), r.time_ms, t_ref, r.time_ms / t_ref);
  }
  std::printf("inception: ours %.2f images/s, torch %.2f images/s\n", batch / ours[inc].time_ms * 1e3,
              batch / ref[inc]["time_ms"].get<double>() * 1e3);
  for (const auto& [name, r] : ours) {
    const double t_ref = ref[name]["time_ms"].get<double>();
    std::printf("BENCH case=%s metric=time_ms ours=%.4f ref=%.4f ratio=%.4f ref_name=%s\n", name.c_str(), r.time_ms,
                t_ref, r.time_ms / t_ref, name == fr ? "scipy-sqrtm" : "pytorch-cpu");
  }
  return 0;
}

// bench_core.cpp: our engine against PyTorch (CPU, same thread count) in one run, on
//   matmul            C = A B
//   conv2d_fwd_bwd    y = conv2d(x, w, b, pad 1); backward(sum(y)) to x, w, b
//   r1_step           the small discriminator's lazy-R1 step (bench/small_disc.h): forward,
//                     grad(sum D(x), x, create_graph), mean(sum g^2), backward to the weights
// For each case: the median time of several repetitions after warm-up, and the peak bytes held
// by tensors allocated during one repetition (ours from the arena, PyTorch's from its profiler's
// memory events; inputs and parameters that exist before the case are not counted on either side).
// Prints a table and, per case and metric, a machine-readable line (DESIGN.md section 13):
//   BENCH case=NAME metric=time_ms ours=X ref=Y ratio=X/Y ref_name=pytorch-cpu
//
//   bench_core [--threads 2] [--reps 7] [--size small|default]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/small_disc.h"
#include "bench/bench_util.h"
#include "tensor/memory/memory.h"

extern "C" void openblas_set_num_threads(int);

using namespace engine;

using bench::measure;
using bench::Result;

int main(int argc, char** argv) {
  int threads = 2, reps = 7;
  std::string size = "default";
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--size") && i + 1 < argc) size = argv[++i];
    else {
      std::fprintf(stderr, "usage: bench_core [--threads N] [--reps N] [--size small|default]\n");
      return 1;
    }
  }
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);

  // Case sizes. "default": a 512^3 GEMM, a 64-channel 32x32 conv on 16 images, and the R1 step of
  // a 3->32->64 discriminator on 16 images of 32x32.
  const bool small = size == "small";
  const std::vector<int64_t> mm = small ? std::vector<int64_t>{128, 128, 128} : std::vector<int64_t>{512, 512, 512};
  const std::vector<int64_t> cv = small ? std::vector<int64_t>{4, 8, 8, 16} : std::vector<int64_t>{16, 64, 64, 32};
  const std::vector<int64_t> r1 = small ? std::vector<int64_t>{4, 3, 8, 16, 16} : std::vector<int64_t>{16, 3, 32, 64, 32};
  nlohmann::json config = {{"matmul", mm}, {"conv", cv}, {"r1", r1}};

  std::map<std::string, Result> ours;
  Generator gen(0);
  {
    Tensor a = randn({mm[0], mm[1]}, gen), b = randn({mm[1], mm[2]}, gen);
    ours["matmul"] = measure([&] { matmul(a, b); }, reps);
  }
  {
    Tensor x = randn({cv[0], cv[1], cv[3], cv[3]}, gen).requires_grad_(true);
    Tensor w = randn({cv[2], cv[1], 3, 3}, gen).requires_grad_(true);
    Tensor b = randn({cv[2]}, gen).requires_grad_(true);
    ours["conv2d_fwd_bwd"] = measure(
        [&] {
          autograd::backward(sum(conv2d(x, w, b, Conv2dParams::make(1, 1))));
          for (const Tensor* t : {&x, &w, &b}) t->set_grad(Tensor());
        },
        reps);
  }
  {
    bench::SmallDisc d = bench::SmallDisc::make(r1[1], r1[2], r1[3], r1[4], 1);
    Tensor x = randn({r1[0], r1[1], r1[4], r1[4]}, gen);
    ours["r1_step"] = measure(
        [&] {
          d.r1_step(x);
          for (const Tensor& p : d.params()) p.set_grad(Tensor());
        },
        reps);
  }

  const std::string cmd = std::string(ENGINE_PYTHON) + " " + ENGINE_SOURCE_DIR + "/bench/bench_core_torch.py --threads " +
                          std::to_string(threads) + " --reps " + std::to_string(reps) + " --config '" +
                          config.dump() + "'";
  nlohmann::json ref = nlohmann::json::parse(bench::run_command(cmd, "bench_core"));

  bench::print_report(ours, ref);
  return 0;
}

// bench_modconv.cpp: Aurora's modulated convolutions (nn/modconv) against PyTorch (CPU, same
// thread count) in one run. Each case: forward, then backward of sum(y) to the input, w and every
// parameter. The PyTorch side (bench_modconv_torch.py) is the literal spec-3 formulation the
// released model uses (per-sample weight built step by step, grouped conv); ours folds the
// modulation into one weight-sized pass (Note [modulation without weight-sized temporaries]).
//
//   conv3x3_n2       3x3 ModConv 512 -> 512, N = 2, demodulated, 16x16, B = 4  (a 16x16 conv2)
//   conv3x3_up_n4    3x3 ModConv 512 -> 256, N = 4, demodulated, upsampling 16 -> 32, B = 4
//   torgb_n8         1x1 ToRGB 256 -> 3, N = 8, no demodulation, 64x64, B = 4
//   router_e16       ModulatedLinear 512 -> 16 (MoE router, lrelu), T = 1024 tokens, B = 4
// Prints a table and per case and metric (DESIGN.md section 13):
//   BENCH case=NAME metric=time_ms ours=X ref=Y ratio=X/Y ref_name=pytorch-cpu
//
//   bench_modconv [--threads 2] [--reps 5] [--size small|default]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "autograd/engine.h"
#include "nn/modconv.h"
#include "nn/torgb.h"
#include "bench/bench_util.h"
#include "tensor/memory/memory.h"

extern "C" void openblas_set_num_threads(int);

using namespace engine;
using namespace engine::nn;

using bench::measure;
using bench::Result;

int main(int argc, char** argv) {
  int threads = 2, reps = 5;
  std::string size = "default";
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--size") && i + 1 < argc) size = argv[++i];
    else {
      std::fprintf(stderr, "usage: bench_modconv [--threads N] [--reps N] [--size small|default]\n");
      return 1;
    }
  }
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
  const bool small = size == "small";
  const int64_t d = small ? 8 : 1;  // channel divisor for the smoke test
  nlohmann::json cases = {
      {"conv3x3_n2", {{"kind", "modconv"}, {"cin", 512 / d}, {"cout", 512 / d}, {"k", 3}, {"n", 2}, {"demod", true},
                      {"up", false}, {"act", "lrelu"}, {"B", 4}, {"H", 16}, {"w_dim", 1024 / d}}},
      {"conv3x3_up_n4", {{"kind", "modconv"}, {"cin", 512 / d}, {"cout", 256 / d}, {"k", 3}, {"n", 4}, {"demod", true},
                         {"up", true}, {"act", "lrelu"}, {"B", 4}, {"H", 16}, {"w_dim", 1024 / d}}},
      {"torgb_n8", {{"kind", "modconv"}, {"cin", 256 / d}, {"cout", 3}, {"k", 1}, {"n", 8}, {"demod", false},
                    {"up", false}, {"act", "linear"}, {"B", 4}, {"H", 64 / d}, {"w_dim", 1024 / d}}},
      {"router_e16", {{"kind", "modlinear"}, {"cin", 512 / d}, {"cout", 16}, {"k", 1}, {"n", 1}, {"demod", true},
                      {"up", false}, {"act", "lrelu"}, {"B", 4}, {"T", 1024 / d}, {"w_dim", 1024 / d}}},
  };

  std::map<std::string, Result> ours;
  Generator gen(0);
  for (auto& [name, c] : cases.items()) {
    const int64_t B = c["B"], cin = c["cin"], wd = c["w_dim"];
    std::unique_ptr<Module> m;
    std::function<Tensor(const Tensor&, const Tensor&)> fwd;
    Tensor x;
    if (c["kind"] == "modlinear") {
      auto l = std::make_unique<ModulatedLinear>(cin, c["cout"].get<int64_t>(), wd, true, Activation::lrelu);
      ModulatedLinear* p = l.get();
      fwd = [p](const Tensor& a, const Tensor& b) { return p->forward(a, b); };
      m = std::move(l);
      x = randn({B, c["T"].get<int64_t>(), cin}, gen);
    } else {
      ModConvConfig mc;
      mc.in_channels = cin, mc.out_channels = c["cout"], mc.kernel_size = c["k"], mc.w_dim = wd;
      mc.num_kernels = c["n"], mc.demodulate = c["demod"], mc.upsample = c["up"];
      mc.activation = c["act"] == "lrelu" ? Activation::lrelu : Activation::linear;
      auto l = std::make_unique<ModulatedConv2d>(mc);
      ModulatedConv2d* p = l.get();
      fwd = [p](const Tensor& a, const Tensor& b) { return p->forward(a, b); };
      m = std::move(l);
      const int64_t H = c["H"];
      x = randn({B, cin, H, H}, gen);
    }
    ParameterStore store;
    store.materialize(*m, 1);
    x.requires_grad_(true);
    Tensor w = randn({B, wd}, gen).requires_grad_(true);
    ours[name] = measure(
        [&] {
          autograd::backward(sum(fwd(x, w)));
          x.set_grad(Tensor());
          w.set_grad(Tensor());
          store.zero_grad();
        },
        reps);
  }

  const std::string cmd = std::string(ENGINE_PYTHON) + " " + ENGINE_SOURCE_DIR +
                          "/bench/bench_modconv_torch.py --threads " + std::to_string(threads) + " --reps " +
                          std::to_string(reps) + " --config '" + cases.dump() + "'";
  nlohmann::json ref = nlohmann::json::parse(bench::run_command(cmd, "bench_modconv"));
  bench::print_report(ours, ref);
  return 0;
}

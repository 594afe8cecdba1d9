// bench_modulated_weight.cpp: the fused modulated_weight op (tensor/ops_fused.cpp) against the
// composite of ~15 differentiable ops it replaced in nn/modconv.cpp (tests/
// modulated_weight_composite.h, shared with tests/test_modulated_weight.cpp), on the CPU, for the
// per-sample weights of the layers of bench_modconv plus a shared 3x3 kernel (N = 1). Each case: forward only, and forward + backward
// (dK, ds from a fixed upstream gradient). Median of --reps after two warm-up runs; also the
// number of ops recorded by one forward (autograd nodes of the graph = the launches on a GPU).
//
//   bench_modulated_weight [--threads 2] [--reps 7]
// Prints per case: BENCH case=NAME metric=time_ms ours=fused ref=composite ratio=fused/composite
//                  ref_name=composite
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>

#include "autograd/engine.h"
#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "bench/bench_util.h"
#include "tensor/ops.h"
#include "tests/modulated_weight_composite.h"

using namespace engine;

namespace {

// Nodes reachable from y's grad_fn (each one op recorded by the forward).
int count_nodes(const Tensor& y) {
  std::vector<autograd::Node*> stack{y.grad_fn().get()}, seen;
  while (!stack.empty()) {
    autograd::Node* n = stack.back();
    stack.pop_back();
    if (!n || std::find(seen.begin(), seen.end(), n) != seen.end()) continue;
    seen.push_back(n);
    for (const autograd::Edge& e : n->next_edges)
      if (e.valid() && e.node->name() != "AccumulateGrad") stack.push_back(e.node.get());
  }
  return int(seen.size());
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, reps = 7;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: bench_modulated_weight [--threads N] [--reps N]\n");
      return 2;
    }
  }
  omp_set_num_threads(threads);
  struct Case {
    const char* name;
    Dims kernel;
    bool batched, demod, transposed;
  };
  const int64_t B = 4;
  const Case cases[] = {
      {"conv3x3_n2", {B, 512, 512, 3, 3}, true, true, false},
      {"conv3x3_up_n4", {B, 256, 512, 3, 3}, true, true, true},
      {"conv3x3_n1", {512, 512, 3, 3}, false, true, false},
      {"torgb_n8", {B, 3, 256, 1, 1}, true, false, false},
      {"router_e16", {16, 512}, false, true, true},
  };
  std::printf("%-14s %10s %10s %10s %10s %8s %8s\n", "case", "fwd fused", "fwd comp", "f+b fused", "f+b comp",
              "ops fused", "ops comp");
  for (const Case& c : cases) {
    Generator gen(1);
    const int64_t cin = c.batched ? c.kernel[2] : c.kernel[1];
    const Tensor K = randn(c.kernel, gen, opts(DType::f32)).requires_grad_(true);
    const Tensor s = add(randn({B, cin}, gen, opts(DType::f32)), 1.0).detach().requires_grad_(true);
    ModulatedWeightParams p;
    p.batched = c.batched;
    p.demodulate = c.demod;
    p.weight_gain = 0.1;
    p.transposed = c.transposed;
    const Tensor go = randn(modulated_weight(K.detach(), s.detach(), p).sizes(), gen, opts(DType::f32));
    auto fwd = [&](bool fused) {
      return [&, fused] {
        autograd::NoGradGuard ng;
        (void)(fused ? modulated_weight(K, s, p) : test::modulated_weight_composite(K, s, p));
      };
    };
    auto fwd_bwd = [&](bool fused) {
      return [&, fused] {
        const Tensor y = fused ? modulated_weight(K, s, p) : test::modulated_weight_composite(K, s, p);
        (void)autograd::grad({y}, {K, s}, {go});
      };
    };
    const double ff = bench::measure(fwd(true), reps).time_ms, fc = bench::measure(fwd(false), reps).time_ms;
    const double bf = bench::measure(fwd_bwd(true), reps).time_ms, bc = bench::measure(fwd_bwd(false), reps).time_ms;
    const int nf = count_nodes(modulated_weight(K, s, p)), nc = count_nodes(test::modulated_weight_composite(K, s, p));
    std::printf("%-14s %10.2f %10.2f %10.2f %10.2f %8d %8d\n", c.name, ff, fc, bf, bc, nf, nc);
    std::printf("BENCH case=%s_fwd metric=time_ms ours=%.4f ref=%.4f ratio=%.4f ref_name=composite\n", c.name, ff, fc,
                ff / fc);
    std::printf("BENCH case=%s_fwd_bwd metric=time_ms ours=%.4f ref=%.4f ratio=%.4f ref_name=composite\n", c.name, bf,
                bc, bf / bc);
  }
  return 0;
}

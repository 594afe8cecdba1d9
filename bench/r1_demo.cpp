// r1_demo.cpp: the engine demo. Runs lazy-R1 steps of the small discriminator (bench/small_disc.h)
// under a PhaseScope("D_r1") with the memory profiler on, then prints where the bytes went (per op,
// module and pass: fwd, bwd, and bwd2 for the double backward) and writes the tables and a Chrome
// trace (open trace.json in https://ui.perfetto.dev or chrome://tracing).
//
//   r1_demo [--out runs/demo] [--steps 3] [--batch 16] [--res 32]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "bench/small_disc.h"
#include "tensor/memory/memory.h"
#include "tensor/memory/profiler.h"

using namespace engine;

int main(int argc, char** argv) {
  std::string out = "runs/demo";
  int steps = 3;
  int64_t batch = 16, res = 32;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
    else if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--batch") && i + 1 < argc) batch = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--res") && i + 1 < argc) res = std::atoll(argv[++i]);
    else {
      std::fprintf(stderr, "usage: r1_demo [--out DIR] [--steps N] [--batch N] [--res R]\n");
      return 1;
    }
  }
  try {
    ENGINE_CHECK(steps > 0 && batch > 0 && res >= 4 && res % 4 == 0,
                 "r1_demo: need steps > 0, batch > 0 and res a multiple of 4 (got {}, {}, {})", steps, batch, res);
    bench::SmallDisc d = bench::SmallDisc::make(3, 32, 64, res, 1);
    Generator gen(42);
    for (int step = 0; step < steps; ++step) {
      memory::Profiler::reset();
      memory::Profiler::enable(true);
      const auto t0 = std::chrono::steady_clock::now();
      double r1 = 0;
      {
        memory::PhaseScope phase("D_r1");
        {
          Tensor x = randn({batch, 3, res, res}, gen);
          r1 = d.r1_step(x).item();
        }  // every activation of the step is gone here; close() checks it
        phase.close();
      }
      for (const Tensor& p : d.params()) p.set_grad(Tensor());
      memory::Profiler::enable(false);
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      std::printf("step %d  r1 %.6f  %.1f ms  | %s\n", step, r1, ms, memory::Profiler::step_summary(step).c_str());
    }
    std::printf("\n%s\n", memory::Profiler::table_markdown(25).c_str());
    std::printf("%s\n", memory::Profiler::live_set_markdown(15).c_str());
    memory::Profiler::write_all(out);
    std::printf("wrote %s/{table.md,table.csv,live_set.md,trace.json}\n", out.c_str());
  } catch (const Error& e) {
    std::fprintf(stderr, "r1_demo: error: %s\n", e.what());
    return 1;
  }
  return 0;
}

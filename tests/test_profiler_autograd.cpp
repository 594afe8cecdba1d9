// The profiler through autograd: bytes of the forward, backward and double backward of an
// R1-shaped computation are attributed to the right op and pass, with exact byte counts.
//
// x: f32 [256] = 1024 bytes (a multiple of the 256-byte alignment); scalars round up to 256.
//   y = exp(x)                  fwd:  exp  allocates 1024, saves its output (1024)
//   s = sum(y)                  fwd:  sum  allocates 256
//   g = grad(s, x, create)      bwd:  mul  allocates 1024 (ExpBackward: g_s * y); the engine's
//                                     implicit grad_output (ones, 256) is made in the caller's pass
//   r = sum(g * g)              fwd:  mul 1024, sum 256
//   backward(r)                 bwd:  MulBackward(g, g): two muls of 1024 and their sum (add, 1024)
//                                     because both inputs are the same tensor;
//                                     ExpBackward: mul 1024;
//                               bwd2: MulBackward recorded during the first grad (g_s * y) runs
//                                     as double backward: one mul of 1024 (d/dy; g_s needs none)
#include <doctest/doctest.h>

#include <map>

#include "autograd/engine.h"
#include "tensor/memory/memory.h"
#include "tensor/memory/profiler.h"
#include "tensor/ops.h"

using namespace engine;
using namespace engine::memory;

namespace {
int64_t sum_allocated(const std::vector<OpRecord>& rs, const std::string& op, Pass pass) {
  int64_t total = 0;
  for (const OpRecord& r : rs)
    if (r.op == op && r.pass == pass && r.parent == 0) total += r.allocated;
  return total;
}
int count_calls(const std::vector<OpRecord>& rs, const std::string& op, Pass pass) {
  int n = 0;
  for (const OpRecord& r : rs)
    if (r.op == op && r.pass == pass && r.parent == 0) ++n;
  return n;
}
}  // namespace

TEST_CASE("forward, backward and double-backward bytes land on the right ops and passes") {
  Generator gen(3);
  Tensor x = randn({256}, gen).requires_grad_(true);
  Profiler::reset();
  Profiler::enable(true);
  {
    Tensor y = exp(x);
    Tensor s = sum(y);
    TensorList g = autograd::grad({s}, {x}, {}, /*create_graph=*/true);
    Tensor r = sum(mul(g[0], g[0]));
    autograd::backward(r);
  }
  Profiler::enable(false);
  const std::vector<OpRecord> rs = Profiler::records();

  CHECK(sum_allocated(rs, "exp", Pass::fwd) == 1024);
  CHECK(sum_allocated(rs, "sum", Pass::fwd) == 512);  // s and r
  CHECK(sum_allocated(rs, "mul", Pass::fwd) == 1024);  // g * g
  for (const OpRecord& r : rs)
    if (r.op == "exp") CHECK(r.saved == 1024);

  // First backward (create_graph): ExpBackward's mul. Second backward: MulBackward's two muls
  // and ExpBackward's mul again.
  CHECK(count_calls(rs, "mul", Pass::bwd) == 4);
  CHECK(sum_allocated(rs, "mul", Pass::bwd) == 4 * 1024);
  CHECK(sum_allocated(rs, "add", Pass::bwd) == 1024);  // summing the two gradients of g

  // Double backward: exactly one mul of 1024 bytes.
  CHECK(count_calls(rs, "mul", Pass::bwd2) == 1);
  CHECK(sum_allocated(rs, "mul", Pass::bwd2) == 1024);
  int64_t bwd2_total = 0;
  for (const OpRecord& r : rs)
    if (r.pass == Pass::bwd2 && r.parent == 0) bwd2_total += r.allocated;
  CHECK(bwd2_total == 1024);

  // d r / d x = d/dx sum((exp x)^2) = 2 exp(2x) accumulated into x.grad
  const auto xv = x.to_vector(), gx = x.grad().to_vector();
  for (size_t i = 0; i < xv.size(); i += 37) CHECK(gx[i] == doctest::Approx(2 * std::exp(2 * xv[i])).epsilon(1e-5));
}

TEST_CASE("a phase leaks nothing after an R1-shaped step, and repeats its addresses") {
  Generator gen(4);
  Tensor w = randn({64}, gen).requires_grad_(true);
  std::vector<const void*> first, second;
  for (int step = 0; step < 2; ++step) {
    PhaseScope phase("D_r1");
    Tensor x = randn({64}, gen).requires_grad_(true);
    Tensor d = sum(exp(mul(w, x)));
    TensorList g = autograd::grad({d}, {x}, {}, true);
    (step == 0 ? first : second).push_back(g[0].storage()->data);
    autograd::backward(sum(mul(g[0], g[0])));
    g.clear();
    x = Tensor();
    d = Tensor();
    CHECK_NOTHROW(phase.close());
  }
  CHECK(first == second);
  CHECK(w.grad().defined());
  {
    // With the profiler on, the leak report names the op that made the leaked tensor.
    Profiler::enable(true);
    PhaseScope phase("leaky");
    Tensor kept = exp(w.detach());
    CHECK_THROWS_WITH_AS(phase.close(), doctest::Contains("| exp |"), Error);
    Profiler::enable(false);
  }
}

// mpi_test.h: a tiny harness for tests that run under mpirun (tests/mpi/CMakeLists.txt).
//
// doctest does not fit here: every rank runs every test, the ranks must agree on the result (a
// check failing on one rank must fail the test on all, without leaving the others waiting in a
// collective), and the report should come once, from rank 0. So: each test is a function of the
// world communicator; MT_CHECK records failures locally (printing the rank and the values); after
// each test the failure count is summed over ranks; rank 0 prints one line per test; the process
// exits non-zero when any rank failed. An exception on one rank aborts the job with its message
// (the other ranks may be inside a collective): that is the behaviour under test in mpi_abort.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "dist/comm.h"
#include "dist/mpi_comm.h"

namespace mpi_test {

struct Context {
  engine::dist::Comm& comm;
  int failures = 0;
  void check(bool ok, const char* expr, const char* file, int line, const std::string& detail) {
    if (ok) return;
    ++failures;
    if (failures <= 20)
      std::fprintf(stderr, "[rank %d] %s:%d: check failed: %s %s\n", comm.rank(), file, line, expr, detail.c_str());
  }
};

#define MT_CHECK(ctx, cond, ...) (ctx).check(bool(cond), #cond, __FILE__, __LINE__, fmt::format("" __VA_ARGS__))

// max |a - b| / (atol + rtol |b|) <= 1 over two equally long vectors.
inline bool allclose(const std::vector<double>& a, const std::vector<double>& b, double rtol, double atol,
                     std::string* why = nullptr) {
  if (a.size() != b.size()) {
    if (why) *why = fmt::format("sizes {} vs {}", a.size(), b.size());
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (!(std::fabs(a[i] - b[i]) <= atol + rtol * std::fabs(b[i]))) {
      if (why) *why = fmt::format("element {}: {} vs {} (of {})", i, a[i], b[i], a.size());
      return false;
    }
  }
  return true;
}

using Test = std::pair<std::string, std::function<void(Context&)>>;

inline int run(int argc, char** argv, const std::vector<Test>& tests) {
  auto comm = engine::dist::make_mpi_comm(&argc, &argv);
  // Optional filter: the test names to run (argv[1..]).
  std::vector<std::string> only(argv + 1, argv + argc);
  int failed_tests = 0;
  for (const auto& [name, fn] : tests) {
    if (!only.empty() && std::find(only.begin(), only.end(), name) == only.end()) continue;
    Context ctx{*comm};
    try {
      fn(ctx);
    } catch (const std::exception& e) {
      comm->abort(fmt::format("[rank {}] test '{}' threw: {}", comm->rank(), name, e.what()), 2);
    }
    engine::Tensor f = engine::from_vector_i64({int64_t(ctx.failures)}, {1});
    comm->allreduce(f);
    const int64_t total = f.data<int64_t>()[0];
    if (total) ++failed_tests;
    if (comm->is_root()) std::printf("[np=%d] %-40s %s\n", comm->size(), name.c_str(), total ? "FAILED" : "ok");
    std::fflush(stdout);
  }
  if (comm->is_root()) std::printf("[np=%d] %d test(s) failed\n", comm->size(), failed_tests);
  return failed_tests ? 1 : 0;
}

}  // namespace mpi_test

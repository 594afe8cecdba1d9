// gpu_reduce_norm: reductions, softmax / losses and normalisation on CUDA tensors against the same
// ops on the CPU (which tests/test_reduce.cpp, test_softmax_norm.cpp and test_parity_reduce.cpp
// check against PyTorch and finite differences), forward, backward and double backward, through
// gpu_test::check_op.
//
// Covered: sum, mean, amax, amin (ties share the gradient), logsumexp, var, argmax, softmax,
// log_softmax, cross_entropy (per-row and class-chunked), layer_norm, group_norm, in f32 and f64, over several dim sets:
// all dims (empty dims), one dim, several dims, keepdim, non-contiguous inputs, and every chunking
// of tensor/cuda/chunks.h: interleaved chunks for reductions over the innermost contiguous dim
// (rows of 8, 9, 37, 100, 5000 and 140000 elements: 2, 2, 8, 16, 32 and 64 chunks, mostly not
// dividing the row; many rows; rows of views whose kept dims are strided: an outer transpose and
// a narrowed last dim), the one-thread-per-unit path for rows of fewer than 8 elements (no
// interleaved chunking ever has more chunks than a quarter of the row, so "rows shorter than C"
// cannot occur: those rows take this path), and blocked chunks for long strided reductions
// (> 4096 elements per output over few outputs). The chunk plans and the index arithmetic of
// both layouts are checked directly too (every element folded exactly once, partials combined
// in chunk order), and the chunked results are checked to be the same bits run to run. Double backward wherever the CPU has it (everything but amax/amin, whose
// gradient mask is a constant, and argmax, which has no gradient). sum over arbitrary dims is
// also exercised through sum_to by the gradient of a broadcasting mul.
//
// Tolerances (hold on a real GPU, not only in emulation): both devices accumulate sums in double
// but in different orders (16 fixed lanes on the CPU, a sequential fold per thread or chunk on the
// GPU), and the GPU's expf/exp/log may differ from glibc's in the last bit, and nvcc may contract
// a * b + c into an FMA. f32: rtol 1e-5, atol 1e-5 (atol covers gradients that cancel to ~0);
// f64: rtol 1e-11, atol 1e-12. argmax is compared exactly.
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <tuple>
#include <vector>

#include "gpu_fixtures.h"
#include "tensor/cuda/chunks.h"
#include "tensor/error.h"

using namespace engine;
using gpu_test::check_op;
using gpu_test::kGpu;

namespace {

struct Tol {
  double rtol, atol;
};
Tol tol_of(DType dt) { return dt == DType::f32 ? Tol{1e-5, 1e-5} : Tol{1e-11, 1e-12}; }

Tensor input(const Dims& shape, DType dt, uint64_t seed, bool grad = true) {
  Generator gen(seed);
  Tensor t = randn(shape, gen, opts(dt));
  if (grad) t.requires_grad_(true);
  return t;
}

// Values on a coarse grid (k / 2 for small integers k), so that maxima tie often.
Tensor tied_input(const Dims& shape, DType dt, uint64_t seed) {
  Generator gen(seed);
  const std::vector<double> v = randn(shape, gen, opts(DType::f64)).to_vector();
  std::vector<double> q(v.size());
  for (size_t i = 0; i < v.size(); ++i) q[i] = std::round(v[i] * 1.5) / 2.0;
  Tensor t = from_vector(q, shape, opts(dt));
  t.requires_grad_(true);
  return t;
}

// How a case presents its input to the op.
enum class View {
  none,
  transposed,        // transpose(x, 0, -1): the innermost dim becomes strided
  outer_transposed,  // transpose(x, 0, 1): kept dims strided, the innermost dim still contiguous
  narrowed,          // narrow(x, -1, 1, n - 2): contiguous rows that do not abut
};

const char* view_name(View v) {
  switch (v) {
    case View::none: return "";
    case View::transposed: return " transposed";
    case View::outer_transposed: return " outer-transposed";
    case View::narrowed: return " narrowed";
  }
  return "";
}

Tensor view_of(const Tensor& x, View v) {
  switch (v) {
    case View::none: return x;
    case View::transposed: return transpose(x, 0, -1);
    case View::outer_transposed: return transpose(x, 0, 1);
    case View::narrowed: return narrow(x, -1, 1, x.size(-1) - 2);
  }
  return x;
}

std::string name_of(const char* op, DType dt, const Dims& shape, const Dims& dims, bool keepdim, View view) {
  return std::string(op) + " " + dtype_name(dt) + " shape " + shape.str() + " dims " +
         (dims.empty() ? std::string("all") : dims.str()) + (keepdim ? " keepdim" : "") + view_name(view);
}

struct ReduceCase {
  Dims shape, dims;
  bool keepdim;
  View view;
};

const std::vector<ReduceCase>& reduce_cases() {
  static const std::vector<ReduceCase> cases = {
      {{2, 3, 4}, {}, false, View::none},              // all dims (24 contiguous: 4 interleaved chunks)
      {{2, 3, 4}, {1}, false, View::none},             // one middle dim
      {{2, 3, 4}, {0, 2}, true, View::none},           // several dims, keepdim
      {{2, 3, 4}, {-1}, false, View::transposed},      // innermost dim of a transposed view
      {{3, 4, 5}, {0, 1}, false, View::transposed},    // several dims of a transposed view
      {{4, 5}, {0, 1}, true, View::none},              // every dim named explicitly
      {{5}, {0}, false, View::none},                   // 1-D, 5 elements: one thread per output
      {{6, 7}, {1}, false, View::none},                // rows of 7 < 8: one thread per output
      {{5, 8}, {1}, false, View::none},                // rows of 8: 2 interleaved chunks
      {{7, 9}, {-1}, true, View::none},                // 2 chunks not dividing the row
      {{30, 37}, {1}, false, View::none},              // 8 chunks, 37 = 4 * 8 + 5
      {{3, 100}, {-1}, false, View::none},             // 16 chunks, 100 = 6 * 16 + 4
      {{4, 3, 37}, {-1}, false, View::outer_transposed},  // contiguous rows, strided kept dims
      {{4, 39}, {1}, false, View::narrowed},           // rows of 37 at a row stride of 39
      {{3, 5000}, {1}, false, View::none},             // long rows: 32 interleaved chunks
      {{2, 140000}, {1}, false, View::none},           // very long rows: 64 chunks of <= 4096
      {{20000, 9}, {-1}, false, View::none},           // many short rows
      {{70, 80}, {}, false, View::none},               // full reduction of 5600 contiguous elements
      {{6000, 3}, {0}, true, View::none},              // long strided reduction: blocked chunks
      {{2, 4500, 2}, {1}, false, View::transposed},    // blocked chunks over a transposed view
  };
  return cases;
}

// Applies the case's view to x, then op.
template <typename Op>
std::function<Tensor(const std::vector<Tensor>&)> with_view(const ReduceCase& c, Op op) {
  return [c, op](const std::vector<Tensor>& in) { return op(view_of(in[0], c.view)); };
}

}  // namespace

TEST_CASE("sum, mean, logsumexp and var on CUDA match the CPU (forward, backward, double backward)") {
  if (gpu_test::no_device()) return;
  for (DType dt : {DType::f32, DType::f64}) {
    const Tol t = tol_of(dt);
    uint64_t seed = 10;
    for (const ReduceCase& c : reduce_cases()) {
      const Dims dims = c.dims;
      const bool kd = c.keepdim;
      // The long cases skip the double backward (slow in the emulated build; same kernels).
      const bool second = c.shape.product() < 4096;
      check_op(name_of("sum", dt, c.shape, dims, kd, c.view), {input(c.shape, dt, ++seed)},
               with_view(c, [=](const Tensor& x) { return sum(x, dims, kd); }), t.rtol, t.atol, second);
      check_op(name_of("mean", dt, c.shape, dims, kd, c.view), {input(c.shape, dt, ++seed)},
               with_view(c, [=](const Tensor& x) { return mean(x, dims, kd); }), t.rtol, t.atol, second);
      check_op(name_of("logsumexp", dt, c.shape, dims, kd, c.view), {input(c.shape, dt, ++seed)},
               with_view(c, [=](const Tensor& x) { return logsumexp(x, dims, kd); }), t.rtol, t.atol, second);
      check_op(name_of("var", dt, c.shape, dims, kd, c.view), {input(c.shape, dt, ++seed)},
               with_view(c, [=](const Tensor& x) { return var(x, dims, 1, kd); }), t.rtol, t.atol, second);
      check_op(name_of("var correction 0", dt, c.shape, dims, kd, c.view), {input(c.shape, dt, ++seed)},
               with_view(c, [=](const Tensor& x) { return var(x, dims, 0, kd); }), t.rtol, t.atol, false);
    }
  }
}

TEST_CASE("amax and amin on CUDA match the CPU, ties sharing the gradient") {
  if (gpu_test::no_device()) return;
  for (DType dt : {DType::f32, DType::f64}) {
    const Tol t = tol_of(dt);
    uint64_t seed = 100;
    for (const ReduceCase& c : reduce_cases()) {
      const Dims dims = c.dims;
      const bool kd = c.keepdim;
      check_op(name_of("amax", dt, c.shape, dims, kd, c.view), {tied_input(c.shape, dt, ++seed)},
               with_view(c, [=](const Tensor& x) { return amax(x, dims, kd); }), t.rtol, t.atol);
      check_op(name_of("amin", dt, c.shape, dims, kd, c.view), {tied_input(c.shape, dt, ++seed)},
               with_view(c, [=](const Tensor& x) { return amin(x, dims, kd); }), t.rtol, t.atol);
    }
  }
  // Ties, checked by value: the maximum 2 appears twice in the row, each copy gets half.
  Tensor x = from_vector({2, 1, 2, 0}, {1, 4}, opts(DType::f32, kGpu));
  x.requires_grad_(true);
  Tensor y = amax(x, {1});
  const TensorList g = autograd::grad({y}, {x}, {full({1}, 1.0, opts(DType::f32, kGpu))});
  CHECK(g[0].to(Device::cpu()).to_vector() == std::vector<double>{0.5, 0, 0.5, 0});
}

TEST_CASE("NaN propagates through amax on CUDA as on the CPU") {
  if (gpu_test::no_device()) return;
  const Tensor x = from_vector({1, NAN, 3, 4, 5, 6}, {2, 3});
  const Tensor g = amax(x.to(kGpu), {1}).to(Device::cpu());
  const std::vector<double> v = g.to_vector();
  CHECK(std::isnan(v[0]));
  CHECK(v[1] == 6);
}

TEST_CASE("argmax on CUDA equals the CPU (first maximum, NaN counts as the maximum)") {
  if (gpu_test::no_device()) return;
  for (DType dt : {DType::f32, DType::f64}) {
    for (const ReduceCase& c : reduce_cases()) {
      const Tensor xc = tied_input(c.shape, dt, 7).detach();
      const Tensor view_c = view_of(xc, c.view);
      const Tensor view_g = view_of(xc.to(kGpu), c.view);
      for (int64_t d = 0; d < view_c.dim(); ++d) {
        CAPTURE(name_of("argmax", dt, c.shape, {d}, c.keepdim, c.view));
        const Tensor a = argmax(view_g, d, c.keepdim);
        CHECK(a.device().is_cuda());
        gpu_test::check_equal("argmax", a, argmax(view_c, d, c.keepdim));
      }
    }
  }
  const Tensor nan_row = from_vector({1, 7, NAN, 7, 2, 9, 9, 1}, {2, 4});
  gpu_test::check_equal("argmax with NaN and ties", argmax(nan_row.to(kGpu), 1), argmax(nan_row, 1));
  const Tensor ints = from_vector({3, 1, 4, 1, 5, 9, 2, 6}, {2, 4}, opts(DType::i64));
  gpu_test::check_equal("argmax of i64", argmax(ints.to(kGpu), 0), argmax(ints, 0));
}

TEST_CASE("empty reductions on CUDA follow the CPU") {
  if (gpu_test::no_device()) return;
  const Tensor x = zeros({3, 0, 2});
  gpu_test::check_equal("sum over an empty dim", sum(x.to(kGpu), {1}), sum(x, {1}));
  const Tensor m_gpu = mean(x.to(kGpu), {1}).to(Device::cpu());
  for (double v : m_gpu.to_vector()) CHECK(std::isnan(v));
  CHECK(sum(zeros({0, 4}).to(kGpu), {0}).to(Device::cpu()).to_vector() == std::vector<double>(4, 0.0));
  CHECK_THROWS_WITH_AS(amax(x.to(kGpu), {1}), doctest::Contains("cannot reduce over an empty dimension"), Error);
}

TEST_CASE("sum_to (the gradient of broadcasting) on CUDA matches the CPU") {
  if (gpu_test::no_device()) return;
  for (DType dt : {DType::f32, DType::f64}) {
    const Tol t = tol_of(dt);
    check_op(std::string("broadcast mul ") + dtype_name(dt), {input({4, 1, 5}, dt, 1), input({3, 1}, dt, 2)},
             [](const std::vector<Tensor>& in) { return mul(in[0], in[1]); }, t.rtol, t.atol, true);
    check_op(std::string("broadcast add, long ") + dtype_name(dt), {input({5000, 2}, dt, 3), input({2}, dt, 4)},
             [](const std::vector<Tensor>& in) { return add(in[0], in[1]); }, t.rtol, t.atol);
  }
}

TEST_CASE("softmax and log_softmax on CUDA match the CPU") {
  if (gpu_test::no_device()) return;
  for (DType dt : {DType::f32, DType::f64}) {
    const Tol t = tol_of(dt);
    struct Case {
      Dims shape;
      int64_t dim;
      View view;
    };
    const std::vector<Case> cases = {
        {{4, 7}, 1, View::none},               // lines of 7: one thread per line
        {{4, 7}, 0, View::none},               // strided lines
        {{2, 3, 5}, 1, View::none},            // strided lines of 3
        {{2, 3, 5}, -1, View::transposed},     // strided lines of 2
        {{3, 6}, 0, View::transposed},         // contiguous lines of 6 (< 8): one thread per line
        {{5, 9}, 1, View::none},               // 2 interleaved chunks
        {{3, 100}, -1, View::none},            // 16 interleaved chunks
        {{4, 3, 37}, -1, View::outer_transposed},  // 8 chunks, contiguous lines, strided line starts
        {{4, 39}, 1, View::narrowed},          // lines of 37 at a line stride of 39
        {{2, 5000}, 1, View::none},           // long lines: 32 interleaved chunks
        {{1, 140000}, 1, View::none},         // 64 interleaved chunks
        {{20000, 9}, 1, View::none},          // many short lines
        {{6000, 2}, 0, View::none},           // long strided lines: blocked chunks
        {{3, 4500}, 0, View::transposed}};    // blocked chunks of a transposed view
    uint64_t seed = 200;
    for (const Case& c : cases) {
      for (bool log : {false, true}) {
        const int64_t dim = c.dim;
        const View view = c.view;
        auto f = [=](const std::vector<Tensor>& in) {
          const Tensor x = view_of(in[0], view);
          return log ? log_softmax(x, dim) : softmax(x, dim);
        };
        const std::string what = name_of(log ? "log_softmax" : "softmax", dt, c.shape, {dim}, false, view);
        const Tensor x = input(c.shape, dt, ++seed);
        check_op(what + " (fused backward)", {x}, f, t.rtol, t.atol, false);
        check_op(what + " (composite backward, double backward)", {x}, f, t.rtol, t.atol, true);
      }
    }
  }
}

TEST_CASE("cross_entropy on CUDA matches the CPU") {
  if (gpu_test::no_device()) return;
  for (DType dt : {DType::f32, DType::f64}) {
    const Tol t = tol_of(dt);
    const Tensor target = from_vector({2, 0, 4, 4, 1, 3}, {6}, opts(DType::i64));
    check_op(std::string("cross_entropy ") + dtype_name(dt), {input({6, 5}, dt, 300), target},
             [](const std::vector<Tensor>& in) { return cross_entropy(in[0], in[1]); }, t.rtol, t.atol, false);
    check_op(std::string("cross_entropy double backward ") + dtype_name(dt), {input({6, 5}, dt, 301), target},
             [](const std::vector<Tensor>& in) { return cross_entropy(in[0], in[1]); }, t.rtol, t.atol, true);
    // Logits as a transposed view (class stride != 1).
    check_op(std::string("cross_entropy transposed ") + dtype_name(dt), {input({5, 6}, dt, 302), target},
             [](const std::vector<Tensor>& in) { return cross_entropy(transpose(in[0], 0, 1), in[1]); }, t.rtol,
             t.atol, true);
  }
  // Classes contiguous, 8 or more of them: interleaved chunks over each row's classes (2, 8, 32
  // and 64 chunks; many rows; rows of a narrowed view, whose row stride exceeds the class count).
  struct CeCase {
    int64_t rows, classes;
    bool narrowed, second;
  };
  for (DType dt : {DType::f32, DType::f64}) {
    const Tol t = tol_of(dt);
    for (const CeCase& c : std::vector<CeCase>{{5, 9, false, true},
                                               {6, 37, false, true},
                                               {4, 37, true, true},
                                               {3, 5000, false, false},
                                               {1, 140000, false, false},
                                               {20000, 9, false, false}}) {
      std::vector<double> tv(size_t(c.rows));
      for (int64_t r = 0; r < c.rows; ++r) tv[size_t(r)] = double((r * 7 + 3) % c.classes);
      const Tensor target = from_vector(tv, {c.rows}, opts(DType::i64));
      const Dims shape{c.rows, c.narrowed ? c.classes + 2 : c.classes};
      const bool narrowed = c.narrowed;
      check_op(std::string("cross_entropy ") + dtype_name(dt) + " shape " + shape.str() + (narrowed ? " narrowed" : ""),
               {input(shape, dt, 303 + uint64_t(c.classes)), target},
               [narrowed](const std::vector<Tensor>& in) {
                 const Tensor x = narrowed ? narrow(in[0], 1, 1, in[0].size(1) - 2) : in[0];
                 return cross_entropy(x, in[1]);
               },
               t.rtol, t.atol, c.second);
    }
  }
  const Tensor bad = from_vector({0, 5}, {2}, opts(DType::i64)).to(kGpu);
  CHECK_THROWS_WITH_AS(cross_entropy(zeros({2, 5}).to(kGpu), bad), doctest::Contains("target 5 out of range"),
                       Error);
}

TEST_CASE("layer_norm and group_norm on CUDA match the CPU") {
  if (gpu_test::no_device()) return;
  for (DType dt : {DType::f32, DType::f64}) {
    const Tol t = tol_of(dt);
    for (bool second : {false, true}) {  // fused first-order backward / composite with double backward
      const std::string order = second ? " (double backward)" : " (fused backward)";
      check_op(std::string("layer_norm affine ") + dtype_name(dt) + order,
               {input({3, 4, 6}, dt, 400), input({4, 6}, dt, 401), input({4, 6}, dt, 402)},
               [](const std::vector<Tensor>& in) { return layer_norm(in[0], {4, 6}, in[1], in[2]); }, t.rtol, t.atol,
               second);
      check_op(std::string("layer_norm plain, transposed input ") + dtype_name(dt) + order, {input({5, 3}, dt, 403)},
               [](const std::vector<Tensor>& in) { return layer_norm(transpose(in[0], 0, 1), {5}); }, t.rtol, t.atol,
               second);
      check_op(std::string("layer_norm weight only ") + dtype_name(dt) + order,
               {input({7, 8}, dt, 404), input({8}, dt, 405)},
               [](const std::vector<Tensor>& in) { return layer_norm(in[0], {8}, in[1], Tensor(), 1e-3); }, t.rtol,
               t.atol, second);
      check_op(std::string("group_norm affine ") + dtype_name(dt) + order,
               {input({2, 6, 3, 4}, dt, 406), input({6}, dt, 407), input({6}, dt, 408)},
               [](const std::vector<Tensor>& in) { return group_norm(in[0], 3, in[1], in[2]); }, t.rtol, t.atol,
               second);
      check_op(std::string("group_norm plain, transposed input ") + dtype_name(dt) + order,
               {input({5, 4, 2}, dt, 409)},
               [](const std::vector<Tensor>& in) { return group_norm(transpose(in[0], 0, 2), 2); }, t.rtol, t.atol,
               second);
    }
    // Long rows over few of them: statistics and dx in chunks (both ops, with and without affine).
    for (bool second : {false, true}) {
      check_op(std::string("layer_norm long rows ") + dtype_name(dt),
               {input({2, 5000}, dt, 413), input({5000}, dt, 414), input({5000}, dt, 415)},
               [](const std::vector<Tensor>& in) { return layer_norm(in[0], {5000}, in[1], in[2]); }, t.rtol, t.atol,
               second);
      check_op(std::string("layer_norm long rows, weight only ") + dtype_name(dt),
               {input({2, 5000}, dt, 416), input({5000}, dt, 417)},
               [](const std::vector<Tensor>& in) { return layer_norm(in[0], {5000}, in[1]); }, t.rtol, t.atol, second);
      check_op(std::string("group_norm long rows ") + dtype_name(dt),
               {input({2, 4, 3000}, dt, 418), input({4}, dt, 419), input({4}, dt, 420)},
               [](const std::vector<Tensor>& in) { return group_norm(in[0], 2, in[1], in[2]); }, t.rtol, t.atol,
               second);
      check_op(std::string("group_norm long rows plain ") + dtype_name(dt), {input({1, 2, 4500}, dt, 421)},
               [](const std::vector<Tensor>& in) { return group_norm(in[0], 1); }, t.rtol, t.atol, second);
    }
    // Row lengths around the interleaved chunk counts (chunks.h): 5 (one thread per row), 8 and 9
    // (2 chunks), 37 (8 chunks), many rows of 9, and 140000 (64 chunks of <= 4096).
    for (int64_t k : {5, 8, 9, 37}) {
      check_op(std::string("layer_norm rows of ") + std::to_string(k) + " " + dtype_name(dt),
               {input({6, k}, dt, 430 + uint64_t(k)), input({k}, dt, 431), input({k}, dt, 432)},
               [k](const std::vector<Tensor>& in) { return layer_norm(in[0], {k}, in[1], in[2]); }, t.rtol, t.atol,
               true);
    }
    check_op(std::string("group_norm rows of 37 ") + dtype_name(dt), {input({3, 2, 37}, dt, 433)},
             [](const std::vector<Tensor>& in) { return group_norm(in[0], 2); }, t.rtol, t.atol, true);
    check_op(std::string("layer_norm many rows of 9 ") + dtype_name(dt),
             {input({20000, 9}, dt, 434), input({9}, dt, 435), input({9}, dt, 436)},
             [](const std::vector<Tensor>& in) { return layer_norm(in[0], {9}, in[1], in[2]); }, t.rtol, t.atol);
    check_op(std::string("layer_norm very long rows ") + dtype_name(dt),
             {input({1, 140000}, dt, 437), input({140000}, dt, 438), input({140000}, dt, 439)},
             [](const std::vector<Tensor>& in) { return layer_norm(in[0], {140000}, in[1], in[2]); }, t.rtol, t.atol);
    // Many rows: layer_norm's column sums take several row chunks.
    check_op(std::string("layer_norm many rows ") + dtype_name(dt),
             {input({2500, 3}, dt, 410), input({3}, dt, 411), input({3}, dt, 412)},
             [](const std::vector<Tensor>& in) { return layer_norm(in[0], {3}, in[1], in[2]); }, t.rtol, t.atol);
  }
}

TEST_CASE("chunk plans: interleaved for contiguous units, blocked for long strided ones") {
  using engine::cuda::Chunks;
  using engine::cuda::plan_chunks;
  struct Want {
    int64_t units, len;
    bool contiguous;
    int64_t n_chunks;
    bool interleaved;
  };
  // C is the largest of 32, 16, ..., 2 with at least 4 elements per chunk; above 32 * 4096 a
  // multiple of 32 with at most 4096 per chunk; strided units > 4096 over < 16384 units: blocked.
  for (const Want& w : std::vector<Want>{{10, 7, true, 1, false},
                                         {10, 8, true, 2, true},
                                         {10, 15, true, 2, true},
                                         {10, 16, true, 4, true},
                                         {10, 37, true, 8, true},
                                         {10, 100, true, 16, true},
                                         {100000, 128, true, 32, true},
                                         {1, 32 * 4096, true, 32, true},
                                         {1, 32 * 4096 + 1, true, 64, true},
                                         {1, 140000, true, 64, true},
                                         {3, 5000, false, 2, false},
                                         {3, 4096, false, 1, false},
                                         {20000, 5000, false, 1, false},
                                         {10, 100, false, 1, false}}) {
    CAPTURE(w.units);
    CAPTURE(w.len);
    CAPTURE(w.contiguous);
    const Chunks ch = plan_chunks(w.units, w.len, w.contiguous);
    CHECK(ch.n_chunks == w.n_chunks);
    CHECK(ch.interleaved == (w.n_chunks > 1 && w.interleaved));
  }
}

TEST_CASE("chunk spans fold every element once; partials combine in chunk order") {
  using namespace engine::cuda;
  for (const auto& [units, len, contiguous] :
       std::vector<std::tuple<int64_t, int64_t, bool>>{{3, 9, true}, {5, 37, true}, {2, 140000, true},
                                                       {2, 9000, false}, {3, 4097, false}}) {
    const Chunks ch = plan_chunks(units, len, contiguous);
    REQUIRE(ch.n_chunks > 1);
    CAPTURE(units);
    CAPTURE(len);
    std::vector<int> seen(size_t(units * len), 0);
    std::vector<int64_t> slot_of_thread(size_t(units * ch.n_chunks), -1);
    for (int64_t i = 0; i < units * ch.n_chunks; ++i) {
      const ChunkSpan sp = chunk_span(ch, i);
      REQUIRE(sp.unit >= 0);
      REQUIRE(sp.unit < units);
      for (int64_t j = sp.begin; j < sp.end; j += sp.step) ++seen[size_t(sp.unit * len + j)];
      // Interleaved: neighbouring threads of a unit start at neighbouring elements.
      if (ch.interleaved) CHECK(sp.begin == i % ch.n_chunks);
    }
    CHECK(std::count(seen.begin(), seen.end(), 1) == int64_t(seen.size()));
    // Each thread's partial part[i] = i; combining unit u must visit the slots of its chunks
    // 0, 1, ..., n_chunks - 1 in that order, and these must be exactly the threads of unit u.
    std::vector<int64_t> part(size_t(units * ch.n_chunks));
    for (size_t i = 0; i < part.size(); ++i) part[i] = int64_t(i);
    for (int64_t u = 0; u < units; ++u) {
      std::vector<int64_t> order;
      const auto record = [&order](int64_t a, int64_t b) {
        if (order.empty()) order.push_back(a);
        order.push_back(b);
        return b;
      };
      combine_chunks(ch, part.data(), u, record);
      REQUIRE(int64_t(order.size()) == ch.n_chunks);
      for (int64_t c = 0; c < ch.n_chunks; ++c) {
        const ChunkSpan sp = chunk_span(ch, order[size_t(c)]);
        CHECK(sp.unit == u);
        // chunk c's first element: c (interleaved) or c * chunk_len (blocked)
        CHECK(sp.begin == (ch.interleaved ? c : c * ch.chunk_len));
      }
    }
  }
}

TEST_CASE("chunked reductions on CUDA give the same bits run to run") {
  if (gpu_test::no_device()) return;
  const Tensor x = input({3, 140000}, DType::f32, 500, false).to(kGpu);
  const Tensor rows = input({20000, 37}, DType::f32, 501, false).to(kGpu);
  gpu_test::check_equal("sum", sum(x, {1}), sum(x, {1}).to(Device::cpu()));
  gpu_test::check_equal("var", var(rows, {1}, 1), var(rows, {1}, 1).to(Device::cpu()));
  gpu_test::check_equal("softmax", softmax(x, 1), softmax(x, 1).to(Device::cpu()));
  gpu_test::check_equal("layer_norm", layer_norm(rows, {37}), layer_norm(rows, {37}).to(Device::cpu()));
}

// Linear algebra: matmul (NumPy semantics: 1-D operands, broadcast batch dims), bmm, linear.
// Forward values are compared with a naive triple loop over host copies (std:: arithmetic in
// double); gradients with gradcheck and gradgradcheck (f64), including non-contiguous operands
// (transposed views reach BLAS as transpose flags, sliced ones with a leading dimension or copied).
#include <doctest/doctest.h>

#include <cmath>

#include "autograd/engine.h"
#include "autograd/gradcheck.h"
#include "tensor/ops.h"

using namespace engine;
using namespace engine::autograd;

namespace {

Tensor rnd(const Dims& shape, uint64_t seed, DType t = DType::f64) {
  Generator gen(seed);
  return randn(shape, gen, opts(t));
}
Tensor leaf(const Dims& shape, uint64_t seed) { return rnd(shape, seed).requires_grad_(true); }

// Element of a host copy in row-major order, by multi-index.
double at(const std::vector<double>& v, const Dims& shape, std::initializer_list<int64_t> idx) {
  int64_t off = 0, d = 0;
  for (int64_t i : idx) off = off * shape[int(d++)] + i;
  return v[size_t(off)];
}

// Naive batched product: a [B, n, k] x b [B, k, m] given as host vectors (b_batch 1 = shared).
std::vector<double> naive_bmm(const std::vector<double>& a, const std::vector<double>& b, int64_t batch, int64_t n,
                              int64_t k, int64_t m, bool a_shared = false, bool b_shared = false) {
  std::vector<double> c(size_t(batch * n * m), 0.0);
  for (int64_t p = 0; p < batch; ++p)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < m; ++j) {
        double s = 0;
        for (int64_t q = 0; q < k; ++q)
          s += a[size_t((a_shared ? 0 : p) * n * k + i * k + q)] * b[size_t((b_shared ? 0 : p) * k * m + q * m + j)];
        c[size_t(p * n * m + i * m + j)] = s;
      }
  return c;
}

void check_close(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(tol).scale(1.0));
}

}  // namespace

TEST_CASE("matmul 2-D matches a naive product, f64 and f32") {
  for (DType t : {DType::f64, DType::f32}) {
    Tensor a = rnd({5, 7}, 1, t), b = rnd({7, 3}, 2, t);
    Tensor c = matmul(a, b);
    CHECK(c.sizes() == Dims{5, 3});
    CHECK(c.dtype() == t);
    check_close(c.to_vector(), naive_bmm(a.to_vector(), b.to_vector(), 1, 5, 7, 3), t == DType::f64 ? 1e-12 : 1e-5);
  }
}

TEST_CASE("matmul with non-contiguous operands: transposed, row-sliced, column-stepped") {
  Tensor base_a = rnd({7, 5}, 3), base_b = rnd({3, 12}, 4);
  Tensor a = transpose(base_a, 0, 1);             // [5, 7], column-major: transpose flag
  Tensor b_rows = narrow(transpose(rnd({9, 7}, 5), 0, 1), 1, 2, 3);  // [7, 3] column-major with offset
  Tensor b_ld = narrow(rnd({7, 10}, 6), 1, 4, 3);  // [7, 3] row-major with ld 10
  Tensor b_step = slice(base_b, 1, 0, 12, 4);      // [3, 3] with column stride 4: copied
  CHECK_FALSE(a.is_contiguous());
  CHECK_FALSE(b_ld.is_contiguous());
  const auto av = contiguous(a).to_vector();
  check_close(matmul(a, b_rows).to_vector(), naive_bmm(av, contiguous(b_rows).to_vector(), 1, 5, 7, 3), 1e-12);
  check_close(matmul(a, b_ld).to_vector(), naive_bmm(av, contiguous(b_ld).to_vector(), 1, 5, 7, 3), 1e-12);
  Tensor a3 = narrow(a, 1, 0, 3);  // [5, 3]
  check_close(matmul(a3, b_step).to_vector(),
              naive_bmm(contiguous(a3).to_vector(), contiguous(b_step).to_vector(), 1, 5, 3, 3), 1e-12);
  // A broadcast (stride 0) row as the left operand: BLAS cannot read it as is, it is copied.
  Tensor row = expand(rnd({1, 7}, 7), {4, 7});
  check_close(matmul(row, b_ld).to_vector(),
              naive_bmm(contiguous(row).to_vector(), contiguous(b_ld).to_vector(), 1, 4, 7, 3), 1e-12);
}

TEST_CASE("matmul 1-D operands follow NumPy") {
  Tensor u = rnd({4}, 10), v = rnd({4}, 11), m = rnd({4, 3}, 12), mt = rnd({3, 4}, 13), bm = rnd({2, 4, 3}, 14);
  const auto uv = u.to_vector(), vv = v.to_vector();
  Tensor d = matmul(u, v);  // dot product, 0-D
  CHECK(d.dim() == 0);
  double dot = 0;
  for (int i = 0; i < 4; ++i) dot += uv[size_t(i)] * vv[size_t(i)];
  CHECK(d.item() == doctest::Approx(dot).epsilon(1e-12));

  Tensor um = matmul(u, m);  // [4] x [4, 3] -> [3]
  CHECK(um.sizes() == Dims{3});
  check_close(um.to_vector(), naive_bmm(uv, m.to_vector(), 1, 1, 4, 3), 1e-12);
  Tensor mu = matmul(mt, u);  // [3, 4] x [4] -> [3]
  CHECK(mu.sizes() == Dims{3});
  check_close(mu.to_vector(), naive_bmm(mt.to_vector(), uv, 1, 3, 4, 1), 1e-12);
  Tensor ub = matmul(u, bm);  // [4] x [2, 4, 3] -> [2, 3]
  CHECK(ub.sizes() == Dims{2, 3});
  check_close(ub.to_vector(), naive_bmm(uv, bm.to_vector(), 2, 1, 4, 3, /*a_shared=*/true), 1e-12);
  Tensor bu = matmul(transpose(bm, 1, 2), rnd({4}, 15));  // [2, 3, 4] x [4] -> [2, 3]
  CHECK(bu.sizes() == Dims{2, 3});
}

TEST_CASE("matmul broadcasts batch dims, and folds a shared right operand into one GEMM") {
  // [2, 1, 3, 4] x [5, 4, 2] -> [2, 5, 3, 2]
  Tensor a = rnd({2, 1, 3, 4}, 20), b = rnd({5, 4, 2}, 21);
  Tensor c = matmul(a, b);
  CHECK(c.sizes() == Dims{2, 5, 3, 2});
  const auto av = a.to_vector(), bv = b.to_vector(), cv = c.to_vector();
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 5; ++j)
      for (int64_t r = 0; r < 3; ++r)
        for (int64_t s = 0; s < 2; ++s) {
          double want = 0;
          for (int64_t q = 0; q < 4; ++q) want += at(av, {2, 1, 3, 4}, {i, 0, r, q}) * at(bv, {5, 4, 2}, {j, q, s});
          CHECK(at(cv, {2, 5, 3, 2}, {i, j, r, s}) == doctest::Approx(want).epsilon(1e-12));
        }
  // [3, 2, 4] x [4, 5]: the batch folds into the rows (contiguous a) ...
  Tensor a3 = rnd({3, 2, 4}, 22), w = rnd({4, 5}, 23);
  check_close(matmul(a3, w).to_vector(), naive_bmm(a3.to_vector(), w.to_vector(), 3, 2, 4, 5, false, true), 1e-12);
  // ... and a permuted batch that cannot fold still gives the same numbers.
  Tensor ap = permute(rnd({2, 3, 4}, 24), {1, 0, 2});  // [3, 2, 4], batch stride 4, row stride 12
  check_close(matmul(ap, w).to_vector(),
              naive_bmm(contiguous(ap).to_vector(), w.to_vector(), 3, 2, 4, 5, false, true), 1e-12);
  // A 2-D left operand shared by a batch on the right.
  Tensor l = rnd({2, 4}, 25), rb = rnd({3, 4, 5}, 26);
  check_close(matmul(l, rb).to_vector(), naive_bmm(l.to_vector(), rb.to_vector(), 3, 2, 4, 5, true, false), 1e-12);
}

TEST_CASE("many small batched products run in parallel with the same result as one by one") {
  // 64 products of 16 x 32 x 16: each on one BLAS thread, together enough for OpenMP.
  Tensor a = rnd({64, 16, 32}, 30, DType::f32), b = rnd({64, 32, 16}, 31, DType::f32);
  Tensor c = bmm(a, b);
  const auto av = a.to_vector(), bv = b.to_vector();
  check_close(c.to_vector(), naive_bmm(av, bv, 64, 16, 32, 16), 1e-5);
  for (int64_t i = 0; i < 64; i += 21) {
    Tensor ci = matmul(select(a, 0, i), select(b, 0, i));
    const auto got = select(c, 0, i).to_vector(), want = ci.to_vector();
    for (size_t e = 0; e < want.size(); ++e) CHECK(got[e] == want[e]);  // bitwise: same GEMM per item
  }
}

TEST_CASE("linear = x W^T + b, batched, 1-D and with a transposed weight") {
  Tensor x = rnd({2, 3, 4}, 40), w = rnd({5, 4}, 41), b = rnd({5}, 42);
  Tensor y = linear(x, w, b);
  CHECK(y.sizes() == Dims{2, 3, 5});
  const auto xv = x.to_vector(), wv = w.to_vector(), bv = b.to_vector(), yv = y.to_vector();
  for (int64_t r = 0; r < 6; ++r)
    for (int64_t o = 0; o < 5; ++o) {
      double want = bv[size_t(o)];
      for (int64_t q = 0; q < 4; ++q) want += xv[size_t(r * 4 + q)] * wv[size_t(o * 4 + q)];
      CHECK(yv[size_t(r * 5 + o)] == doctest::Approx(want).epsilon(1e-12));
    }
  // No bias; a 1-D input; a weight that is itself a transposed view; a non-contiguous input.
  check_close(linear(x, w).to_vector(), matmul(x, transpose(w, 0, 1)).to_vector(), 1e-12);
  Tensor x1 = rnd({4}, 43);
  Tensor y1 = linear(x1, w, b);
  CHECK(y1.sizes() == Dims{5});
  check_close(y1.to_vector(), add(matmul(w, x1), b).to_vector(), 1e-12);
  Tensor wt = transpose(rnd({4, 5}, 44), 0, 1);
  check_close(linear(x, wt, b).to_vector(), linear(x, contiguous(wt), b).to_vector(), 1e-12);
  Tensor xp = permute(rnd({3, 2, 4}, 45), {1, 0, 2});
  check_close(linear(xp, w, b).to_vector(), linear(contiguous(xp), w, b).to_vector(), 1e-12);
}

TEST_CASE("gradcheck and gradgradcheck: matmul, bmm, linear") {
  SUBCASE("2-D") {
    TensorList in = {leaf({3, 4}, 50), leaf({4, 2}, 51)};
    auto f = [](const TensorList& v) { return matmul(v[0], v[1]); };
    CHECK(gradcheck(f, in) == "");
    CHECK(gradgradcheck(f, in) == "");
  }
  SUBCASE("broadcast batch dims") {
    TensorList in = {leaf({2, 1, 3, 4}, 52), leaf({3, 4, 2}, 53)};
    auto f = [](const TensorList& v) { return matmul(v[0], v[1]); };
    CHECK(gradcheck(f, in) == "");
    CHECK(gradgradcheck(f, in) == "");
  }
  SUBCASE("batched left, shared 2-D right (folded GEMM and folded weight gradient)") {
    TensorList in = {leaf({2, 3, 4}, 54), leaf({4, 2}, 55)};
    auto f = [](const TensorList& v) { return matmul(v[0], v[1]); };
    CHECK(gradcheck(f, in) == "");
    CHECK(gradgradcheck(f, in) == "");
  }
  SUBCASE("1-D operands") {
    TensorList in = {leaf({4}, 56), leaf({2, 4, 3}, 57), leaf({3}, 58)};
    auto f = [](const TensorList& v) { return matmul(matmul(v[0], v[1]), v[2]); };  // [4]x[2,4,3] -> [2,3] x [3]
    CHECK(gradcheck(f, in) == "");
    CHECK(gradgradcheck(f, in) == "");
    TensorList dot_in = {leaf({5}, 59), leaf({5}, 60)};
    auto fd = [](const TensorList& v) { return matmul(v[0], v[1]); };
    CHECK(gradcheck(fd, dot_in) == "");
    CHECK(gradgradcheck(fd, dot_in) == "");
  }
  SUBCASE("non-contiguous operands") {
    TensorList in = {leaf({4, 3}, 61), leaf({2, 6}, 62)};
    // a^T [3, 4] (a transposed view) times a [4, 2] column-stepped slice of b reshaped to [4, 3]
    auto f = [](const TensorList& v) {
      Tensor bt = reshape(v[1], {4, 3});
      return matmul(transpose(v[0], 0, 1), slice(bt, 1, 0, 3, 2));
    };
    CHECK(gradcheck(f, in) == "");
    CHECK(gradgradcheck(f, in) == "");
  }
  SUBCASE("bmm") {
    TensorList in = {leaf({2, 3, 4}, 63), leaf({2, 4, 2}, 64)};
    auto f = [](const TensorList& v) { return bmm(v[0], v[1]); };
    CHECK(gradcheck(f, in) == "");
    CHECK(gradgradcheck(f, in) == "");
  }
  SUBCASE("linear with bias, batched input") {
    TensorList in = {leaf({2, 3, 4}, 65), leaf({5, 4}, 66), leaf({5}, 67)};
    auto f = [](const TensorList& v) { return linear(v[0], v[1], v[2]); };
    CHECK(gradcheck(f, in) == "");
    CHECK(gradgradcheck(f, in) == "");
  }
  SUBCASE("linear without bias, 1-D and transposed input") {
    TensorList in = {leaf({4}, 68), leaf({3, 4}, 69)};
    auto f = [](const TensorList& v) { return linear(v[0], v[1]); };
    CHECK(gradcheck(f, in) == "");
    CHECK(gradgradcheck(f, in) == "");
    TensorList in2 = {leaf({4, 2}, 70), leaf({3, 4}, 71)};
    auto f2 = [](const TensorList& v) { return linear(transpose(v[0], 0, 1), v[1]); };
    CHECK(gradcheck(f2, in2) == "");
    CHECK(gradgradcheck(f2, in2) == "");
  }
}

TEST_CASE("matmul backward matches the closed form  da = g b^T, db = a^T g") {
  Tensor a = leaf({2, 3}, 80), b = leaf({3, 2}, 81);
  backward(sum(matmul(a, b)));  // g = ones: da[i, q] = sum_j b[q, j], db[q, j] = sum_i a[i, q]
  const auto av = a.to_vector(), bv = b.to_vector(), ga = a.grad().to_vector(), gb = b.grad().to_vector();
  for (int i = 0; i < 2; ++i)
    for (int q = 0; q < 3; ++q)
      CHECK(ga[size_t(i * 3 + q)] == doctest::Approx(bv[size_t(q * 2)] + bv[size_t(q * 2 + 1)]).epsilon(1e-12));
  for (int q = 0; q < 3; ++q)
    for (int j = 0; j < 2; ++j)
      CHECK(gb[size_t(q * 2 + j)] == doctest::Approx(av[size_t(q)] + av[size_t(3 + q)]).epsilon(1e-12));
}

TEST_CASE("matmul, bmm and linear reject bad shapes with clear messages") {
  Tensor a = rnd({3, 4}, 90), b = rnd({5, 2}, 91);
  CHECK_THROWS_WITH_AS(matmul(a, b), doctest::Contains("matmul: shapes [3,4] and [5,2] do not match"), Error);
  CHECK_THROWS_WITH_AS(matmul(rnd({4}, 92), rnd({3}, 93)), doctest::Contains("inner sizes 4 vs 3"), Error);
  CHECK_THROWS_WITH_AS(matmul(scalar_tensor(1.0, opts(DType::f64)), a), doctest::Contains("at least 1-D"), Error);
  CHECK_THROWS_WITH_AS(matmul(rnd({2, 3, 4}, 94), rnd({3, 4, 2}, 95)), doctest::Contains("cannot be broadcast"),
                       Error);
  CHECK_THROWS_WITH_AS(matmul(a, rnd({4, 2}, 96, DType::f32)), doctest::Contains("dtype mismatch"), Error);
  CHECK_THROWS_WITH_AS(bmm(a, rnd({4, 2}, 97)), doctest::Contains("bmm: expected 3-D"), Error);
  CHECK_THROWS_WITH_AS(bmm(rnd({2, 3, 4}, 98), rnd({3, 4, 2}, 99)), doctest::Contains("batch sizes differ: 2 vs 3"),
                       Error);
  CHECK_THROWS_WITH_AS(linear(rnd({2, 3}, 100), rnd({5, 4}, 101)), doctest::Contains("in features 3 vs 4"), Error);
  CHECK_THROWS_WITH_AS(linear(rnd({2, 4}, 102), rnd({5, 4}, 103), rnd({4}, 104)),
                       doctest::Contains("bias shape [4] does not match 5 output features"), Error);
  CHECK_THROWS_WITH_AS(linear(rnd({2, 4}, 105), rnd({5, 4, 1}, 106)), doctest::Contains("weight must be 2-D"), Error);
}

// Indexing family: gather, index_select, scatter_add, index_add, one_hot, cat, stack, split,
// split_sizes, chunk. Forward values are checked against hand-computed tables (in comments) and
// against naive reference loops written here from the definitions in tensor/ops_index.cpp;
// gradients with gradcheck and gradgradcheck in f64 (also for as_strided, whose backward is built
// from index_add and index_select); errors by their messages.
#include <doctest/doctest.h>
#include <omp.h>

#include <cstring>

#include "autograd/engine.h"
#include "autograd/gradcheck.h"
#include "tensor/ops.h"

using namespace engine;
using namespace engine::autograd;

namespace {

Tensor f64(std::vector<double> v, Dims shape) { return from_vector(v, shape, opts(DType::f64)); }
Tensor i64(std::vector<int64_t> v, Dims shape) { return from_vector_i64(v, shape); }
Tensor leaf(const Tensor& t) { return t.detach().requires_grad_(true); }

std::vector<int64_t> unravel(int64_t i, const Dims& s) {
  std::vector<int64_t> idx(size_t(s.size()));
  for (int d = s.size() - 1; d >= 0; --d) {
    idx[size_t(d)] = i % s[d];
    i /= s[d];
  }
  return idx;
}
int64_t ravel(const std::vector<int64_t>& idx, const Dims& s) {
  int64_t r = 0;
  for (int d = 0; d < s.size(); ++d) r = r * s[d] + idx[size_t(d)];
  return r;
}

// Reference gather: out[p] = x[p with coordinate dim replaced by index[p]].
std::vector<double> ref_gather(const Tensor& x, int dim, const Tensor& index) {
  const auto xv = x.to_vector(), iv = index.to_vector();
  std::vector<double> out(iv.size());
  for (size_t p = 0; p < iv.size(); ++p) {
    auto idx = unravel(int64_t(p), index.sizes());
    idx[size_t(dim)] = int64_t(iv[p]);
    out[p] = xv[size_t(ravel(idx, x.sizes()))];
  }
  return out;
}

// Reference scatter_add in the documented order: contributions in increasing logical order of p,
// accumulated in T (so that the f32 result is bit-comparable).
template <typename T>
std::vector<T> ref_scatter_add(const Tensor& x, int dim, const Tensor& index, const Tensor& src) {
  const auto xv = x.to_vector(), iv = index.to_vector(), sv = src.to_vector();
  std::vector<T> out(xv.begin(), xv.end());
  for (size_t p = 0; p < iv.size(); ++p) {
    auto idx = unravel(int64_t(p), index.sizes());
    const T v = T(sv[size_t(ravel(idx, src.sizes()))]);
    idx[size_t(dim)] = int64_t(iv[p]);
    out[size_t(ravel(idx, x.sizes()))] += v;
  }
  return out;
}

Tensor random_index(const Dims& shape, int64_t high, uint64_t seed) {
  Generator gen(seed);
  return randint(shape, high, gen);
}

Tensor randn64(const Dims& shape, uint64_t seed) {
  Generator gen(seed);
  return randn(shape, gen, opts(DType::f64));
}

void check_close(const std::vector<double>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-12));
}

}  // namespace

// ---- forward values ------------------------------------------------------------------------------

TEST_CASE("gather: hand-computed values along each dim, negative dim, smaller index, i32 index") {
  // x = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
  Tensor x = f64({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {3, 4});
  // dim 1: out[i][j] = x[i][idx[i][j]]
  Tensor idx1 = i64({3, 0, 1, 1, 2, 2}, {3, 2});
  CHECK(gather(x, 1, idx1).to_vector() == std::vector<double>{3, 0, 5, 5, 10, 10});
  CHECK(gather(x, -1, idx1).to_vector() == std::vector<double>{3, 0, 5, 5, 10, 10});
  CHECK(gather(x, 1, idx1).sizes() == Dims{3, 2});
  // dim 0: out[i][j] = x[idx[i][j]][j]; index [1, 3] is smaller than x in dim 1 (allowed)
  Tensor idx0 = i64({2, 0, 1}, {1, 3});
  CHECK(gather(x, 0, idx0).to_vector() == std::vector<double>{8, 1, 6});
  // index larger than x along dim itself: 5 rows gathered from 3
  Tensor idx_tall = i64({0, 1, 2, 2, 1}, {5, 1});
  CHECK(gather(x, -2, idx_tall).to_vector() == std::vector<double>{0, 4, 8, 8, 4});
  // i32 index gives the same
  Tensor idx32 = from_vector({3, 0, 1, 1, 2, 2}, {3, 2}, opts(DType::i32));
  CHECK(gather(x, 1, idx32).to_vector() == std::vector<double>{3, 0, 5, 5, 10, 10});
  // i64 data works too (no grad)
  Tensor xi = from_vector({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {3, 4}, opts(DType::i64));
  CHECK(gather(xi, 1, idx1).dtype() == DType::i64);
  CHECK(gather(xi, 1, idx1).to_vector() == std::vector<double>{3, 0, 5, 5, 10, 10});
}

TEST_CASE("gather: non-contiguous x and index, 3-D, against a reference loop") {
  Tensor base = randn64({5, 4, 6}, 3);
  Tensor x = transpose(base, 0, 2);  // [6, 4, 5], non-contiguous
  REQUIRE_FALSE(x.is_contiguous());
  for (int dim = 0; dim < 3; ++dim) {
    Tensor idx_big = random_index({7, 8, 6}, x.size(dim), 10 + uint64_t(dim));
    Tensor idx = slice(slice(idx_big, 1, 0, 8, 2), 0, 0, dim == 0 ? 7 : 6);  // [7 or 6, 4, 6] strided
    idx = narrow(idx, 2, 0, dim == 2 ? 6 : 5);
    REQUIRE_FALSE(idx.is_contiguous());
    CAPTURE(dim);
    CHECK(gather(x, dim, idx).to_vector() == ref_gather(x, dim, idx));
  }
}

TEST_CASE("index_select: rows and columns with repeats, non-contiguous input and index") {
  Tensor x = f64({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {3, 4});
  // rows 2, 0, 2
  CHECK(index_select(x, 0, i64({2, 0, 2}, {3})).to_vector() ==
        std::vector<double>{8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11});
  // columns 3, 3, 1 -> [[3,3,1],[7,7,5],[11,11,9]]
  Tensor cols = index_select(x, -1, i64({3, 3, 1}, {3}));
  CHECK(cols.sizes() == Dims{3, 3});
  CHECK(cols.to_vector() == std::vector<double>{3, 3, 1, 7, 7, 5, 11, 11, 9});
  // transposed x (x^T[i][j] = x[j][i]) and a strided index: every other entry of [1, 9, 0, 9, 2]
  Tensor idx = slice(i64({1, 9, 0, 9, 2}, {5}), 0, 0, 5, 2);  // [1, 0, 2]
  CHECK(index_select(transpose(x, 0, 1), 0, idx).to_vector() == std::vector<double>{1, 5, 9, 0, 4, 8, 2, 6, 10});
  // a 0-D index keeps the dim with size 1
  Tensor one = index_select(x, 1, from_vector_i64({2}, {}));
  CHECK(one.sizes() == Dims{3, 1});
  CHECK(one.to_vector() == std::vector<double>{2, 6, 10});
  // an empty index gives an empty dim
  CHECK(index_select(x, 0, i64({}, {0})).sizes() == Dims{0, 4});
}

TEST_CASE("scatter_add: duplicates accumulate; src larger than index; against a reference loop") {
  // x = ones [2, 3]; dim 0; index [[0, 1, 0], [0, 0, 0]]; src [[1, 2, 3], [4, 5, 6]]
  // out[0][0] = 1 + 1 + 4 = 6, out[1][0] = 1, out[0][1] = 1 + 5 = 6, out[1][1] = 1 + 2 = 3,
  // out[0][2] = 1 + 3 + 6 = 10, out[1][2] = 1
  Tensor x = f64({1, 1, 1, 1, 1, 1}, {2, 3});
  Tensor src = f64({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor out = scatter_add(x, 0, i64({0, 1, 0, 0, 0, 0}, {2, 3}), src);
  CHECK(out.to_vector() == std::vector<double>{6, 6, 10, 1, 3, 1});
  CHECK(x.to_vector() == std::vector<double>{1, 1, 1, 1, 1, 1});  // out of place
  // dim -1, index [2, 2] smaller than src [2, 3]: only src[:, :2] is read
  // row 0: idx [2, 2] adds 1 + 2 into col 2; row 1: idx [0, 2] adds 4 to col 0, 5 to col 2
  Tensor out2 = scatter_add(zeros({2, 3}, opts(DType::f64)), -1, i64({2, 2, 0, 2}, {2, 2}), src);
  CHECK(out2.to_vector() == std::vector<double>{0, 0, 3, 4, 0, 5});
  // 3-D with non-contiguous x, src and index, every dim, against the reference
  for (int dim = 0; dim < 3; ++dim) {
    Tensor xb = randn64({4, 5, 3}, 20);
    Tensor xt = permute(xb, {2, 0, 1});  // [3, 4, 5]
    Tensor sb = randn64({8, 7, 7}, 21);
    Tensor st = transpose(sb, 0, 2);  // [7, 7, 8], covers every index shape below
    Dims ishape = {3, 4, 5};
    ishape[dim] = 7;
    Tensor idx = transpose(random_index({ishape[1], ishape[0], ishape[2]}, xt.size(dim), 30 + uint64_t(dim)), 0, 1);
    // src must cover the index: take the matching box of st
    Tensor s = narrow(narrow(narrow(st, 0, 0, ishape[0]), 1, 0, ishape[1]), 2, 0, ishape[2]);
    CAPTURE(dim);
    check_close(scatter_add(xt, dim, idx, s).to_vector(), ref_scatter_add<double>(xt, dim, idx, s));
  }
}

TEST_CASE("index_add: duplicates accumulate, along rows and columns") {
  // x = [[1, 2], [3, 4], [5, 6]]; dim 0; index [2, 0, 2]; src [[10, 20], [30, 40], [50, 60]]
  // row 0 += [30, 40]; row 2 += [10, 20] + [50, 60]
  Tensor x = f64({1, 2, 3, 4, 5, 6}, {3, 2});
  Tensor src = f64({10, 20, 30, 40, 50, 60}, {3, 2});
  CHECK(index_add(x, 0, i64({2, 0, 2}, {3}), src).to_vector() == std::vector<double>{31, 42, 3, 4, 65, 86});
  // dim -1: index [1, 1, 1], src [3, 3] of column contributions, summed into column 1
  Tensor src2 = f64({1, 2, 3, 4, 5, 6, 7, 8, 9}, {3, 3});
  CHECK(index_add(x, -1, i64({1, 1, 1}, {3}), src2).to_vector() == std::vector<double>{1, 8, 3, 19, 5, 30});
  // non-contiguous src (transposed) and x
  Tensor xt = transpose(f64({1, 3, 5, 2, 4, 6}, {2, 3}), 0, 1);  // == x
  Tensor st = transpose(f64({10, 30, 50, 20, 40, 60}, {2, 3}), 0, 1);  // == src
  CHECK(index_add(xt, 0, i64({2, 0, 2}, {3}), st).to_vector() == std::vector<double>{31, 42, 3, 4, 65, 86});
  // i32 index
  CHECK(index_add(x, 0, from_vector({2, 0, 2}, {3}, opts(DType::i32)), src).to_vector() ==
        std::vector<double>{31, 42, 3, 4, 65, 86});
}

TEST_CASE("scatter_add and index_add are deterministic for duplicate indices at any thread count") {
  // f32 values of very different magnitudes, all scattered into 4 targets along dim 0: the sum
  // depends on the order of the additions, so a bit-exact match with the sequential reference
  // proves the order is fixed (increasing index position) whatever the thread count.
  Generator gen(99);
  Tensor src = mul(exp(mul(randn({2000, 40}, gen), 4.0)), randn({2000, 40}, gen));
  Tensor x = randn({4, 40}, gen);
  Tensor idx = random_index({2000, 40}, 4, 5);
  Tensor idx1 = random_index({2000}, 4, 6);
  const std::vector<float> want = ref_scatter_add<float>(x, 0, idx, src);
  const std::vector<float> want1 = ref_scatter_add<float>(x, 0, expand(reshape(idx1, {2000, 1}), {2000, 40}), src);
  Tensor src_t = transpose(contiguous(transpose(src, 0, 1)), 0, 1);  // same values, column-major
  REQUIRE_FALSE(src_t.is_contiguous());
  Tensor srcw = mul(exp(mul(randn({300, 1024}, gen), 4.0)), randn({300, 1024}, gen));
  Tensor xw = randn({3, 1024}, gen);
  Tensor idxw = random_index({300, 1024}, 3, 7);
  Tensor idxw1 = random_index({300}, 3, 8);
  const std::vector<float> want_wide = ref_scatter_add<float>(xw, 0, idxw, srcw);
  const std::vector<float> want_wide1 =
      ref_scatter_add<float>(xw, 0, expand(reshape(idxw1, {300, 1}), {300, 1024}), srcw);
  const int saved_threads = omp_get_max_threads();
  for (int threads : {1, 2, 3, 4}) {
    omp_set_num_threads(threads);
    CAPTURE(threads);
    const Tensor got = scatter_add(x, 0, idx, src);
    const Tensor got1 = index_add(x, 0, idx1, src);
    const float* g = got.data<float>();
    const float* g1 = got1.data<float>();
    CHECK(std::memcmp(g, want.data(), want.size() * sizeof(float)) == 0);
    CHECK(std::memcmp(g1, want1.data(), want1.size() * sizeof(float)) == 0);
    // along the last dim too (lines mode)
    Tensor xs = transpose(x, 0, 1).contiguous(), ss = transpose(src, 0, 1).contiguous();
    Tensor is = transpose(idx, 0, 1).contiguous();
    const std::vector<float> want_last = ref_scatter_add<float>(xs, 1, is, ss);
    const Tensor got_last = scatter_add(xs, 1, is, ss);
    CHECK(std::memcmp(got_last.data<float>(), want_last.data(), want_last.size() * sizeof(float)) == 0);
    // wide rows into few targets: the contiguous path cuts rows into per-thread blocks
    const Tensor got_wide = scatter_add(xw, 0, idxw, srcw);
    const Tensor got_wide1 = index_add(xw, 0, idxw1, srcw);
    CHECK(std::memcmp(got_wide.data<float>(), want_wide.data(), want_wide.size() * sizeof(float)) == 0);
    CHECK(std::memcmp(got_wide1.data<float>(), want_wide1.data(), want_wide1.size() * sizeof(float)) == 0);
    // non-contiguous src: the strided path (for_each_along_dim)
    const Tensor got_strided = scatter_add(x, 0, idx, src_t);
    const Tensor got_strided1 = index_add(x, 0, idx1, src_t);
    CHECK(std::memcmp(got_strided.data<float>(), want.data(), want.size() * sizeof(float)) == 0);
    CHECK(std::memcmp(got_strided1.data<float>(), want1.data(), want1.size() * sizeof(float)) == 0);
  }
  omp_set_num_threads(saved_threads);
}

TEST_CASE("one_hot: values, dtypes, inferred num_classes") {
  Tensor idx = i64({2, 0, 1, 2}, {2, 2});
  Tensor oh = one_hot(idx, 3);
  CHECK(oh.dtype() == DType::f32);
  CHECK(oh.sizes() == Dims{2, 2, 3});
  CHECK(oh.to_vector() == std::vector<double>{0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 1});
  Tensor oh64 = one_hot(i64({1, 3}, {2}), -1, DType::i64);  // num_classes = 3 + 1
  CHECK(oh64.dtype() == DType::i64);
  CHECK(oh64.to_vector() == std::vector<double>{0, 1, 0, 0, 0, 0, 0, 1});
  // a strided index (every other element of [0, 7, 2, 7]) and a bool output
  Tensor ohb = one_hot(slice(i64({0, 7, 2, 7}, {4}), 0, 0, 4, 2), 3, DType::boolean);
  CHECK(ohb.to_vector() == std::vector<double>{1, 0, 0, 0, 0, 1});
  CHECK(one_hot(i64({}, {0}), 4).sizes() == Dims{0, 4});
  CHECK_FALSE(one_hot(i64({1}, {1}), 2).requires_grad());
}

TEST_CASE("cat and stack: values along several dims, non-contiguous inputs, integer dtype") {
  Tensor a = f64({1, 2, 3, 4}, {2, 2});
  Tensor b = f64({5, 6}, {1, 2});
  Tensor c = transpose(f64({7, 8, 9, 10, 11, 12}, {2, 3}), 0, 1);  // [[7,10],[8,11],[9,12]]
  CHECK(cat({a, b, c}, 0).to_vector() == std::vector<double>{1, 2, 3, 4, 5, 6, 7, 10, 8, 11, 9, 12});
  CHECK(cat({a, b, c}, 0).sizes() == Dims{6, 2});
  // dim -1: [[1,2] ++ [9] ++ [a,b]]
  Tensor d = f64({9, 10}, {2, 1});
  Tensor e = transpose(a, 0, 1);  // [[1,3],[2,4]]
  CHECK(cat({a, d, e}, -1).to_vector() == std::vector<double>{1, 2, 9, 1, 3, 3, 4, 10, 2, 4});
  // an input of size 0 along dim is fine
  CHECK(cat({a, zeros({0, 2}, opts(DType::f64))}, 0).to_vector() == a.to_vector());
  Tensor ia = from_vector_i64({1, 2}, {2}), ib = from_vector_i64({3}, {1});
  CHECK(cat({ia, ib}, 0).dtype() == DType::i64);
  CHECK(cat({ia, ib}, 0).to_vector() == std::vector<double>{1, 2, 3});

  // stack of [2, 2] tensors
  Tensor f = f64({5, 6, 7, 8}, {2, 2});
  CHECK(stack({a, f}, 0).sizes() == Dims{2, 2, 2});
  CHECK(stack({a, f}, 0).to_vector() == std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8});
  CHECK(stack({a, f}, 1).to_vector() == std::vector<double>{1, 2, 5, 6, 3, 4, 7, 8});
  CHECK(stack({a, f}, -1).sizes() == Dims{2, 2, 2});
  CHECK(stack({a, f}, -1).to_vector() == std::vector<double>{1, 5, 2, 6, 3, 7, 4, 8});
  CHECK(stack({e, f}, 2).to_vector() == std::vector<double>{1, 5, 3, 6, 2, 7, 4, 8});
  // 0-D inputs stack into a vector
  CHECK(stack({scalar_tensor(1.5), scalar_tensor(-2.0)}, 0).to_vector() == std::vector<double>{1.5, -2.0});
}

TEST_CASE("split, split_sizes and chunk: PyTorch's piece sizes, views, values") {
  Tensor x = reshape(arange(10, opts(DType::f64)), {2, 5});
  auto sizes_of = [](const TensorList& ts, int dim) {
    std::vector<int64_t> s;
    for (const Tensor& t : ts) s.push_back(t.size(dim));
    return s;
  };
  CHECK(sizes_of(split(x, 2, 1), 1) == std::vector<int64_t>{2, 2, 1});
  CHECK(sizes_of(split(x, 5, -1), 1) == std::vector<int64_t>{5});
  CHECK(sizes_of(split(x, 7, 1), 1) == std::vector<int64_t>{5});
  // chunk: ceil(5 / 4) = 2 -> [2, 2, 1] (only 3 pieces); ceil(5 / 3) = 2 -> [2, 2, 1]; 5 in 5 -> ones
  CHECK(sizes_of(chunk(x, 4, 1), 1) == std::vector<int64_t>{2, 2, 1});
  CHECK(sizes_of(chunk(x, 3, -1), 1) == std::vector<int64_t>{2, 2, 1});
  CHECK(sizes_of(chunk(x, 5, 1), 1) == std::vector<int64_t>{1, 1, 1, 1, 1});
  CHECK(sizes_of(chunk(x, 8, 1), 1) == std::vector<int64_t>{1, 1, 1, 1, 1});
  CHECK(sizes_of(chunk(reshape(arange(12, opts(DType::f64)), {6, 2}), 4, 0), 0) == std::vector<int64_t>{2, 2, 2});
  // an empty dim: chunk gives `chunks` empty pieces, split gives one
  Tensor empty_dim = zeros({0, 3}, opts(DType::f64));
  CHECK(sizes_of(chunk(empty_dim, 3, 0), 0) == std::vector<int64_t>{0, 0, 0});
  CHECK(sizes_of(split(empty_dim, 0, 0), 0) == std::vector<int64_t>{0});
  CHECK(sizes_of(split_sizes(x, {1, 0, 4}, 1), 1) == std::vector<int64_t>{1, 0, 4});
  TensorList p = split_sizes(x, {3, 2}, -1);
  CHECK(p[0].to_vector() == std::vector<double>{0, 1, 2, 5, 6, 7});
  CHECK(p[1].to_vector() == std::vector<double>{3, 4, 8, 9});
  CHECK(p[1].storage() == x.storage());  // views, no copy
  TensorList rows = chunk(x, 2, 0);
  CHECK(rows[1].to_vector() == std::vector<double>{5, 6, 7, 8, 9});
}

// ---- gradients -----------------------------------------------------------------------------------

TEST_CASE("gather backward: duplicates accumulate; gradcheck and gradgradcheck") {
  // y = sum(w * gather(x, 0, [0, 0, 2])) -> dx = [w0 + w1, 0, w2]
  Tensor x = leaf(f64({1, 2, 3}, {3}));
  Tensor w = f64({10, 20, 30}, {3});
  backward(sum(mul(gather(x, 0, i64({0, 0, 2}, {3})), w)));
  CHECK(x.grad().to_vector() == std::vector<double>{30, 0, 30});

  Tensor a = leaf(randn64({3, 4, 5}, 40));
  Tensor idx = random_index({3, 6, 2}, 4, 41);  // 6 picks from 4 along dim 1: duplicates certain
  for (int64_t dim : {1, -2}) {
    auto f = [&](const TensorList& xs) { return gather(xs[0], dim, idx); };
    CHECK(gradcheck(f, {a}) == "");
    CHECK(gradgradcheck(f, {a}) == "");
  }
  // non-contiguous x (transposed), dim -1, index smaller than x in the other dims
  Tensor b = leaf(randn64({5, 4}, 42));
  Tensor idx2 = random_index({3, 7}, 5, 43);
  auto g = [&](const TensorList& xs) { return gather(transpose(xs[0], 0, 1), -1, idx2); };
  CHECK(gradcheck(g, {b}) == "");
  CHECK(gradgradcheck(g, {b}) == "");
}

TEST_CASE("index_select backward: duplicates accumulate; gradcheck and gradgradcheck") {
  // y = sum(w * index_select(x, 0, [1, 1, 0])) with x [2, 2]: dx[1] = w0 + w1, dx[0] = w2
  Tensor x = leaf(f64({1, 2, 3, 4}, {2, 2}));
  Tensor w = f64({1, 2, 3, 4, 5, 6}, {3, 2});
  backward(sum(mul(index_select(x, 0, i64({1, 1, 0}, {3})), w)));
  CHECK(x.grad().to_vector() == std::vector<double>{5, 6, 4, 6});

  Tensor a = leaf(randn64({4, 3, 5}, 50));
  Tensor idx = i64({2, 0, 2, 4, 4, 1, 2}, {7});
  for (int64_t dim : {2, -1}) {
    auto f = [&](const TensorList& xs) { return index_select(xs[0], dim, idx); };
    CHECK(gradcheck(f, {a}) == "");
    CHECK(gradgradcheck(f, {a}) == "");
  }
  Tensor idx0 = i64({3, 3, 0}, {3});
  auto g = [&](const TensorList& xs) { return index_select(permute(xs[0], {2, 0, 1}), -2, idx0); };  // non-contig
  CHECK(gradcheck(g, {a}) == "");
  CHECK(gradgradcheck(g, {a}) == "");
}

TEST_CASE("scatter_add backward (x and src): gradcheck and gradgradcheck, duplicates, negative dims") {
  Tensor x = leaf(randn64({4, 3}, 60));
  Tensor src = leaf(randn64({6, 3}, 61));
  Tensor idx = random_index({6, 3}, 4, 62);  // 6 rows into 4: duplicates
  for (int64_t dim : {0, -2}) {
    auto f = [&](const TensorList& xs) { return scatter_add(xs[0], dim, idx, xs[1]); };
    CHECK(gradcheck(f, {x, src}) == "");
    CHECK(gradgradcheck(f, {x, src}) == "");
  }
  // src larger than the index (unread elements get zero gradient), dim -1, non-contiguous src
  Tensor src_t = leaf(randn64({5, 4}, 63));  // transposed to [4, 5]
  Tensor idx2 = random_index({3, 4}, 3, 64);
  auto g = [&](const TensorList& xs) { return scatter_add(xs[0], -1, idx2, transpose(xs[1], 0, 1)); };
  CHECK(gradcheck(g, {x, src_t}) == "");
  CHECK(gradgradcheck(g, {x, src_t}) == "");
  // gradient values: d/dsrc of sum(w * scatter_add(x, 0, idx, src)) = w[idx[i][j]][j]
  Tensor w = randn64({4, 3}, 65);
  TensorList gr = grad({sum(mul(scatter_add(x, 0, idx, src), w))}, {x, src});
  CHECK(gr[0].to_vector() == w.to_vector());
  CHECK(gr[1].to_vector() == ref_gather(w, 0, idx));
}

TEST_CASE("index_add backward (x and src): gradcheck and gradgradcheck, duplicates, negative dims") {
  Tensor x = leaf(randn64({3, 4, 2}, 70));
  Tensor idx = i64({3, 0, 3, 3, 1}, {5});
  Tensor src = leaf(randn64({3, 5, 2}, 71));
  for (int64_t dim : {1, -2}) {
    auto f = [&](const TensorList& xs) { return index_add(xs[0], dim, idx, xs[1]); };
    CHECK(gradcheck(f, {x, src}) == "");
    CHECK(gradgradcheck(f, {x, src}) == "");
  }
  // non-contiguous src: a permuted [5, 2, 3] tensor viewed as [3, 5, 2]
  Tensor src_p = leaf(randn64({5, 2, 3}, 72));
  auto g = [&](const TensorList& xs) { return index_add(xs[0], 1, idx, permute(xs[1], {2, 0, 1})); };
  CHECK(gradcheck(g, {x, src_p}) == "");
  CHECK(gradgradcheck(g, {x, src_p}) == "");
}

TEST_CASE("cat and stack backward: gradcheck and gradgradcheck, negative dims, non-contiguous inputs") {
  Tensor a = leaf(randn64({2, 3}, 80));
  Tensor b = leaf(randn64({2, 1}, 81));
  Tensor c = leaf(randn64({4, 2}, 82));  // used transposed: [2, 4]
  auto f = [](const TensorList& xs) { return cat({xs[0], xs[1], transpose(xs[2], 0, 1)}, -1); };
  CHECK(gradcheck(f, {a, b, c}) == "");
  CHECK(gradgradcheck(f, {a, b, c}) == "");
  auto f0 = [](const TensorList& xs) { return mul(cat({xs[0], xs[0], xs[1]}, 1), 2.0); };  // repeated input
  CHECK(gradcheck(f0, {a, b}) == "");
  CHECK(gradgradcheck(f0, {a, b}) == "");
  // a constant (no grad) input in the middle
  Tensor k = randn64({1, 3}, 83);
  auto f1 = [&](const TensorList& xs) { return cat({xs[0], k, xs[0]}, 0); };
  CHECK(gradcheck(f1, {a}) == "");
  CHECK(gradgradcheck(f1, {a}) == "");

  Tensor d = leaf(randn64({3, 2}, 84));
  for (int64_t dim : {0, 1, -1}) {
    auto s = [dim](const TensorList& xs) { return stack({xs[0], transpose(xs[1], 0, 1), xs[0]}, dim); };
    CHECK(gradcheck(s, {a, d}) == "");
    CHECK(gradgradcheck(s, {a, d}) == "");
  }
  // gradient values: stack along 0 then weight slices by 1, 2, 3 -> da = 1 + 3, dd^T = 2
  TensorList gr = grad({sum(mul(stack({a, transpose(d, 0, 1), a}, 0), reshape(f64({1, 2, 3}, {3}), {3, 1, 1})))},
                       {a, d});
  CHECK(gr[0].to_vector() == std::vector<double>(6, 4.0));
  CHECK(gr[1].to_vector() == std::vector<double>(6, 2.0));
}

TEST_CASE("split and chunk: several outputs through the engine, unused pieces get zero gradient") {
  Tensor x = leaf(randn64({3, 7}, 90));
  // pieces [3,3], [3,3], [3,1]; use pieces 0 and 2 with weights 2 and 5, ignore piece 1
  TensorList p = split(x, 3, -1);
  REQUIRE(p.size() == 3);
  backward(add(sum(mul(p[0], 2.0)), sum(mul(p[2], 5.0))));
  CHECK(x.grad().to_vector() ==
        std::vector<double>{2, 2, 2, 0, 0, 0, 5, 2, 2, 2, 0, 0, 0, 5, 2, 2, 2, 0, 0, 0, 5});
  auto f = [](const TensorList& xs) {
    TensorList c = chunk(xs[0], 3, 1);  // [3,3], [3,3], [3,1]
    TensorList s = split_sizes(transpose(xs[0], 0, 1), {4, 3}, 0);  // [4,3], [3,3]
    return cat({mul(c[2], c[2]), exp(c[0]), s[1]}, 1);  // [3, 1+3+3]
  };
  CHECK(gradcheck(f, {x}) == "");
  CHECK(gradgradcheck(f, {x}) == "");
}

TEST_CASE("as_strided (backward made of index_add and index_select): gradcheck and gradgradcheck") {
  Tensor x = leaf(randn64({8}, 100));
  // overlapping windows of 3 with stride 2: [[0,1,2],[2,3,4],[4,5,6]]
  auto f = [](const TensorList& xs) { return as_strided(xs[0], {3, 3}, {2, 1}, 0); };
  CHECK(gradcheck(f, {x}) == "");
  CHECK(gradgradcheck(f, {x}) == "");
  // the gradient counts how often each element is used: 1,1,2,1,2,1,1,0
  backward(sum(f({x})));
  CHECK(x.grad().to_vector() == std::vector<double>{1, 1, 2, 1, 2, 1, 1, 0});
  // a transposed, offset view of a 2-D input
  Tensor y = leaf(randn64({3, 4}, 101));
  auto g = [](const TensorList& xs) { return mul(as_strided(transpose(xs[0], 0, 1), {2, 3}, {1, 4}, 1), 3.0); };
  CHECK(gradcheck(g, {y}) == "");
  CHECK(gradgradcheck(g, {y}) == "");
}

// ---- errors --------------------------------------------------------------------------------------

TEST_CASE("out-of-range indices raise errors naming the op, the bad index and the size") {
  Tensor x = f64({0, 1, 2, 3, 4, 5}, {2, 3});
  CHECK_THROWS_WITH_AS(gather(x, 1, i64({0, 3}, {1, 2})),
                       doctest::Contains("gather: index 3 is out of range for dim 1 of size 3"), Error);
  CHECK_THROWS_WITH_AS(gather(x, 0, i64({0, 1, -1}, {1, 3})),
                       doctest::Contains("gather: index -1 is out of range for dim 0 of size 2 (at position [0,2]"),
                       Error);
  CHECK_THROWS_WITH_AS(index_select(x, 1, i64({0, 2, 5}, {3})),
                       doctest::Contains("index_select: index 5 is out of range for dim 1 of size 3"), Error);
  CHECK_THROWS_WITH_AS(index_select(x, -2, i64({-3}, {1})),
                       doctest::Contains("index_select: index -3 is out of range for dim 0 of size 2"), Error);
  CHECK_THROWS_WITH_AS(scatter_add(x, 0, i64({2, 0, 0}, {1, 3}), x),
                       doctest::Contains("scatter_add: index 2 is out of range for dim 0 of size 2"), Error);
  CHECK_THROWS_WITH_AS(index_add(x, 1, i64({1, 7}, {2}), f64({1, 2, 3, 4}, {2, 2})),
                       doctest::Contains("index_add: index 7 is out of range for dim 1 of size 3"), Error);
  CHECK_THROWS_WITH_AS(one_hot(i64({0, 4}, {2}), 4),
                       doctest::Contains("one_hot: index 4 is out of range for num_classes 4"), Error);
  CHECK_THROWS_WITH_AS(one_hot(i64({-1}, {1}), 4), doctest::Contains("one_hot: index -1"), Error);
  // a large index out of range in a parallel loop is caught too
  Tensor big = zeros({40000}, opts(DType::f64));
  std::vector<int64_t> iv(40000, 1);
  iv[33333] = 40000;
  CHECK_THROWS_WITH_AS(gather(big, 0, i64(iv, {40000})),
                       doctest::Contains("gather: index 40000 is out of range for dim 0 of size 40000 (at position [33333]"),
                       Error);
}

TEST_CASE("shape, dtype and argument errors") {
  Tensor x = f64({0, 1, 2, 3, 4, 5}, {2, 3});
  // index dtype and rank
  CHECK_THROWS_WITH_AS(gather(x, 1, f64({0}, {1, 1})), doctest::Contains("gather: index must be an i64"), Error);
  CHECK_THROWS_WITH_AS(gather(x, 1, i64({0}, {1})), doctest::Contains("gather: index has 1 dims"), Error);
  CHECK_THROWS_WITH_AS(gather(x, 1, i64({0, 0, 0}, {3, 1})), doctest::Contains("exceeds x shape [2,3] at dim 0"),
                       Error);
  CHECK_THROWS_WITH_AS(gather(x, 2, i64({0}, {1, 1})), doctest::Contains("gather: dim 2 out of range"), Error);
  CHECK_THROWS_WITH_AS(index_select(x, 0, i64({0, 1}, {1, 2})), doctest::Contains("index_select: index must be 1-D"),
                       Error);
  CHECK_THROWS_WITH_AS(index_add(x, 0, i64({0, 1}, {2}), f64({1, 2}, {2, 1})),
                       doctest::Contains("index_add: src has shape [2,1] but must be [2,3]"), Error);
  CHECK_THROWS_WITH_AS(scatter_add(x, 0, i64({0, 0, 0, 0}, {1, 4}), x),
                       doctest::Contains("scatter_add: index shape [1,4] exceeds src shape [2,3] at dim 1"), Error);
  CHECK_THROWS_WITH_AS(scatter_add(x, 0, i64({0}, {1, 1}), from_vector({1, 2, 3, 4, 5, 6}, {2, 3})),
                       doctest::Contains("scatter_add: dtype mismatch"), Error);
  // cat and stack
  CHECK_THROWS_WITH_AS(cat({}, 0), doctest::Contains("cat: expected a non-empty list"), Error);
  CHECK_THROWS_WITH_AS(cat({x, f64({1, 2}, {1, 2})}, 0),
                       doctest::Contains("cat: sizes must match except in dim 0: tensor #1 has shape [1,2] but tensor #0 has [2,3]"),
                       Error);
  CHECK_THROWS_WITH_AS(cat({x, f64({1, 2, 3}, {3})}, 0), doctest::Contains("cat: tensor #1 has 1 dims"), Error);
  CHECK_THROWS_WITH_AS(cat({x, from_vector({1, 2, 3}, {1, 3})}, 0), doctest::Contains("cat: tensor #1 is f32"),
                       Error);
  CHECK_THROWS_WITH_AS(cat({x, x}, 2), doctest::Contains("cat: dim 2 out of range"), Error);
  CHECK_THROWS_WITH_AS(cat({scalar_tensor(1.0)}, 0), doctest::Contains("cat: zero-dimensional"), Error);
  CHECK_THROWS_WITH_AS(stack({x, transpose(x, 0, 1)}, 0),
                       doctest::Contains("stack: all tensors must have the same shape: tensor #1 has [3,2] but #0 has [2,3]"),
                       Error);
  CHECK_THROWS_WITH_AS(stack({x, x}, 3), doctest::Contains("stack: dim 3 out of range"), Error);
  CHECK_THROWS_WITH_AS(stack({}, 0), doctest::Contains("stack: expected a non-empty list"), Error);
  // split / chunk
  CHECK_THROWS_WITH_AS(split(x, 0, 1), doctest::Contains("split: split_size must be positive"), Error);
  CHECK_THROWS_WITH_AS(split_sizes(x, {1, 1}, 1), doctest::Contains("split_sizes: sizes sum to 2 but dim 1 has size 3"),
                       Error);
  CHECK_THROWS_WITH_AS(split_sizes(x, {4, -1}, 1), doctest::Contains("split_sizes: negative size -1"), Error);
  CHECK_THROWS_WITH_AS(chunk(x, 0, 1), doctest::Contains("chunk: chunks must be positive, got 0"), Error);
  CHECK_THROWS_WITH_AS(one_hot(i64({}, {0}), -1), doctest::Contains("one_hot: cannot infer num_classes"), Error);
}

// Tests of l2_attention_fused (tensor/ops_l2_attention.cpp, kernels tensor/cpu/l2_attention.h,
// backward autograd/formulas/l2_attention.cpp), the one-op L2-distance attention that
// nn::l2_attention runs (PyTorch parity of the attention layers built on it: test_attention.cpp).
//   * forward against a naive f64 double loop: o_i = sum_j softmax_j(-||q_i - k_j|| / sqrt(d)) v_j
//     (with eps under the root), several query blocks (Tq = 150 > the 64-row block), Tq != Tk,
//     dv != d, q and k as strided views of one [B, T, H, 2, d] projection, v with a non-unit
//     channel stride (the packing path);
//   * gradcheck (f64) of the fused first-order backward, also at coincident q = k (the clamp) and
//     over several row blocks; gradgradcheck (f64) through the differentiable create_graph path;
//   * the first-order gradients of the fused primitive equal the create_graph formulas (f32);
//   * memory: the forward keeps O(T) bytes for backward, not a T x T matrix, and the backward's
//     transient memory stays below one T x T matrix;
//   * error messages;
//   * the discriminator's form (L2AttnForm::sq_distance, l = (2 q.k - |k|^2) / sqrt(d)): forward
//     against the naive loop with the full squared distance, gradcheck and gradgradcheck (f64,
//     untied and tied q = k, over two row blocks), fused first-order backward = create_graph
//     formulas (f32), and the same no-T x T-matrix memory bound. PyTorch parity of both forms:
//     test_parity_l2_attention.cpp.
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <vector>

#include "autograd/engine.h"
#include "autograd/gradcheck.h"
#include "autograd/grad_mode.h"
#include "tensor/memory/memory.h"
#include "tensor/ops.h"
#include "tensor/ops_l2_attention.h"

using namespace engine;

namespace {

// o [B, Tq, H * dv] = softmax_j(logit(|q_i - k_j|^2)) v by the definition, in double, from
// contiguous [B, T, H, *] values; the two forms differ only in `logit`.
template <typename Logit>
std::vector<double> naive_attention(const std::vector<double>& q, const std::vector<double>& k,
                                    const std::vector<double>& v, int64_t B, int64_t Tq, int64_t Tk, int64_t H,
                                    int64_t d, int64_t dv, Logit logit) {
  std::vector<double> o(size_t(B * Tq * H * dv), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Tq; ++i) {
        std::vector<double> l(static_cast<size_t>(Tk));
        double m = -1e300;
        for (int64_t j = 0; j < Tk; ++j) {
          double dist2 = 0;
          for (int64_t c = 0; c < d; ++c) {
            const double diff = q[size_t(((b * Tq + i) * H + h) * d + c)] - k[size_t(((b * Tk + j) * H + h) * d + c)];
            dist2 += diff * diff;
          }
          l[size_t(j)] = logit(dist2);
          m = std::max(m, l[size_t(j)]);
        }
        double s = 0;
        for (double& x : l) s += (x = std::exp(x - m));
        for (int64_t j = 0; j < Tk; ++j)
          for (int64_t c = 0; c < dv; ++c)
            o[size_t(((b * Tq + i) * H + h) * dv + c)] += l[size_t(j)] / s * v[size_t(((b * Tk + j) * H + h) * dv + c)];
      }
  return o;
}

// The generator's form: logit = -sqrt(|q_i - k_j|^2 + eps) / sqrt(d).
std::vector<double> naive(const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v,
                          int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t d, int64_t dv, double eps) {
  return naive_attention(q, k, v, B, Tq, Tk, H, d, dv,
                         [&](double dist2) { return -std::sqrt(dist2 + eps) / std::sqrt(double(d)); });
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

// The fused first-order gradients against the create_graph (composite) ones, per input, within
// 1e-5 of the largest gradient entry (f32: the two sum in different orders).
void check_fused_matches_graph(const TensorList& fused, const TensorList& graph) {
  REQUIRE(fused.size() == graph.size());
  for (size_t i = 0; i < fused.size(); ++i) {
    const std::vector<double> a = fused[i].to_vector(), b = graph[i].to_vector();
    double scale = 0;
    for (double e : b) scale = std::max(scale, std::abs(e));
    const double err = max_abs_diff(a, b);
    MESSAGE("input " << i << ": max |fused - graph| = " << err << " (max |grad| " << scale << ")");
    CHECK(scale > 0);
    CHECK(err <= 1e-5 * scale);
  }
}

}  // namespace

TEST_CASE("l2_attention_fused: forward against a naive double loop (blocks, views, packing)") {
  Generator g(1);
  const int64_t B = 2, Tq = 150, Tk = 37, H = 2, d = 5, dv = 3;
  for (DType dt : {DType::f64, DType::f32}) {
    INFO(std::string(dtype_name(dt)));
    const TensorOptions o = opts(dt);
    // q: a strided view of a [B, Tq, H, 2, d] projection (SelfAttention's layout).
    const Tensor qk = randn({B, Tq, H, 2, d}, g, o);
    const Tensor q = select(qk, 3, 0);
    const Tensor k = randn({B, Tk, H, d}, g, o);
    // v with channel stride != 1: the kernel packs it.
    const Tensor v = transpose(randn({B, Tk, dv, H}, g, o), 2, 3);
    REQUIRE(v.stride(3) != 1);
    const double eps = 1e-6;
    const Tensor out = l2_attention_fused(q, k, v, eps);
    REQUIRE(out.sizes() == Dims{B, Tq, H * dv});
    const std::vector<double> ref =
        naive(contiguous(q).to_vector(), k.to_vector(), contiguous(v).to_vector(), B, Tq, Tk, H, d, dv, eps);
    const double err = max_abs_diff(out.to_vector(), ref);
    MESSAGE(std::string(dtype_name(dt)) << ": max |fused - naive| = " << err);
    CHECK(err < (dt == DType::f64 ? 1e-12 : 2e-5));
  }
}

TEST_CASE("l2_attention_fused: gradcheck (f64) over several row blocks, and at coincident q = k") {
  Generator g(2);
  const TensorOptions o = opts(DType::f64);
  auto f = [](const TensorList& in) { return l2_attention_fused(in[0], in[1], in[2], 1e-6); };
  {
    // 70 queries: a full 64-row block and a partial one; dK and dV sum over both.
    const Tensor q = randn({1, 70, 2, 3}, g, o).requires_grad_(true);
    const Tensor k = randn({1, 6, 2, 3}, g, o).requires_grad_(true);
    const Tensor v = randn({1, 6, 2, 2}, g, o).requires_grad_(true);
    CHECK(autograd::gradcheck(f, {q, k, v}) == "");
  }
  {
    // Strided views as SelfAttention passes them (q and k from one projection).
    const Tensor qk = randn({2, 4, 2, 2, 3}, g, o).requires_grad_(true);
    const Tensor v = randn({2, 4, 2, 2}, g, o).requires_grad_(true);
    auto fv = [](const TensorList& in) {
      return l2_attention_fused(select(in[0], 3, 0), select(in[0], 3, 1), in[1], 1e-6);
    };
    CHECK(autograd::gradcheck(fv, {qk, v}) == "");
  }
  {
    // Coincidences: key 0 = query 0 and key 2 = query 1 exactly (multiples of 1/4), where the
    // distance is sqrt(eps) and its gradient exactly 0.
    std::vector<double> qv(2 * 3 * 1 * 3), kv(2 * 4 * 1 * 3);
    for (size_t i = 0; i < qv.size(); ++i) qv[i] = double(int64_t(i * 7 % 11) - 5) / 4.0;
    for (size_t i = 0; i < kv.size(); ++i) kv[i] = double(int64_t(i * 5 % 13) - 6) / 4.0;
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t c = 0; c < 3; ++c) {
        kv[size_t((b * 4 + 0) * 3 + c)] = qv[size_t((b * 3 + 0) * 3 + c)];
        kv[size_t((b * 4 + 2) * 3 + c)] = qv[size_t((b * 3 + 1) * 3 + c)];
      }
    const Tensor q = from_vector(qv, {2, 3, 1, 3}, o).requires_grad_(true);
    const Tensor k = from_vector(kv, {2, 4, 1, 3}, o).requires_grad_(true);
    const Tensor v = randn({2, 4, 1, 2}, g, o).requires_grad_(true);
    CHECK(autograd::gradcheck(f, {q, k, v}) == "");
    CHECK(autograd::gradgradcheck(f, {q, k, v}) == "");
  }
}

TEST_CASE("l2_attention_fused: gradgradcheck (f64), Tq != Tk, dv != d") {
  Generator g(3);
  const TensorOptions o = opts(DType::f64);
  const Tensor q = randn({2, 3, 2, 3}, g, o).requires_grad_(true);
  const Tensor k = randn({2, 5, 2, 3}, g, o).requires_grad_(true);
  const Tensor v = randn({2, 5, 2, 4}, g, o).requires_grad_(true);
  auto f = [](const TensorList& in) { return l2_attention_fused(in[0], in[1], in[2], 1e-6); };
  CHECK(autograd::gradgradcheck(f, {q, k, v}) == "");
}

TEST_CASE("l2_attention_fused: the fused backward equals the create_graph formulas (f32)") {
  Generator g(4);
  const Tensor q = randn({2, 100, 2, 8}, g).requires_grad_(true);
  const Tensor k = randn({2, 77, 2, 8}, g).requires_grad_(true);
  const Tensor v = randn({2, 77, 2, 8}, g).requires_grad_(true);
  const Tensor go = randn({2, 100, 16}, g);
  TensorList fused, graph;
  {
    const Tensor out = l2_attention_fused(q, k, v, 1e-6);
    fused = autograd::grad({out}, {q, k, v}, {go}, /*create_graph=*/false);
  }
  {
    const Tensor out = l2_attention_fused(q, k, v, 1e-6);
    graph = autograd::grad({out}, {q, k, v}, {go}, /*create_graph=*/true);
  }
  check_fused_matches_graph(fused, graph);
}

TEST_CASE("l2_attention_fused: no T x T matrix is kept for backward or made in backward") {
  Generator g(5);
  const int64_t B = 1, T = 512, H = 2, d = 8;
  const int64_t tt_bytes = B * H * T * T * int64_t(sizeof(float));  // one attention matrix: 2 MiB
  const Tensor q = randn({B, T, H, d}, g).requires_grad_(true);
  const Tensor k = randn({B, T, H, d}, g).requires_grad_(true);
  const Tensor v = randn({B, T, H, d}, g).requires_grad_(true);
  const Tensor go = randn({B, T, H * d}, g);
  // Two threads: the kernels' scratch is a block of rows per thread (2 x 64 x T floats backward).
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(2);
  const int64_t live0 = memory::stats(Device::cpu()).live;
  memory::reset_peak(Device::cpu());
  TensorList grads;
  {
    const Tensor out = l2_attention_fused(q, k, v, 1e-6);
    const int64_t kept = memory::stats(Device::cpu()).live - live0;  // out and what the Node saved
    MESSAGE("forward keeps " << kept << " bytes (one T x T matrix: " << tt_bytes << ")");
    CHECK(kept < tt_bytes / 8);
    const int64_t before_bwd = memory::stats(Device::cpu()).live;
    memory::reset_peak(Device::cpu());
    grads = autograd::grad({out}, {q, k, v}, {go});
    const int64_t transient = memory::stats(Device::cpu()).peak - before_bwd;
    MESSAGE("backward peaks at " << transient << " bytes above its start");
    CHECK(transient < tt_bytes / 2);
  }
  omp_set_num_threads(saved_threads);
  CHECK(grads[0].sizes() == q.sizes());
}

TEST_CASE("l2_attention_fused: errors name the op and the bad shapes") {
  Generator g(6);
  const Tensor q = randn({1, 4, 2, 3}, g), k = randn({1, 5, 2, 3}, g), v = randn({1, 5, 2, 2}, g);
  CHECK_THROWS_WITH_AS(l2_attention_fused(q, randn({1, 5, 2, 4}, g), v, 1e-6),
                       "l2_attention_fused: q [1,4,2,3] and k [1,5,2,4] differ in batch, heads or head dim", Error);
  CHECK_THROWS_WITH_AS(l2_attention_fused(q, k, randn({1, 6, 2, 2}, g), 1e-6),
                       "l2_attention_fused: v [1,6,2,2] does not match k [1,5,2,3] in batch, tokens or heads", Error);
  CHECK_THROWS_WITH_AS(l2_attention_fused(randn({4, 2, 3}, g), k, v, 1e-6),
                       "l2_attention_fused: expected q [B, Tq, heads, d], k [B, Tk, heads, d], v [B, Tk, heads, dv], "
                       "got shapes [4,2,3], [1,5,2,3], [1,5,2,2]",
                       Error);
  CHECK_THROWS_WITH_AS(l2_attention_fused(q, k, v, 0.0),
                       "l2_attention_fused: eps must be positive (Note [L2 attention logits]), got 0", Error);
  // sq_distance has no eps: 0 is accepted.
  CHECK(l2_attention_fused(q, k, v, 0.0, L2AttnForm::sq_distance).sizes() == Dims{1, 4, 4});
}

namespace {

// o by the sq_distance definition with the full squared distance: softmax_j(-|q_i - k_j|^2 / sqrt(d)).
std::vector<double> naive_sq(const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v,
                             int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t d, int64_t dv) {
  return naive_attention(q, k, v, B, Tq, Tk, H, d, dv, [&](double dist2) { return -dist2 / std::sqrt(double(d)); });
}

}  // namespace

TEST_CASE("l2_attention_fused sq_distance: forward against a naive double loop (blocks, views, packing)") {
  Generator g(11);
  const int64_t B = 2, Tq = 150, Tk = 37, H = 2, d = 5, dv = 3;
  for (DType dt : {DType::f64, DType::f32}) {
    INFO(std::string(dtype_name(dt)));
    const TensorOptions o = opts(dt);
    const Tensor q = select(randn({B, Tq, H, 2, d}, g, o), 3, 0);
    const Tensor k = randn({B, Tk, H, d}, g, o);
    const Tensor v = transpose(randn({B, Tk, dv, H}, g, o), 2, 3);
    const Tensor out = l2_attention_fused(q, k, v, 0.0, L2AttnForm::sq_distance);
    const std::vector<double> ref =
        naive_sq(contiguous(q).to_vector(), k.to_vector(), contiguous(v).to_vector(), B, Tq, Tk, H, d, dv);
    const double err = max_abs_diff(out.to_vector(), ref);
    MESSAGE(std::string(dtype_name(dt)) << ": max |fused - naive| = " << err);
    CHECK(err < (dt == DType::f64 ? 1e-12 : 2e-5));
  }
}

TEST_CASE("l2_attention_fused sq_distance: gradcheck and gradgradcheck (f64), untied and tied") {
  Generator g(12);
  const TensorOptions o = opts(DType::f64);
  auto f = [](const TensorList& in) { return l2_attention_fused(in[0], in[1], in[2], 0.0, L2AttnForm::sq_distance); };
  {
    // 70 queries: two row blocks in the fused backward.
    const Tensor q = randn({1, 70, 2, 3}, g, o).requires_grad_(true);
    const Tensor k = randn({1, 6, 2, 3}, g, o).requires_grad_(true);
    const Tensor v = randn({1, 6, 2, 2}, g, o).requires_grad_(true);
    CHECK(autograd::gradcheck(f, {q, k, v}) == "");
  }
  {
    const Tensor q = randn({2, 3, 2, 3}, g, o).requires_grad_(true);
    const Tensor k = randn({2, 5, 2, 3}, g, o).requires_grad_(true);
    const Tensor v = randn({2, 5, 2, 4}, g, o).requires_grad_(true);
    CHECK(autograd::gradgradcheck(f, {q, k, v}) == "");
  }
  {
    // Tied q = k, as the discriminator calls it (its R1 differentiates this twice).
    auto ft = [](const TensorList& in) {
      return l2_attention_fused(in[0], in[0], in[1], 0.0, L2AttnForm::sq_distance);
    };
    const Tensor x = randn({2, 5, 2, 3}, g, o).requires_grad_(true);
    const Tensor v = randn({2, 5, 2, 3}, g, o).requires_grad_(true);
    CHECK(autograd::gradcheck(ft, {x, v}) == "");
    CHECK(autograd::gradgradcheck(ft, {x, v}) == "");
  }
}

TEST_CASE("l2_attention_fused sq_distance: the fused backward equals the create_graph formulas (f32)") {
  Generator g(13);
  const Tensor x = randn({2, 100, 2, 8}, g).requires_grad_(true);
  const Tensor v = randn({2, 100, 2, 8}, g).requires_grad_(true);
  const Tensor k = randn({2, 77, 2, 8}, g).requires_grad_(true);
  const Tensor vk = randn({2, 77, 2, 8}, g).requires_grad_(true);
  const Tensor go = randn({2, 100, 16}, g);
  for (bool tied : {true, false}) {
    INFO("tied " << tied);
    const TensorList in = tied ? TensorList{x, v} : TensorList{x, k, vk};
    auto run = [&](bool create_graph) {
      const Tensor out =
          l2_attention_fused(in[0], tied ? in[0] : in[1], tied ? in[1] : in[2], 0.0, L2AttnForm::sq_distance);
      return autograd::grad({out}, in, {go}, create_graph);
    };
    const TensorList fused = run(false), graph = run(true);
    check_fused_matches_graph(fused, graph);
  }
}

TEST_CASE("l2_attention_fused sq_distance: no T x T matrix is kept for backward or made in backward") {
  Generator g(14);
  const int64_t B = 1, T = 512, H = 2, d = 8;
  const int64_t tt_bytes = B * H * T * T * int64_t(sizeof(float));
  const Tensor x = randn({B, T, H, d}, g).requires_grad_(true);
  const Tensor v = randn({B, T, H, d}, g).requires_grad_(true);
  const Tensor go = randn({B, T, H * d}, g);
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(2);
  const int64_t live0 = memory::stats(Device::cpu()).live;
  memory::reset_peak(Device::cpu());
  TensorList grads;
  {
    const Tensor out = l2_attention_fused(x, x, v, 0.0, L2AttnForm::sq_distance);
    const int64_t kept = memory::stats(Device::cpu()).live - live0;
    CHECK(kept < tt_bytes / 8);
    const int64_t before_bwd = memory::stats(Device::cpu()).live;
    memory::reset_peak(Device::cpu());
    grads = autograd::grad({out}, {x, v}, {go});
    const int64_t transient = memory::stats(Device::cpu()).peak - before_bwd;
    MESSAGE("sq_distance: forward keeps " << kept << " bytes, backward peaks at " << transient << " bytes");
    CHECK(transient < tt_bytes / 2);
  }
  omp_set_num_threads(saved_threads);
  CHECK(grads[0].sizes() == x.sizes());
}

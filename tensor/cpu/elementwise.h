// elementwise.h (cpu): apply a portable functor (tensor/kernels/elementwise.h) over 1, 2 or 3
// broadcast, strided operands into a fresh contiguous output whose shape is their broadcast shape.
//
// How the loop is organised (Note [elementwise CPU loop]):
//   1. Dimensions that are contiguous for every operand are merged and size-1 dims dropped
//      (cpu::coalesce), so "all operands contiguous and the same shape" becomes one flat row, and
//      "tensor op scalar-like tensor" a flat row in which the scalar has stride 0.
//   2. The innermost (merged) dimension is the row. Each operand's stride along it is classified
//      once, before the loop, as 0 (broadcast), 1 (contiguous) or other; the row loop is
//      instantiated for that combination with the 0/1 strides as compile-time constants, so the
//      common cases are plain `o[i] = f(a[i], b[i])` / `f(a[i], b0)` loops that the compiler
//      vectorises (`#pragma omp simd`; the output never aliases an input). Kernels with selects
//      (leaky_relu, where, clamp) vectorise because the build says -fno-trapping-math
//      (CMakeLists.txt); exp, erf and tanh in f32 are branch-free (kernels/elementwise.h).
//   3. Rows are cut into blocks of kParallelGrain elements; OpenMP distributes (row, block) work
//      items. The blocking depends only on the shape, never on the thread count, and every
//      element is computed by the same code wherever it lands, so results are bitwise identical
//      for any number of threads.
#pragma once
#include <array>
#include <type_traits>

#include "tensor/cpu/loops.h"
#include "tensor/dispatch.h"
#include "tensor/tensor.h"

namespace engine::cpu {

namespace detail {

// An inner stride known at compile time (0 or 1) or at run time (kRuntime).
constexpr int64_t kRuntime = -1;
template <int64_t S>
using StrideKind = std::integral_constant<int64_t, S>;

// Calls f(StrideKind<0|1|kRuntime>) for the runtime stride s.
template <typename F>
inline void with_stride_kind(int64_t s, F&& f) {
  if (s == 0) {
    f(StrideKind<0>{});
  } else if (s == 1) {
    f(StrideKind<1>{});
  } else {
    f(StrideKind<kRuntime>{});
  }
}

// The coalesced iteration space of N operands (operand 0 is the contiguous output).
template <int N>
struct RowPlan {
  StridedShape<N> s;
  int64_t total = 0;           // elements
  int64_t inner = 1;           // row length
  int64_t block = 1;           // elements per work item (<= inner)
  int64_t blocks_per_row = 1;
  int64_t work = 0;            // work items
  int64_t inner_stride(int k) const { return s.ndim == 0 ? 0 : s.strides[k][s.ndim - 1]; }
};

template <int N>
RowPlan<N> plan_rows(const Dims& shape, const std::array<Dims, N>& strides) {
  RowPlan<N> p;
  p.total = shape.product();
  p.s = coalesce<N>(shape, strides);
  if (p.total == 0) return p;
  if (p.s.ndim == 0) {  // one element
    p.work = 1;
    return p;
  }
  p.inner = p.s.sizes[p.s.ndim - 1];
  p.block = p.inner > kParallelGrain ? kParallelGrain : p.inner;
  p.blocks_per_row = (p.inner + p.block - 1) / p.block;
  p.work = (p.total / p.inner) * p.blocks_per_row;
  return p;
}

// Runs body(offsets, n) for every work item: offsets[k] is operand k's element offset of the
// item's first element, n its length along the row.
template <int N, typename Body>
void run_rows(const RowPlan<N>& p, Body&& body) {
  if (p.work == 0) return;
  const int nd = p.s.ndim;
  auto item = [&](int64_t w) {
    std::array<int64_t, N> off{};
    if (nd == 0) {
      body(off, int64_t(1));
      return;
    }
    int64_t row = w / p.blocks_per_row;
    const int64_t i0 = (w % p.blocks_per_row) * p.block;
    const int64_t n = i0 + p.block < p.inner ? p.block : p.inner - i0;
    for (int d = nd - 2; d >= 0; --d) {
      const int64_t i = row % p.s.sizes[d];
      row /= p.s.sizes[d];
      for (int k = 0; k < N; ++k) off[k] += i * p.s.strides[k][d];
    }
    for (int k = 0; k < N; ++k) off[k] += i0 * p.s.strides[k][nd - 1];
    body(off, n);
  };
  if (p.total < kParallelGrain || p.work == 1) {
    for (int64_t w = 0; w < p.work; ++w) item(w);
  } else {
#pragma omp parallel for schedule(static)
    for (int64_t w = 0; w < p.work; ++w) item(w);
  }
}

inline void check_output(const Tensor& out) {
  ENGINE_CHECK(out.is_contiguous(), "elementwise loop: the output must be a fresh contiguous tensor, got strides {}",
               out.strides().str());
}

// One row. The pointers are restrict (the output is fresh), the functor is a by-value local (its
// members cannot alias the output, so they stay in registers) and a 0/1 stride is a template
// constant: together these let `#pragma omp simd` vectorise the loop.
template <int64_t KA, typename OutT, typename AT, typename F>
inline void row1(OutT* __restrict o, const AT* __restrict a, int64_t n, int64_t rsa, F f) {
  const int64_t sa = KA == kRuntime ? rsa : KA;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) o[i] = OutT(f(a[i * sa]));
}
template <int64_t KA, int64_t KB, typename OutT, typename AT, typename BT, typename F>
inline void row2(OutT* __restrict o, const AT* __restrict a, const BT* __restrict b, int64_t n, int64_t rsa,
                 int64_t rsb, F f) {
  const int64_t sa = KA == kRuntime ? rsa : KA;
  const int64_t sb = KB == kRuntime ? rsb : KB;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) o[i] = OutT(f(a[i * sa], b[i * sb]));
}
template <int64_t KA, int64_t KB, int64_t KC, typename OutT, typename AT, typename BT, typename CT, typename F>
inline void row3(OutT* __restrict o, const AT* __restrict a, const BT* __restrict b, const CT* __restrict c,
                 int64_t n, int64_t rsa, int64_t rsb, int64_t rsc, F f) {
  const int64_t sa = KA == kRuntime ? rsa : KA;
  const int64_t sb = KB == kRuntime ? rsb : KB;
  const int64_t sc = KC == kRuntime ? rsc : KC;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) o[i] = OutT(f(a[i * sa], b[i * sb], c[i * sc]));
}

}  // namespace detail

// out[i] = f(x[i]); out has the broadcast shape (usually x's), dtype OutT.
template <typename OutT, typename InT, typename F>
void map_unary(const Tensor& out, const Tensor& x, F f) {
  detail::check_output(out);
  const auto p = detail::plan_rows<2>(out.sizes(), {out.strides(), broadcast_strides(x, out.sizes())});
  OutT* o = out.data<OutT>();
  const InT* a = x.data<InT>();
  const int64_t sa = p.inner_stride(1);
  detail::with_stride_kind(sa, [&](auto ka) {
    constexpr int64_t KA = decltype(ka)::value;
    detail::run_rows<2>(p, [&](const std::array<int64_t, 2>& off, int64_t n) {
      detail::row1<KA>(o + off[0], a + off[1], n, sa, f);
    });
  });
}

// out[i] = f(x[i], y[i]) with x and y broadcast to out's shape.
template <typename OutT, typename InT, typename F>
void map_binary(const Tensor& out, const Tensor& x, const Tensor& y, F f) {
  detail::check_output(out);
  const auto p = detail::plan_rows<3>(
      out.sizes(), {out.strides(), broadcast_strides(x, out.sizes()), broadcast_strides(y, out.sizes())});
  OutT* o = out.data<OutT>();
  const InT* a = x.data<InT>();
  const InT* b = y.data<InT>();
  const int64_t sa = p.inner_stride(1), sb = p.inner_stride(2);
  detail::with_stride_kind(sa, [&](auto ka) {
    detail::with_stride_kind(sb, [&](auto kb) {
      constexpr int64_t KA = decltype(ka)::value, KB = decltype(kb)::value;
      detail::run_rows<3>(p, [&](const std::array<int64_t, 3>& off, int64_t n) {
        detail::row2<KA, KB>(o + off[0], a + off[1], b + off[2], n, sa, sb, f);
      });
    });
  });
}

// Ternary with a u8/bool first operand (where) or three same-type operands.
template <typename OutT, typename AT, typename BT, typename CT, typename F>
void map_ternary(const Tensor& out, const Tensor& x, const Tensor& y, const Tensor& z, F f) {
  detail::check_output(out);
  const auto p = detail::plan_rows<4>(out.sizes(), {out.strides(), broadcast_strides(x, out.sizes()),
                                                    broadcast_strides(y, out.sizes()), broadcast_strides(z, out.sizes())});
  OutT* o = out.data<OutT>();
  const AT* a = x.data<AT>();
  const BT* b = y.data<BT>();
  const CT* c = z.data<CT>();
  const int64_t sa = p.inner_stride(1), sb = p.inner_stride(2), sc = p.inner_stride(3);
  detail::with_stride_kind(sa, [&](auto ka) {
    detail::with_stride_kind(sb, [&](auto kb) {
      detail::with_stride_kind(sc, [&](auto kc) {
        constexpr int64_t KA = decltype(ka)::value, KB = decltype(kb)::value, KC = decltype(kc)::value;
        detail::run_rows<4>(p, [&](const std::array<int64_t, 4>& off, int64_t n) {
          detail::row3<KA, KB, KC>(o + off[0], a + off[1], b + off[2], c + off[3], n, sa, sb, sc, f);
        });
      });
    });
  });
}

}  // namespace engine::cpu

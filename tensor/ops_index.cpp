// ops_index.cpp: the indexing family: gather, index_select, scatter_add, index_add, one_hot, cat,
// stack, split, split_sizes, chunk (PyTorch semantics).
//
//   gather(x, d, idx)[p]          = x[p with coordinate d replaced by idx[p]]      (out: idx.shape)
//   index_select(x, d, idx)[.., i, ..] = x[.., idx[i], ..]                          (idx 1-D)
//   scatter_add(x, d, idx, s)     = x, then out[p with coordinate d := idx[p]] += s[p] for p in idx.shape
//   index_add(x, d, idx, s)       = x, then out[.., idx[i], ..] += s[.., i, ..]    (idx 1-D)
//   one_hot(idx, C)[p, c]         = (idx[p] == c)
//
// Index tensors are i64 (i32 accepted). Every index value is bounds-checked: the loops report a
// bad value, and the op raises an engine::Error naming itself, the value, the dim and its size.
// The loops (tensor/cpu/index.h) take raw strides, so no input is copied to make it contiguous;
// contiguous operands take row-wise fast paths over an [outer, n, inner] view. scatter_add and
// index_add are deterministic for duplicate indices (Note [deterministic scatter]). split and
// chunk return narrow() views, each its own autograd Node. Backward formulas:
// autograd/formulas/index.cpp.
// On CUDA (tensor/cuda/index.h) the same shapes and strides go to one-thread-per-element kernels;
// the scatters there add atomically, so with duplicate indices f32/f64 results depend on the
// hardware's order of the additions (last bits, run to run); a bad index is reported through a
// device flag that the op reads back (one synchronisation per call). cat and stack copy with
// cuda::copy_ into views of the output.
#include <algorithm>

#include "autograd/formulas/index.h"
#include "tensor/cpu/index.h"
#if ENGINE_WITH_CUDA
#include "tensor/cuda/copy.h"
#include "tensor/cuda/index.h"
#endif
#include "tensor/dispatch.h"
#include "tensor/op_helpers.h"
#include "tensor/ops.h"

namespace engine {

namespace F = autograd::formulas;

namespace {

// From an index tensor's dtype to its C++ type.
template <typename Fn>
decltype(auto) dispatch_index(const Tensor& index, const char* op, Fn&& f) {
  switch (index.dtype()) {
    case DType::i64: return f(int64_t{});
    case DType::i32: return f(int32_t{});
    default:
      throw Error(fmt::format("{}: index must be an i64 (or i32) tensor, got {}", op, dtype_name(index.dtype())));
  }
}

// Moving elements (gather, index_select) only needs their size: one instantiation per size serves
// every dtype, bf16 and bool included.
template <typename Fn>
decltype(auto) dispatch_by_size(DType t, const char* op, Fn&& f) {
  switch (dtype_size(t)) {
    case 1: return f(uint8_t{});
    case 2: return f(uint16_t{});
    case 4: return f(uint32_t{});
    case 8: return f(uint64_t{});
    default: throw Error(fmt::format("{}: unsupported dtype {}", op, dtype_name(t)));
  }
}

// Adding elements (scatter_add, index_add): the types that have an addition.
template <typename Fn>
decltype(auto) dispatch_addable(DType t, const char* op, Fn&& f) {
  switch (t) {
    case DType::f32: return f(float{});
    case DType::f64: return f(double{});
    case DType::i32: return f(int32_t{});
    case DType::i64: return f(int64_t{});
    default:
      throw Error(fmt::format("{}: unsupported dtype {} (expected f32, f64, i32 or i64)", op, dtype_name(t)));
  }
}

[[noreturn]] void throw_bad_index(const char* op, const Tensor& index, int dim, int64_t size) {
  // Error path only: the index is searched on the host (a CUDA index is copied there first).
  const auto bad = cpu::find_bad_index(index.device().is_cpu() ? index : index.to(Device::cpu()), size);
  if (!bad) throw Error(fmt::format("{}: index out of range for dim {} of size {}", op, dim, size));
  throw Error(fmt::format("{}: index {} is out of range for dim {} of size {} (at position {} of the index)", op,
                          bad->value, dim, size, bad->position.str()));
}

// `strides` with the entry of `dim` set to zero: the indexed coordinate comes from the index value.
Dims without_dim(Dims strides, int dim) {
  strides[dim] = 0;
  return strides;
}

// Strides that broadcast a 0-D or 1-D index along `dim` of an ndim-D iteration space.
Dims index_along(const Tensor& index, int ndim, int dim) {
  Dims s;
  s.resize(ndim, 0);
  if (index.dim() == 1) s[dim] = index.stride(0);
  return s;
}

// True when `a` and `b` have equal sizes in every dim except `dim` (the contiguous fast paths
// need that, so that both are [outer, *, inner] with the same outer and inner).
bool same_except(const Tensor& a, const Tensor& b, int dim) {
  if (a.dim() != b.dim()) return false;
  for (int k = 0; k < a.dim(); ++k)
    if (k != dim && a.size(k) != b.size(k)) return false;
  return true;
}

void check_index_tensor(const char* op, const Tensor& index, const Tensor& x) {
  ENGINE_CHECK(index.defined(), "{}: index is undefined", op);
  ENGINE_CHECK(index.dtype() == DType::i64 || index.dtype() == DType::i32,
               "{}: index must be an i64 (or i32) tensor, got {}", op, dtype_name(index.dtype()));
  ENGINE_CHECK(index.device() == x.device(), "{}: index on {} but input on {}", op, index.device().str(),
               x.device().str());
}

// dst = src (same dtype and shape, dst a fresh output or a view of one) on either device; no
// autograd, no version bump (the caller records the op's own Node).
void copy_into(const Tensor& dst, const Tensor& src) {
  if (use_cuda("copy", dst)) {
#if ENGINE_WITH_CUDA
    cuda::copy_(dst, src);
#endif
  } else {
    cpu::copy_elements(dst, src);
  }
}

// gather / index_select on CUDA over `shape` (the output's), index read with `index_strides`.
bool gather_cuda(const Dims& shape, const Tensor& out, const Tensor& x, int d, const Tensor& index,
                 const Dims& index_strides) {
#if ENGINE_WITH_CUDA
  return cuda::gather_loop(shape, out, out.strides(), x, without_dim(x.strides(), d), x.stride(d), x.size(d), index,
                           index_strides);
#else
  (void)shape, (void)out, (void)x, (void)d, (void)index, (void)index_strides;
  return false;
#endif
}

// scatter_add / index_add on CUDA over `shape` (the source's), out already holding x.
bool scatter_add_cuda(const Dims& shape, const Tensor& out, int d, const Tensor& src, const Dims& src_strides,
                      const Tensor& index, const Dims& index_strides) {
#if ENGINE_WITH_CUDA
  return cuda::scatter_add_loop(shape, out, without_dim(out.strides(), d), out.stride(d), out.size(d), src,
                                src_strides, index, index_strides);
#else
  (void)shape, (void)out, (void)d, (void)src, (void)src_strides, (void)index, (void)index_strides;
  return false;
#endif
}

}  // namespace

// ---- gather / index_select ---------------------------------------------------------------------

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  ENGINE_OP("gather", x, index);
  check_index_tensor("gather", index, x);
  ENGINE_CHECK(x.dim() >= 1, "gather: expected an input with at least one dim, got a 0-D tensor");
  const int d = wrap_dim(dim, x.dim(), "gather");
  ENGINE_CHECK(index.dim() == x.dim(), "gather: index has {} dims ({}) but x has {} ({})", index.dim(),
               index.sizes().str(), x.dim(), x.sizes().str());
  for (int k = 0; k < x.dim(); ++k)
    ENGINE_CHECK(k == d || index.size(k) <= x.size(k),
                 "gather: index shape {} exceeds x shape {} at dim {} (only dim {} may be larger)",
                 index.sizes().str(), x.sizes().str(), k, d);
  Tensor out = empty(index.sizes(), opts(x.dtype(), x.device()));
  const bool ok = use_cuda("gather", x) ? gather_cuda(index.sizes(), out, x, d, index, index.strides())
                                        : dispatch_by_size(x.dtype(), "gather", [&](auto zero) {
    using T = decltype(zero);
    return dispatch_index(index, "gather", [&](auto izero) {
      using I = decltype(izero);
      if (x.is_contiguous() && index.is_contiguous() && same_except(x, index, d))
        return cpu::gather_contiguous<T, I>(out.data<T>(), x.data<T>(), index.data<I>(),
                                            cpu::dim_view(index.sizes(), d), x.size(d));
      return cpu::gather_loop<T, I>(index.sizes(), out.data<T>(), out.strides(), x.data<T>(),
                                    without_dim(x.strides(), d), x.stride(d), x.size(d), index.data<I>(),
                                    index.strides());
    });
  });
  if (!ok) throw_bad_index("gather", index, d, x.size(d));
  F::gather(x, d, index, out);
  return out;
}

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  ENGINE_OP("index_select", x, index);
  check_index_tensor("index_select", index, x);
  ENGINE_CHECK(x.dim() >= 1, "index_select: expected an input with at least one dim, got a 0-D tensor");
  ENGINE_CHECK(index.dim() <= 1, "index_select: index must be 1-D, got shape {}", index.sizes().str());
  const int d = wrap_dim(dim, x.dim(), "index_select");
  Dims out_sizes = x.sizes();
  out_sizes[d] = index.numel();
  Tensor out = empty(out_sizes, opts(x.dtype(), x.device()));
  const bool ok = use_cuda("index_select", x)
                      ? gather_cuda(out_sizes, out, x, d, index, index_along(index, x.dim(), d))
                      : dispatch_by_size(x.dtype(), "index_select", [&](auto zero) {
    using T = decltype(zero);
    return dispatch_index(index, "index_select", [&](auto izero) {
      using I = decltype(izero);
      const int64_t index_stride = index.dim() == 1 ? index.stride(0) : 0;
      if (x.is_contiguous())
        return cpu::index_select_contiguous<T, I>(out.data<T>(), x.data<T>(), index.data<I>(), index_stride,
                                                  cpu::dim_view(out_sizes, d), x.size(d));
      return cpu::gather_loop<T, I>(out_sizes, out.data<T>(), out.strides(), x.data<T>(), without_dim(x.strides(), d),
                                    x.stride(d), x.size(d), index.data<I>(), index_along(index, x.dim(), d));
    });
  });
  if (!ok) throw_bad_index("index_select", index, d, x.size(d));
  F::index_select(x, d, index, out);
  return out;
}

// ---- scatter_add / index_add -------------------------------------------------------------------

Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
  ENGINE_OP("scatter_add", x, index, src);
  check_same("scatter_add", x, src);
  check_index_tensor("scatter_add", index, x);
  ENGINE_CHECK(x.dim() >= 1, "scatter_add: expected an input with at least one dim, got a 0-D tensor");
  const int d = wrap_dim(dim, x.dim(), "scatter_add");
  ENGINE_CHECK(index.dim() == x.dim() && src.dim() == x.dim(),
               "scatter_add: x {}, index {} and src {} must have the same number of dims", x.sizes().str(),
               index.sizes().str(), src.sizes().str());
  for (int k = 0; k < x.dim(); ++k) {
    ENGINE_CHECK(index.size(k) <= src.size(k), "scatter_add: index shape {} exceeds src shape {} at dim {}",
                 index.sizes().str(), src.sizes().str(), k);
    ENGINE_CHECK(k == d || index.size(k) <= x.size(k),
                 "scatter_add: index shape {} exceeds x shape {} at dim {} (only dim {} may be larger)",
                 index.sizes().str(), x.sizes().str(), k, d);
  }
  Tensor out = empty(x.sizes(), opts(x.dtype(), x.device()));
  copy_into(out, x);
  const bool ok = use_cuda("scatter_add", x)
                      ? scatter_add_cuda(index.sizes(), out, d, src, src.strides(), index, index.strides())
                      : dispatch_addable(x.dtype(), "scatter_add", [&](auto zero) {
    using T = decltype(zero);
    return dispatch_index(index, "scatter_add", [&](auto izero) {
      using I = decltype(izero);
      if (index.is_contiguous() && src.is_contiguous() && src.sizes() == index.sizes() && same_except(x, index, d))
        return cpu::scatter_add_contiguous<T, I>(out.data<T>(), src.data<T>(), index.data<I>(),
                                                 cpu::dim_view(index.sizes(), d), x.size(d));
      return cpu::scatter_add_loop<T, I>(index.sizes(), d, out.data<T>(), without_dim(out.strides(), d), out.stride(d),
                                         out.size(d), src.data<T>(), src.strides(), index.data<I>(), index.strides());
    });
  });
  if (!ok) throw_bad_index("scatter_add", index, d, x.size(d));
  F::scatter_add(x, d, index, src, out);
  return out;
}

Tensor index_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
  ENGINE_OP("index_add", x, index, src);
  check_same("index_add", x, src);
  check_index_tensor("index_add", index, x);
  ENGINE_CHECK(x.dim() >= 1, "index_add: expected an input with at least one dim, got a 0-D tensor");
  ENGINE_CHECK(index.dim() <= 1, "index_add: index must be 1-D, got shape {}", index.sizes().str());
  const int d = wrap_dim(dim, x.dim(), "index_add");
  Dims expected = x.sizes();
  expected[d] = index.numel();
  ENGINE_CHECK(src.sizes() == expected,
               "index_add: src has shape {} but must be {} (x {} with dim {} the index length {})",
               src.sizes().str(), expected.str(), x.sizes().str(), d, index.numel());
  Tensor out = empty(x.sizes(), opts(x.dtype(), x.device()));
  copy_into(out, x);
  const bool ok = use_cuda("index_add", x)
                      ? scatter_add_cuda(src.sizes(), out, d, src, src.strides(), index, index_along(index, x.dim(), d))
                      : dispatch_addable(x.dtype(), "index_add", [&](auto zero) {
    using T = decltype(zero);
    return dispatch_index(index, "index_add", [&](auto izero) {
      using I = decltype(izero);
      if (src.is_contiguous())
        return cpu::index_add_contiguous<T, I>(out.data<T>(), src.data<T>(), index.data<I>(),
                                               index.dim() == 1 ? index.stride(0) : 0, cpu::dim_view(src.sizes(), d),
                                               x.size(d));
      return cpu::scatter_add_loop<T, I>(src.sizes(), d, out.data<T>(), without_dim(out.strides(), d), out.stride(d),
                                         out.size(d), src.data<T>(), src.strides(), index.data<I>(),
                                         index_along(index, x.dim(), d));
    });
  });
  if (!ok) throw_bad_index("index_add", index, d, x.size(d));
  F::index_add(x, d, index, src, out);
  return out;
}

// ---- one_hot -----------------------------------------------------------------------------------

Tensor one_hot(const Tensor& index, int64_t num_classes, DType dtype) {
  ENGINE_OP("one_hot", index);
  ENGINE_CHECK(index.defined(), "one_hot: index is undefined");
  ENGINE_CHECK(index.dtype() == DType::i64 || index.dtype() == DType::i32,
               "one_hot: index must be an i64 (or i32) tensor, got {}", dtype_name(index.dtype()));
  ENGINE_CHECK(index.dim() < kMaxDims, "one_hot: index has {} dims, the output would exceed {}", index.dim(),
               kMaxDims);
  ENGINE_CHECK(num_classes >= -1, "one_hot: num_classes must be >= 0 (or -1 to infer), got {}", num_classes);
  if (num_classes == -1) {
    // As PyTorch: one more than the largest index.
    ENGINE_CHECK(index.numel() > 0, "one_hot: cannot infer num_classes from an empty index");
    // The output's shape depends on the values: a CUDA index is brought to the host for it.
    const std::vector<double> v = index.to(Device::cpu()).to_vector();
    num_classes = int64_t(*std::max_element(v.begin(), v.end())) + 1;
  }
  Dims out_sizes = index.sizes();
  out_sizes.push_back(num_classes);
  Tensor out = empty(out_sizes, opts(dtype, index.device()));
  bool ok = true;
  if (use_cuda("one_hot", index)) {
#if ENGINE_WITH_CUDA
    Tensor ic;
    {
      autograd::NoGradGuard no_grad;
      ic = contiguous(index);
    }
    ok = cuda::one_hot(out, ic, num_classes);
#endif
  } else ok = dispatch_numeric(dtype, "one_hot", [&](auto zero) {
    using T = decltype(zero);
    return dispatch_index(index, "one_hot", [&](auto izero) {
      using I = decltype(izero);
      return cpu::one_hot_loop<T, I>(index.sizes(), index.data<I>(), index.strides(), out.data<T>(), num_classes);
    });
  });
  if (!ok) {
    const auto bad = cpu::find_bad_index(index.device().is_cpu() ? index : index.to(Device::cpu()), num_classes);
    throw Error(fmt::format("one_hot: index {} is out of range for num_classes {} (at position {} of the index)",
                            bad ? bad->value : -1, num_classes, bad ? bad->position.str() : "?"));
  }
  return out;
}

// ---- cat / stack -------------------------------------------------------------------------------

Tensor cat(const TensorList& xs, int64_t dim) {
  ENGINE_CHECK(!xs.empty(), "cat: expected a non-empty list of tensors");
  for (size_t i = 0; i < xs.size(); ++i) ENGINE_CHECK(xs[i].defined(), "cat: tensor #{} is undefined", i);
  ENGINE_OP("cat", xs[0]);
  const Tensor& ref = xs[0];
  ENGINE_CHECK(ref.dim() >= 1, "cat: zero-dimensional tensor #0 cannot be concatenated");
  const int d = wrap_dim(dim, ref.dim(), "cat");
  Dims out_sizes = ref.sizes();
  out_sizes[d] = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& x = xs[i];
    ENGINE_CHECK(x.dtype() == ref.dtype(), "cat: tensor #{} is {} but tensor #0 is {}", i, dtype_name(x.dtype()),
                 dtype_name(ref.dtype()));
    ENGINE_CHECK(x.device() == ref.device(), "cat: tensor #{} is on {} but tensor #0 is on {}", i,
                 x.device().str(), ref.device().str());
    ENGINE_CHECK(x.dim() == ref.dim(), "cat: tensor #{} has {} dims ({}) but tensor #0 has {} ({})", i, x.dim(),
                 x.sizes().str(), ref.dim(), ref.sizes().str());
    for (int k = 0; k < ref.dim(); ++k)
      ENGINE_CHECK(k == d || x.size(k) == ref.size(k),
                   "cat: sizes must match except in dim {}: tensor #{} has shape {} but tensor #0 has {}", d, i,
                   x.sizes().str(), ref.sizes().str());
    out_sizes[d] += x.size(d);
  }
  Tensor out = empty(out_sizes, opts(ref.dtype(), ref.device()));
  int64_t offset = 0;
  for (const Tensor& x : xs) {
    // The slot of x in out: a plain view (no autograd), written once.
    copy_into(make_view(out, x.sizes(), out.strides(), out.offset() + offset * out.stride(d)), x);
    offset += x.size(d);
  }
  F::cat(xs, d, out);
  return out;
}

Tensor stack(const TensorList& xs, int64_t dim) {
  ENGINE_CHECK(!xs.empty(), "stack: expected a non-empty list of tensors");
  for (size_t i = 0; i < xs.size(); ++i) ENGINE_CHECK(xs[i].defined(), "stack: tensor #{} is undefined", i);
  ENGINE_OP("stack", xs[0]);
  const Tensor& ref = xs[0];
  ENGINE_CHECK(ref.dim() < kMaxDims, "stack: inputs have {} dims, the output would exceed {}", ref.dim(), kMaxDims);
  const int d = wrap_dim(dim, ref.dim() + 1, "stack");
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& x = xs[i];
    ENGINE_CHECK(x.dtype() == ref.dtype(), "stack: tensor #{} is {} but tensor #0 is {}", i, dtype_name(x.dtype()),
                 dtype_name(ref.dtype()));
    ENGINE_CHECK(x.device() == ref.device(), "stack: tensor #{} is on {} but tensor #0 is on {}", i,
                 x.device().str(), ref.device().str());
    ENGINE_CHECK(x.sizes() == ref.sizes(), "stack: all tensors must have the same shape: tensor #{} has {} but #0 has {}",
                 i, x.sizes().str(), ref.sizes().str());
  }
  Dims out_sizes = ref.sizes();
  out_sizes.insert(d, int64_t(xs.size()));
  Tensor out = empty(out_sizes, opts(ref.dtype(), ref.device()));
  Dims slot_strides = out.strides();
  slot_strides.erase(d);
  for (size_t i = 0; i < xs.size(); ++i)
    copy_into(make_view(out, ref.sizes(), slot_strides, out.offset() + int64_t(i) * out.stride(d)), xs[i]);
  F::stack(xs, d, out);
  return out;
}

// ---- split / chunk: views ----------------------------------------------------------------------

TensorList split(const Tensor& x, int64_t split_size, int64_t dim) {
  ENGINE_CHECK(x.dim() >= 1, "split: expected an input with at least one dim, got a 0-D tensor");
  const int d = wrap_dim(dim, x.dim(), "split");
  const int64_t n = x.size(d);
  ENGINE_CHECK(split_size > 0 || (split_size == 0 && n == 0),
               "split: split_size must be positive (or 0 for an empty dim), got {} for dim {} of size {}", split_size,
               d, n);
  // As PyTorch: ceil(n / split_size) pieces, the last one shorter; an empty dim gives one piece.
  const int64_t pieces = split_size == 0 ? 1 : std::max<int64_t>((n + split_size - 1) / split_size, 1);
  TensorList out;
  out.reserve(size_t(pieces));
  for (int64_t i = 0; i < pieces; ++i) {
    const int64_t start = i * split_size;
    out.push_back(narrow(x, d, start, std::min(split_size, n - start)));
  }
  return out;
}

TensorList split_sizes(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  ENGINE_CHECK(x.dim() >= 1, "split_sizes: expected an input with at least one dim, got a 0-D tensor");
  const int d = wrap_dim(dim, x.dim(), "split_sizes");
  int64_t total = 0;
  for (int64_t s : sizes) {
    ENGINE_CHECK(s >= 0, "split_sizes: negative size {} in the list", s);
    total += s;
  }
  ENGINE_CHECK(total == x.size(d), "split_sizes: sizes sum to {} but dim {} has size {}", total, d, x.size(d));
  TensorList out;
  out.reserve(sizes.size());
  int64_t start = 0;
  for (int64_t s : sizes) {
    out.push_back(narrow(x, d, start, s));
    start += s;
  }
  return out;
}

TensorList chunk(const Tensor& x, int64_t chunks, int64_t dim) {
  ENGINE_CHECK(chunks > 0, "chunk: chunks must be positive, got {}", chunks);
  ENGINE_CHECK(x.dim() >= 1, "chunk: expected an input with at least one dim, got a 0-D tensor");
  const int d = wrap_dim(dim, x.dim(), "chunk");
  const int64_t n = x.size(d);
  // PyTorch's rule: pieces of ceil(n / chunks), so there may be fewer than `chunks` pieces
  // (5 in 4 chunks gives 2, 2, 1); an empty dim gives `chunks` empty pieces.
  const int64_t piece = (n + chunks - 1) / chunks;
  if (n == 0) return split_sizes(x, std::vector<int64_t>(size_t(chunks), 0), d);
  return split(x, piece, d);
}

}  // namespace engine

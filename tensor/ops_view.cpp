// ops_view.cpp: views (no data copied), plus contiguous/clone/to_dtype and sum_to.
//
// A view is a new TensorImpl over the same Storage with other sizes, strides and offset. Views are
// differentiable: their backward formulas (autograd/formulas/view.cpp) map the gradient back to
// the input's geometry (reshape back, inverse permute, sum over expanded dims, zero-pad a slice).
#include <algorithm>
#include <numeric>

#include "autograd/formulas/view.h"
#include "tensor/cpu/loops.h"
#include "tensor/op_helpers.h"
#include "tensor/ops.h"
#include "tensor/precision.h"

namespace engine {

namespace {

// Resolve one -1 in `shape` against `numel`.
Dims infer_shape(const Dims& shape, int64_t numel, const char* op) {
  Dims out = shape;
  int infer = -1;
  int64_t known = 1;
  for (int i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      ENGINE_CHECK(infer < 0, "{}: only one dimension can be -1, got {}", op, shape.str());
      infer = i;
    } else {
      ENGINE_CHECK(out[i] >= 0, "{}: invalid size {} in {}", op, out[i], shape.str());
      known *= out[i];
    }
  }
  if (infer >= 0) {
    ENGINE_CHECK(known != 0 && numel % known == 0, "{}: cannot infer -1 in {} for {} elements", op, shape.str(),
                 numel);
    out[infer] = numel / known;
  }
  ENGINE_CHECK(out.product() == numel, "{}: shape {} is invalid for a tensor of {} elements", op, shape.str(),
               numel);
  return out;
}

// Strides that let `new_shape` view the memory of (sizes, strides), or false when impossible.
// Walks chunks of old dims that are contiguous among themselves (the rule NumPy and PyTorch use).
bool view_strides(const Dims& sizes, const Dims& strides, const Dims& new_shape, Dims& out) {
  out.resize(new_shape.size());
  if (sizes.product() <= 1) {  // empty or a single element: any geometry works
    out = contiguous_strides(new_shape);
    return true;
  }
  int view_d = new_shape.size() - 1;
  int64_t chunk_base_stride = strides.size() ? strides.back() : 1;
  int64_t tensor_numel = 1, view_numel = 1;
  for (int d = sizes.size() - 1; d >= 0; --d) {
    tensor_numel *= sizes[d];
    if (d == 0 || (sizes[d - 1] != 1 && strides[d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || new_shape[view_d] == 1)) {
        out[view_d] = view_numel * chunk_base_stride;
        view_numel *= new_shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return false;
      if (d > 0) {
        chunk_base_stride = strides[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  return view_d == -1;
}

Tensor make_same_view(const Tensor& x, const Dims& sizes, const Dims& strides, int64_t offset) {
  return make_view(x, sizes, strides, offset);
}

}  // namespace

Tensor view(const Tensor& x, const Dims& shape) {
  ENGINE_OP("view", x);
  const Dims target = infer_shape(shape, x.numel(), "view");
  Dims st;
  ENGINE_CHECK(view_strides(x.sizes(), x.strides(), target, st),
               "view: shape {} cannot view a tensor of shape {} with strides {}; use reshape", target.str(),
               x.sizes().str(), x.strides().str());
  Tensor out = make_same_view(x, target, st, x.offset());
  autograd::formulas::reshape_like(x, out);
  return out;
}

Tensor reshape(const Tensor& x, const Dims& shape) {
  const Dims target = infer_shape(shape, x.numel(), "reshape");
  Dims st;
  if (view_strides(x.sizes(), x.strides(), target, st)) return view(x, target);
  return view(contiguous(x), target);
}

Tensor flatten(const Tensor& x, int64_t start_dim, int64_t end_dim) {
  if (x.dim() == 0) return reshape(x, {1});
  const int s = wrap_dim(start_dim, x.dim(), "flatten"), e = wrap_dim(end_dim, x.dim(), "flatten");
  ENGINE_CHECK(s <= e, "flatten: start_dim {} after end_dim {}", start_dim, end_dim);
  Dims shape;
  for (int d = 0; d < s; ++d) shape.push_back(x.size(d));
  int64_t p = 1;
  for (int d = s; d <= e; ++d) p *= x.size(d);
  shape.push_back(p);
  for (int d = e + 1; d < x.dim(); ++d) shape.push_back(x.size(d));
  return reshape(x, shape);
}

Tensor permute(const Tensor& x, const Dims& dims) {
  ENGINE_OP("permute", x);
  ENGINE_CHECK(dims.size() == x.dim(), "permute: {} dims given for a {}-D tensor", dims.size(), x.dim());
  Dims sizes, strides, seen;
  seen.resize(x.dim(), 0);
  for (int i = 0; i < dims.size(); ++i) {
    const int d = wrap_dim(dims[i], x.dim(), "permute");
    ENGINE_CHECK(!seen[d], "permute: dim {} repeated in {}", d, dims.str());
    seen[d] = 1;
    sizes.push_back(x.sizes()[d]);
    strides.push_back(x.strides()[d]);
  }
  Tensor out = make_same_view(x, sizes, strides, x.offset());
  Dims normalized;
  for (int i = 0; i < dims.size(); ++i) normalized.push_back(wrap_dim(dims[i], x.dim(), "permute"));
  autograd::formulas::permute(x, out, normalized);
  return out;
}

Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1) {
  const int a = wrap_dim(dim0, x.dim(), "transpose"), b = wrap_dim(dim1, x.dim(), "transpose");
  Dims perm;
  for (int d = 0; d < x.dim(); ++d) perm.push_back(d);
  std::swap(perm[a], perm[b]);
  return permute(x, perm);
}

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step) {
  ENGINE_OP("slice", x);
  const int d = wrap_dim(dim, x.dim(), "slice");
  const int64_t n = x.sizes()[d];
  ENGINE_CHECK(step >= 1, "slice: step must be positive, got {}", step);
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Dims sizes = x.sizes(), strides = x.strides();
  sizes[d] = (end - start + step - 1) / step;
  strides[d] = x.strides()[d] * step;
  Tensor out = make_same_view(x, sizes, strides, x.offset() + start * x.strides()[d]);
  autograd::formulas::slice(x, out, d, start, end, step);
  return out;
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  const int d = wrap_dim(dim, x.dim(), "narrow");
  const int64_t n = x.sizes()[d];
  if (start < 0) start += n;
  ENGINE_CHECK(start >= 0 && length >= 0 && start + length <= n,
               "narrow: start {} and length {} out of range for dim {} of size {}", start, length, d, n);
  return slice(x, d, start, start + length, 1);
}

Tensor select(const Tensor& x, int64_t dim, int64_t index) {
  const int d = wrap_dim(dim, x.dim(), "select");
  const int64_t n = x.sizes()[d];
  if (index < 0) index += n;
  ENGINE_CHECK(index >= 0 && index < n, "select: index {} out of range for dim {} of size {}", index, d, n);
  return squeeze(narrow(x, d, index, 1), d);
}

Tensor expand(const Tensor& x, const Dims& shape) {
  ENGINE_OP("expand", x);
  ENGINE_CHECK(shape.size() >= x.dim(), "expand: cannot expand shape {} to fewer dims {}", x.sizes().str(),
               shape.str());
  Dims sizes, strides;
  const int lead = shape.size() - x.dim();
  for (int d = 0; d < shape.size(); ++d) {
    const int xd = d - lead;
    const int64_t xs = xd >= 0 ? x.sizes()[xd] : 1;
    int64_t target = shape[d] == -1 ? xs : shape[d];
    ENGINE_CHECK(xd >= 0 || shape[d] != -1, "expand: -1 not allowed for new leading dim in {}", shape.str());
    ENGINE_CHECK(xs == target || xs == 1, "expand: size {} of dim {} cannot expand to {} (shape {} to {})", xs, xd,
                 target, x.sizes().str(), shape.str());
    sizes.push_back(target);
    strides.push_back(xd >= 0 && xs == target ? x.strides()[xd] : 0);
  }
  Tensor out = make_same_view(x, sizes, strides, x.offset());
  autograd::formulas::expand(x, out);
  return out;
}

Tensor squeeze(const Tensor& x, int64_t dim) {
  const int d = wrap_dim(dim, x.dim(), "squeeze");
  if (x.dim() == 0 || x.sizes()[d] != 1) return x;
  Dims shape = x.sizes();
  shape.erase(d);
  return view(x, shape);
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
  const int d = wrap_dim(dim, x.dim() + 1, "unsqueeze");
  Dims shape = x.sizes();
  shape.insert(d, 1);
  return view(x, shape);
}

Tensor as_strided(const Tensor& x, const Dims& sizes, const Dims& strides, int64_t offset) {
  ENGINE_OP("as_strided", x);
  ENGINE_CHECK(sizes.size() == strides.size(), "as_strided: {} sizes but {} strides", sizes.size(), strides.size());
  int64_t max_off = offset;
  for (int d = 0; d < sizes.size(); ++d) {
    ENGINE_CHECK(sizes[d] >= 0 && strides[d] >= 0, "as_strided: negative size or stride in {} / {}", sizes.str(),
                 strides.str());
    if (sizes[d] > 0) max_off += (sizes[d] - 1) * strides[d];
  }
  const int64_t storage_elems = int64_t(x.storage()->nbytes / dtype_size(x.dtype()));
  ENGINE_CHECK(offset >= 0 && (sizes.product() == 0 || max_off < storage_elems),
               "as_strided: view of {} / {} at offset {} reaches past the storage ({} elements)", sizes.str(),
               strides.str(), offset, storage_elems);
  Tensor out = make_same_view(x, sizes, strides, offset);
  autograd::formulas::as_strided(x, out);
  return out;
}

Tensor clone(const Tensor& x) {
  ENGINE_OP("clone", x);
  Tensor out = empty(x.sizes(), opts(x.dtype(), x.device()));
  {
    autograd::NoGradGuard no_grad;
    copy_(out, x);
  }
  out.storage()->version = 0;
  autograd::formulas::identity("CloneBackward", x, out);
  return out;
}

Tensor contiguous(const Tensor& x) {
  if (x.is_contiguous()) return x;
  ENGINE_OP("contiguous", x);
  Tensor out = empty(x.sizes(), opts(x.dtype(), x.device()));
  {
    autograd::NoGradGuard no_grad;
    copy_(out, x);
  }
  out.storage()->version = 0;
  autograd::formulas::identity("ContiguousBackward", x, out);
  return out;
}

// Note [shared bf16 copies]
// Under SavedActivationScope(bf16) two things make bf16 copies of the same f32 activation: a Node
// that packs what it saves (Note [bf16 saved activations], autograd/node.h) and a GEMM op under
// the bf16 matmul policy (its recorded operand). bias_act saves its output y and the next conv
// converts y again: two identical copies, as many bytes as the f32 y they replace. So while the
// scope is active, every f32 -> bf16 to_dtype is remembered here (weak pointers only: the cache
// keeps nothing alive) and a later conversion of the same values (same storage, version, offset
// and geometry) returns a new tensor over the first copy's storage instead of copying again. The
// values are the same either way (round to nearest even of the same f32 values); nothing writes
// into these copies in place, and the version check still applies to each alias.
namespace {

struct Bf16Copy {
  std::weak_ptr<Storage> source;
  uint64_t version = 0;
  int64_t offset = 0;
  Dims sizes, strides;
  std::weak_ptr<Storage> copy;  // contiguous, offset 0, same sizes
};
constexpr size_t kBf16CopyCacheSize = 64;  // most recent conversions of this thread
thread_local std::vector<Bf16Copy> bf16_copies;

bool bf16_copy_cache_active(const Tensor& x, DType dtype) {
  return dtype == DType::bf16 && x.dtype() == DType::f32 && saved_activation_dtype() == DType::bf16;
}

Tensor find_bf16_copy(const Tensor& x) {
  std::erase_if(bf16_copies, [](const Bf16Copy& c) { return c.source.expired() || c.copy.expired(); });
  for (const Bf16Copy& c : bf16_copies) {
    if (c.source.lock() != x.storage() || c.version != x.storage()->version || c.offset != x.offset() ||
        c.sizes != x.sizes() || c.strides != x.strides())
      continue;
    auto impl = std::make_shared<TensorImpl>();
    impl->storage = c.copy.lock();
    impl->sizes = x.sizes();
    impl->strides = contiguous_strides(x.sizes());
    impl->dtype = DType::bf16;
    return Tensor(std::move(impl));
  }
  return Tensor();
}

void remember_bf16_copy(const Tensor& x, const Tensor& copy) {
  if (bf16_copies.size() >= kBf16CopyCacheSize) bf16_copies.erase(bf16_copies.begin());
  bf16_copies.push_back(Bf16Copy{x.storage(), x.storage()->version, x.offset(), x.sizes(), x.strides(), copy.storage()});
}

}  // namespace

Tensor to_dtype(const Tensor& x, DType dtype) {
  if (x.dtype() == dtype) return x;
  ENGINE_OP("to_dtype", x);
  const bool cache = bf16_copy_cache_active(x, dtype);
  if (cache) {
    if (Tensor shared = find_bf16_copy(x); shared.defined()) {
      autograd::formulas::to_dtype(x, shared);
      return shared;
    }
  }
  Tensor out = empty(x.sizes(), opts(dtype, x.device()));
  {
    autograd::NoGradGuard no_grad;
    copy_(out, x);
  }
  out.storage()->version = 0;
  if (cache) remember_bf16_copy(x, out);
  if (is_floating(dtype) && is_floating(x.dtype())) autograd::formulas::to_dtype(x, out);
  return out;
}

Dims broadcast_shapes(const Dims& a, const Dims& b, const char* op) {
  const int n = std::max(a.size(), b.size());
  Dims out;
  out.resize(n);
  for (int i = 0; i < n; ++i) {
    const int ai = i - (n - a.size()), bi = i - (n - b.size());
    const int64_t as = ai >= 0 ? a[ai] : 1, bs = bi >= 0 ? b[bi] : 1;
    ENGINE_CHECK(as == bs || as == 1 || bs == 1, "{}: shapes {} and {} cannot be broadcast together", op, a.str(),
                 b.str());
    out[i] = as == 1 ? bs : as;
  }
  return out;
}

Tensor sum_to(const Tensor& g, const Dims& shape) {
  if (g.sizes() == shape) return g;
  const int lead = g.dim() - shape.size();
  ENGINE_CHECK(lead >= 0, "sum_to: cannot reduce shape {} to {}", g.sizes().str(), shape.str());
  Dims reduce_dims;
  for (int d = 0; d < g.dim(); ++d) {
    const int sd = d - lead;
    if (sd < 0 || (shape[sd] == 1 && g.sizes()[d] != 1)) reduce_dims.push_back(d);
  }
  Tensor r = reduce_dims.empty() ? g : sum(g, reduce_dims, /*keepdim=*/true);
  return reshape(r, shape);
}

Tensor pad_into(const Tensor& x, const Dims& sizes, const Dims& offsets) {
  ENGINE_OP("pad_into", x);
  ENGINE_CHECK(sizes.size() == x.dim() && offsets.size() == x.dim(), "pad_into: rank mismatch ({} vs {} / {})",
               x.dim(), sizes.size(), offsets.size());
  Tensor out = zeros(sizes, opts(x.dtype(), x.device()));
  Tensor region = out;
  for (int d = 0; d < x.dim(); ++d) {
    ENGINE_CHECK(offsets[d] >= 0 && offsets[d] + x.sizes()[d] <= sizes[d],
                 "pad_into: {} at offsets {} does not fit in {}", x.sizes().str(), offsets.str(), sizes.str());
    region = make_view(region, [&] { Dims s = region.sizes(); s[d] = x.sizes()[d]; return s; }(), region.strides(),
                       region.offset() + offsets[d] * region.strides()[d]);
  }
  {
    autograd::NoGradGuard no_grad;
    copy_(region, x);
  }
  out.storage()->version = 0;
  autograd::formulas::pad_into(x, out, offsets);
  return out;
}

}  // namespace engine

namespace engine {

Tensor slice_backward(const Tensor& g, const Dims& input_sizes, int64_t dim, int64_t start, int64_t end,
                      int64_t step) {
  ENGINE_OP("slice_backward", g);
  Tensor out = zeros(input_sizes, opts(g.dtype(), g.device()));
  const int d = int(dim);
  Dims sizes = input_sizes;
  sizes[d] = (end - start + step - 1) / step;
  Dims strides = out.strides();
  strides[d] *= step;
  Tensor region = make_view(out, sizes, strides, start * out.strides()[d]);
  ENGINE_CHECK(region.sizes() == g.sizes(), "slice_backward: gradient shape {} does not match slice {}",
               g.sizes().str(), region.sizes().str());
  {
    autograd::NoGradGuard no_grad;
    copy_(region, g);
  }
  out.storage()->version = 0;
  autograd::formulas::slice_backward(g, out, d, start, end, step);
  return out;
}

}  // namespace engine

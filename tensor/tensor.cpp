// tensor.cpp: Dims, Storage, the Tensor handle, factories, random draws and in-place writes.
#include "tensor/tensor.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "tensor/backend.h"
#include "tensor/cpu/loops.h"
#include "tensor/dispatch.h"
#include "tensor/kernels/convert.h"
#include "tensor/kernels/philox.h"
#include "tensor/op_helpers.h"
#if ENGINE_WITH_CUDA
#include "tensor/cuda/copy.h"
#include "tensor/cuda/random.h"
#endif
#include "tensor/memory/profiler.h"
#include "tensor/ops.h"

namespace engine {

// ---- Dims ------------------------------------------------------------------------------------

Dims::Dims(std::initializer_list<int64_t> values) {
  for (int64_t v : values) push_back(v);
}
Dims::Dims(const std::vector<int64_t>& values) {
  for (int64_t v : values) push_back(v);
}
void Dims::push_back(int64_t x) {
  ENGINE_CHECK(n_ < kMaxDims, "tensor: at most {} dimensions are supported", kMaxDims);
  v_[n_++] = x;
}
void Dims::insert(int pos, int64_t x) {
  ENGINE_CHECK(n_ < kMaxDims, "tensor: at most {} dimensions are supported", kMaxDims);
  for (int i = n_; i > pos; --i) v_[i] = v_[i - 1];
  v_[pos] = x;
  ++n_;
}
void Dims::erase(int pos) {
  for (int i = pos; i + 1 < n_; ++i) v_[i] = v_[i + 1];
  --n_;
}
void Dims::resize(int n, int64_t fill) {
  ENGINE_CHECK(n <= kMaxDims, "tensor: at most {} dimensions are supported", kMaxDims);
  for (int i = n_; i < n; ++i) v_[i] = fill;
  n_ = n;
}
int64_t Dims::product() const {
  int64_t p = 1;
  for (int i = 0; i < n_; ++i) p *= v_[i];
  return p;
}
bool Dims::operator==(const Dims& o) const {
  if (n_ != o.n_) return false;
  for (int i = 0; i < n_; ++i)
    if (v_[i] != o.v_[i]) return false;
  return true;
}
std::string Dims::str() const {
  std::string s = "[";
  for (int i = 0; i < n_; ++i) s += (i ? "," : "") + std::to_string(v_[i]);
  return s + "]";
}

Dims contiguous_strides(const Dims& sizes) {
  Dims st;
  st.resize(sizes.size());
  int64_t acc = 1;
  for (int d = sizes.size() - 1; d >= 0; --d) {
    st[d] = acc;
    acc *= std::max<int64_t>(sizes[d], 1);
  }
  return st;
}

int wrap_dim(int64_t dim, int ndim, const char* op) {
  const int64_t n = std::max(ndim, 1);
  ENGINE_CHECK(dim >= -n && dim < n, "{}: dim {} out of range for a {}-D tensor", op, dim, ndim);
  return int(dim < 0 ? dim + n : dim);
}

// ---- Storage ---------------------------------------------------------------------------------

Storage::Storage(size_t nbytes_, Device device_, memory::Kind kind_)
    : nbytes(nbytes_), device(device_), kind(kind_) {
  data = memory::allocate(device, nbytes, kind);
}
Storage::~Storage() {
  if (data) memory::deallocate(device, data);
}

// ---- Tensor accessors ------------------------------------------------------------------------

namespace {
TensorImpl& checked(const std::shared_ptr<TensorImpl>& p) {
  ENGINE_CHECK(p != nullptr, "tensor: use of an undefined tensor");
  return *p;
}
}  // namespace

const Dims& Tensor::sizes() const { return checked(impl_).sizes; }
const Dims& Tensor::strides() const { return checked(impl_).strides; }
int64_t Tensor::size(int64_t d) const { return sizes()[wrap_dim(d, dim(), "size")]; }
int64_t Tensor::stride(int64_t d) const { return strides()[wrap_dim(d, dim(), "stride")]; }
int Tensor::dim() const { return checked(impl_).sizes.size(); }
int64_t Tensor::numel() const { return checked(impl_).sizes.product(); }
int64_t Tensor::offset() const { return checked(impl_).offset; }
DType Tensor::dtype() const { return checked(impl_).dtype; }
Device Tensor::device() const { return checked(impl_).storage->device; }
const std::shared_ptr<Storage>& Tensor::storage() const { return checked(impl_).storage; }

bool Tensor::is_contiguous() const {
  const TensorImpl& t = checked(impl_);
  int64_t expected = 1;
  for (int d = t.sizes.size() - 1; d >= 0; --d) {
    if (t.sizes[d] == 1) continue;
    if (t.strides[d] != expected) return false;
    expected *= t.sizes[d];
  }
  return true;
}

void* Tensor::raw_data() const {
  const TensorImpl& t = checked(impl_);
  return static_cast<char*>(t.storage->data) + t.offset * int64_t(dtype_size(t.dtype));
}

namespace {
double load_as_double(const void* p, DType t) { return kernels::load_as_double(p, int(t)); }
void store_from_double(void* p, DType t, double v) { kernels::store_from_double(p, int(t), v); }
}  // namespace

std::vector<double> Tensor::to_vector() const {
  Tensor t = device().is_cpu() ? *this : to(Device::cpu());
  std::vector<double> out(size_t(t.numel()));
  const char* base = static_cast<const char*>(t.storage()->data);
  const size_t es = dtype_size(t.dtype());
  const DType dt = t.dtype();
  int64_t i = 0;
  // Logical order: iterate serially (small tensors; tests and printing only).
  Dims idx;
  idx.resize(t.dim());
  const int64_t n = t.numel();
  for (i = 0; i < n; ++i) {
    int64_t off = t.offset();
    for (int d = 0; d < t.dim(); ++d) off += idx[d] * t.strides()[d];
    out[size_t(i)] = load_as_double(base + off * int64_t(es), dt);
    for (int d = t.dim() - 1; d >= 0; --d) {
      if (++idx[d] < t.sizes()[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

double Tensor::item() const {
  ENGINE_CHECK(numel() == 1, "item: expected a one-element tensor, got shape {}", sizes().str());
  return to_vector()[0];
}

bool Tensor::requires_grad() const {
  const TensorImpl& t = checked(impl_);
  return t.requires_grad || t.grad_fn != nullptr;
}
Tensor& Tensor::requires_grad_(bool on) {
  TensorImpl& t = checked(impl_);
  ENGINE_CHECK(t.grad_fn == nullptr, "requires_grad_: only leaf tensors can be marked (this one was made by {})",
               "an op");
  ENGINE_CHECK(!on || is_floating(t.dtype), "requires_grad_: dtype {} cannot require grad",
               dtype_name(t.dtype));
  t.requires_grad = on;
  return *this;
}
const std::shared_ptr<autograd::Node>& Tensor::grad_fn() const { return checked(impl_).grad_fn; }
uint32_t Tensor::output_nr() const { return checked(impl_).output_nr; }
bool Tensor::is_leaf() const { return checked(impl_).grad_fn == nullptr; }
Tensor Tensor::grad() const { return checked(impl_).grad; }
void Tensor::set_grad(const Tensor& g) const { checked(impl_).grad = g; }
const std::string& Tensor::name() const { return checked(impl_).name; }
Tensor& Tensor::set_name(std::string n) {
  checked(impl_).name = std::move(n);
  return *this;
}

Tensor Tensor::detach() const {
  const TensorImpl& t = checked(impl_);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = t.storage;
  impl->offset = t.offset;
  impl->sizes = t.sizes;
  impl->strides = t.strides;
  impl->dtype = t.dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::contiguous() const { return engine::contiguous(*this); }
Tensor Tensor::reshape(const Dims& s) const { return engine::reshape(*this, s); }
Tensor Tensor::view(const Dims& s) const { return engine::view(*this, s); }
Tensor Tensor::permute(const Dims& d) const { return engine::permute(*this, d); }
Tensor Tensor::transpose(int64_t a, int64_t b) const { return engine::transpose(*this, a, b); }
Tensor Tensor::narrow(int64_t d, int64_t s, int64_t l) const { return engine::narrow(*this, d, s, l); }
Tensor Tensor::expand(const Dims& s) const { return engine::expand(*this, s); }
Tensor Tensor::squeeze(int64_t d) const { return engine::squeeze(*this, d); }
Tensor Tensor::unsqueeze(int64_t d) const { return engine::unsqueeze(*this, d); }
Tensor Tensor::to(DType t) const { return engine::to_dtype(*this, t); }
// Between devices: make the source contiguous on its own device (the CPU loop or the CUDA strided
// copy), allocate the destination and let the backend copy the bytes (backend.h).
// Differentiable: the gradient goes back with to().
Tensor Tensor::to(Device d) const {
  if (d == device()) return *this;
  memory::OpScope scope("to_device");
  ENGINE_CHECK(backend::has_device_copy(d, device()),
               "to: copying from {} to {} needs the CUDA backend (configure with -DENGINE_CUDA=ON)",
               device().str(), d.str());
  const TensorOptions out_options{dtype(), d, storage()->kind};
  Tensor out;
  {
    autograd::NoGradGuard no_grad;
    const Tensor x = detach();
    const Tensor src = x.contiguous();  // on its own device (the CUDA strided copy for a view)
    out = empty(sizes(), out_options);
    backend::copy_bytes(out.raw_data(), d, src.raw_data(), src.device(), src.nbytes(), "to");
  }
  if (auto node = autograd::record("ToDeviceBackward", {*this}, {out})) {
    const Device from = device();
    node->backward_fn = [from](autograd::Node&, const TensorList& g) -> TensorList { return {g[0].to(from)}; };
  }
  return out;
}

std::string Tensor::str(int max_per_dim) const {
  if (!defined()) return "tensor(undefined)";
  std::vector<double> v = to_vector();
  std::ostringstream os;
  os << "tensor(";
  const Dims& s = sizes();
  // Recursive printer over dims, eliding the middle of long dims.
  std::function<void(int, int64_t)> rec = [&](int d, int64_t base) {
    if (d == s.size()) {
      os << fmt::format("{:.6g}", v[size_t(base)]);
      return;
    }
    os << "[";
    const int64_t n = s[d];
    const int64_t inner = [&] { int64_t p = 1; for (int k = d + 1; k < s.size(); ++k) p *= s[k]; return p; }();
    for (int64_t i = 0; i < n; ++i) {
      if (n > max_per_dim && i == max_per_dim / 2) {
        os << "..., ";
        i = n - max_per_dim / 2 - 1;
        continue;
      }
      rec(d + 1, base + i * inner);
      if (i + 1 < n) os << ", ";
    }
    os << "]";
  };
  rec(0, 0);
  os << ", " << dtype_name(dtype()) << ", " << s.str();
  if (requires_grad()) os << ", requires_grad";
  os << ")";
  return os.str();
}

// ---- Factories -------------------------------------------------------------------------------

Tensor empty(const Dims& sizes, TensorOptions o) {
  for (int64_t s : sizes) ENGINE_CHECK(s >= 0, "empty: negative size in shape {}", sizes.str());
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(size_t(sizes.product()) * dtype_size(o.dtype), o.device, o.kind);
  impl->sizes = sizes;
  impl->strides = contiguous_strides(sizes);
  impl->dtype = o.dtype;
  if (memory::Profiler::enabled()) memory::annotate(impl->storage->data, sizes.str(), dtype_name(o.dtype));
  return Tensor(std::move(impl));
}
Tensor empty_like(const Tensor& t) { return empty(t.sizes(), opts(t.dtype(), t.device())); }

Tensor full(const Dims& sizes, double value, TensorOptions o) {
  Tensor t = empty(sizes, o);
  fill_(t, value);
  t.storage()->version = 0;  // a fresh tensor starts at version 0
  return t;
}
Tensor zeros(const Dims& sizes, TensorOptions o) { return full(sizes, 0.0, o); }
Tensor ones(const Dims& sizes, TensorOptions o) { return full(sizes, 1.0, o); }
Tensor zeros_like(const Tensor& t) { return zeros(t.sizes(), opts(t.dtype(), t.device())); }
Tensor ones_like(const Tensor& t) { return ones(t.sizes(), opts(t.dtype(), t.device())); }
Tensor full_like(const Tensor& t, double v) { return full(t.sizes(), v, opts(t.dtype(), t.device())); }
Tensor scalar_tensor(double value, TensorOptions o) { return full(Dims{}, value, o); }

Tensor arange(int64_t n, TensorOptions o) {
  std::vector<double> v(size_t(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = double(i);
  return from_vector(v, {n}, o);
}

Tensor from_vector(const std::vector<double>& values, const Dims& sizes, TensorOptions o) {
  ENGINE_CHECK(int64_t(values.size()) == sizes.product(), "from_vector: {} values for shape {}",
               values.size(), sizes.str());
  TensorOptions host = o;
  host.device = Device::cpu();
  Tensor t = empty(sizes, host);
  char* p = static_cast<char*>(t.raw_data());
  const size_t es = dtype_size(o.dtype);
  for (size_t i = 0; i < values.size(); ++i) store_from_double(p + i * es, o.dtype, values[i]);
  return o.device.is_cpu() ? t : t.to(o.device);
}

Tensor from_vector_i64(const std::vector<int64_t>& values, const Dims& sizes, TensorOptions o) {
  ENGINE_CHECK(int64_t(values.size()) == sizes.product(), "from_vector_i64: {} values for shape {}",
               values.size(), sizes.str());
  TensorOptions host = o;
  host.device = Device::cpu();
  Tensor t = empty(sizes, host);
  char* p = static_cast<char*>(t.raw_data());
  const size_t es = dtype_size(o.dtype);
  for (size_t i = 0; i < values.size(); ++i) {
    if (o.dtype == DType::i64)
      reinterpret_cast<int64_t*>(p)[i] = values[i];  // exact beyond 2^53
    else
      store_from_double(p + i * es, o.dtype, double(values[i]));
  }
  return o.device.is_cpu() ? t : t.to(o.device);
}

Tensor make_view(const Tensor& base, const Dims& sizes, const Dims& strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.storage();
  impl->offset = offset;
  impl->sizes = sizes;
  impl->strides = strides;
  impl->dtype = base.dtype();
  return Tensor(std::move(impl));
}

// ---- Random ----------------------------------------------------------------------------------

namespace {
// Element i of a draw is f(seed, offset + i) (Note [counter-based RNG]), stored in the requested
// dtype; the generator advances by numel. CUDA options draw on the device with the same bodies
// (tensor/cuda/random.h), so the values do not depend on the device (docs/cuda.md "Random numbers").
template <typename Draw>
Tensor draw(const Dims& sizes, Generator& gen, TensorOptions o, Draw f) {
  Tensor t = empty(sizes, o);
  const int64_t n = t.numel();
  const uint64_t seed = gen.seed, offset = gen.offset;
  char* p = static_cast<char*>(t.raw_data());
  const size_t es = dtype_size(o.dtype);
  const DType dt = o.dtype;
#pragma omp parallel for schedule(static) if (n >= cpu::kParallelGrain)
  for (int64_t i = 0; i < n; ++i) store_from_double(p + size_t(i) * es, dt, f(seed, offset + uint64_t(i)));
  gen.offset += uint64_t(n);
  return t;
}

// Which backend draws: the CUDA kernels for a CUDA device (use_cuda's error in a CPU-only build).
bool draw_on_cuda(const TensorOptions& o, const char* op) {
  if (!o.device.is_cuda()) return false;
#if ENGINE_WITH_CUDA
  (void)op;
  return true;
#else
  throw Error(fmt::format("{}: options on {} but this build has no CUDA backend (configure with -DENGINE_CUDA=ON)",
                          op, o.device.str()));
#endif
}
}  // namespace

Tensor randn(const Dims& sizes, Generator& gen, TensorOptions o) {
  if (draw_on_cuda(o, "randn")) {
#if ENGINE_WITH_CUDA
    return cuda::randn(sizes, gen, o);
#endif
  }
  return draw(sizes, gen, o, [](uint64_t s, uint64_t i) { return kernels::normal_at(s, i); });
}
Tensor rand(const Dims& sizes, Generator& gen, TensorOptions o) {
  if (draw_on_cuda(o, "rand")) {
#if ENGINE_WITH_CUDA
    return cuda::rand(sizes, gen, o);
#endif
  }
  return draw(sizes, gen, o, [](uint64_t s, uint64_t i) { return kernels::uniform_at(s, i); });
}
Tensor randint(const Dims& sizes, int64_t high, Generator& gen, TensorOptions o) {
  ENGINE_CHECK(high > 0, "randint: high must be positive, got {}", high);
  if (draw_on_cuda(o, "randint")) {
#if ENGINE_WITH_CUDA
    return cuda::randint(sizes, high, gen, o);
#endif
  }
  return draw(sizes, gen, o, [high](uint64_t s, uint64_t i) {
    return std::floor(kernels::uniform_at(s, i) * double(high));
  });
}

// ---- In-place writes -------------------------------------------------------------------------

void bump_version(const Tensor& t, const char* op) {
  t.storage()->version++;
  t.storage()->last_writer = op;
}

namespace {
void check_inplace(const Tensor& dst, const char* op) {
  ENGINE_CHECK(!autograd::grad_enabled() || !dst.requires_grad(),
               "{}: in-place write to a tensor that requires grad; wrap it in NoGradGuard", op);
}
}  // namespace

void copy_(const Tensor& dst, const Tensor& src) {
  memory::OpScope scope("copy_");
  check_inplace(dst, "copy_");
  broadcast_shapes(dst.sizes(), src.sizes(), "copy_");
  if (use_cuda("copy_", dst) || use_cuda("copy_", src)) {
#if ENGINE_WITH_CUDA
    cuda::copy_(dst, src);
#endif
    bump_version(dst, "copy_");
    return;
  }
  const Dims& shape = dst.sizes();
  const std::array<Dims, 2> st = {dst.strides(), cpu::broadcast_strides(src, shape)};
  char* d = static_cast<char*>(dst.raw_data());
  const char* s = static_cast<const char*>(src.raw_data());
  const DType dt = dst.dtype(), sdt = src.dtype();
  const size_t des = dtype_size(dt), ses = dtype_size(sdt);
  if (dt == sdt && dst.is_contiguous() && src.is_contiguous() && src.sizes() == shape) {
    std::memcpy(d, s, size_t(dst.numel()) * des);  // the common clone/contiguous case
  } else if (dt == sdt) {
    // Same type: copy whole elements of the right width so the strided loop can vectorise
    // (a broadcast gradient made contiguous is a stride-0 source, for instance).
    auto typed = [&](auto zero) {
      using E = decltype(zero);
      E* de = reinterpret_cast<E*>(d);
      const E* se = reinterpret_cast<const E*>(s);
      cpu::for_each_strided<2>(shape, st, [&](const std::array<int64_t, 2>& o) { de[o[0]] = se[o[1]]; });
    };
    switch (des) {
      case 1: typed(uint8_t{}); break;
      case 2: typed(uint16_t{}); break;
      case 4: typed(uint32_t{}); break;
      default: typed(uint64_t{}); break;
    }
  } else {
    cpu::for_each_strided<2>(shape, st, [&](const std::array<int64_t, 2>& o) {
      store_from_double(d + o[0] * int64_t(des), dt, load_as_double(s + o[1] * int64_t(ses), sdt));
    });
  }
  bump_version(dst, "copy_");
}

void fill_(const Tensor& dst, double value) {
  memory::OpScope scope("fill_");
  check_inplace(dst, "fill_");
  if (use_cuda("fill_", dst)) {
#if ENGINE_WITH_CUDA
    cuda::fill_(dst, value);
#endif
    bump_version(dst, "fill_");
    return;
  }
  char* d = static_cast<char*>(dst.raw_data());
  const DType dt = dst.dtype();
  const size_t es = dtype_size(dt);
  char pattern[8];
  store_from_double(pattern, dt, value);
  cpu::for_each_strided<1>(dst.sizes(), {dst.strides()}, [&](const std::array<int64_t, 1>& o) {
    std::memcpy(d + o[0] * int64_t(es), pattern, es);
  });
  bump_version(dst, "fill_");
}

void zero_(const Tensor& dst) { fill_(dst, 0.0); }

void add_(const Tensor& dst, const Tensor& src, double alpha) {
  memory::OpScope scope("add_");
  check_inplace(dst, "add_");
  ENGINE_CHECK(dst.dtype() == src.dtype(), "add_: dtype mismatch {} vs {}", dtype_name(dst.dtype()),
               dtype_name(src.dtype()));
  broadcast_shapes(dst.sizes(), src.sizes(), "add_");
  if (use_cuda("add_", dst) || use_cuda("add_", src)) {
#if ENGINE_WITH_CUDA
    cuda::add_(dst, src, alpha);
#endif
    bump_version(dst, "add_");
    return;
  }
  const std::array<Dims, 2> st = {dst.strides(), cpu::broadcast_strides(src, dst.sizes())};
  dispatch_floating(dst.dtype(), "add_", [&](auto zero) {
    using T = decltype(zero);
    T* d = dst.data<T>();
    const T* s = src.data<T>();
    const T a = T(alpha);
    cpu::for_each_strided<2>(dst.sizes(), st, [&](const std::array<int64_t, 2>& o) { d[o[0]] += a * s[o[1]]; });
  });
  bump_version(dst, "add_");
}

void mul_(const Tensor& dst, double value) {
  memory::OpScope scope("mul_");
  check_inplace(dst, "mul_");
  if (use_cuda("mul_", dst)) {
#if ENGINE_WITH_CUDA
    cuda::mul_(dst, value);
#endif
    bump_version(dst, "mul_");
    return;
  }
  dispatch_floating(dst.dtype(), "mul_", [&](auto zero) {
    using T = decltype(zero);
    T* d = dst.data<T>();
    const T v = T(value);
    cpu::for_each_strided<1>(dst.sizes(), {dst.strides()}, [&](const std::array<int64_t, 1>& o) { d[o[0]] *= v; });
  });
  bump_version(dst, "mul_");
}

// ---- f16 conversions (the bodies are kernels/convert.h's, shared with the CUDA copy) ------------

uint16_t f32_to_f16(float f) { return kernels::f32_to_f16_bits(f); }
float f16_to_f32(uint16_t h) { return kernels::f16_bits_to_f32(h); }

}  // namespace engine

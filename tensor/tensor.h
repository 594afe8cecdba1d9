// tensor.h: the Tensor handle, its storage, sizes, strides and views (DESIGN.md section 3).
//
// A Tensor is a cheap handle (a shared pointer) to a TensorImpl: which Storage, where in it
// (offset, in elements), its geometry (sizes and strides, up to 8 dims), dtype, and the autograd
// fields (requires_grad, grad_fn, output_nr, grad). Views (reshape, permute, narrow, expand, ...)
// are new TensorImpls over the same Storage; the Storage carries the version counter, so an
// in-place write through any view is seen by every autograd Node that saved a view of it.
//
// Every byte of a Storage comes from tensor/memory (the arenas and the profiler).
#pragma once
#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "tensor/device.h"
#include "tensor/dtype.h"
#include "tensor/error.h"
#include "tensor/memory/memory.h"

namespace engine {

namespace autograd {
class Node;
}

constexpr int kMaxDims = 8;

// Dims: a small fixed-capacity vector of int64 (sizes, strides, dims lists).
class Dims {
 public:
  Dims() = default;
  Dims(std::initializer_list<int64_t> values);
  explicit Dims(const std::vector<int64_t>& values);
  template <typename It>
  Dims(It first, It last) {
    for (; first != last; ++first) push_back(int64_t(*first));
  }

  int size() const { return n_; }
  bool empty() const { return n_ == 0; }
  int64_t& operator[](int i) { return v_[i]; }
  int64_t operator[](int i) const { return v_[i]; }
  int64_t back() const { return v_[n_ - 1]; }
  const int64_t* begin() const { return v_.data(); }
  const int64_t* end() const { return v_.data() + n_; }
  int64_t* begin() { return v_.data(); }
  int64_t* end() { return v_.data() + n_; }
  void push_back(int64_t x);
  void insert(int pos, int64_t x);
  void erase(int pos);
  void resize(int n, int64_t fill = 0);
  std::vector<int64_t> vec() const { return {begin(), end()}; }
  int64_t product() const;
  bool operator==(const Dims& o) const;
  bool operator!=(const Dims& o) const { return !(*this == o); }
  std::string str() const;  // "[2,3,4]"

 private:
  std::array<int64_t, kMaxDims> v_{};
  int n_ = 0;
};

// Contiguous (row-major) strides for `sizes`.
Dims contiguous_strides(const Dims& sizes);
// Normalise a possibly negative dim index against `ndim`; throws naming `op` when out of range.
int wrap_dim(int64_t dim, int ndim, const char* op);

struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device;
  memory::Kind kind = memory::Kind::activation;
  uint64_t version = 0;     // bumped by every in-place write (Note [saved tensor versions])
  std::string last_writer;  // op that made the last in-place write, for the error message
  Storage(size_t nbytes, Device device, memory::Kind kind);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

class TensorImpl;

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

  // Geometry.
  const Dims& sizes() const;
  const Dims& strides() const;
  int64_t size(int64_t dim) const;
  int64_t stride(int64_t dim) const;
  int dim() const;
  int64_t numel() const;
  int64_t offset() const;
  DType dtype() const;
  Device device() const;
  bool is_contiguous() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype()); }
  const std::shared_ptr<Storage>& storage() const;

  // Raw data. The pointer already includes the offset.
  void* raw_data() const;
  template <typename T>
  T* data() const { return static_cast<T*>(raw_data()); }
  // Value of a one-element tensor as double (any dtype, any device).
  double item() const;
  // Copy to a host std::vector<double> in logical (row-major) order. For tests and printing.
  std::vector<double> to_vector() const;

  // Autograd fields.
  bool requires_grad() const;
  Tensor& requires_grad_(bool on = true);  // only on leaves
  const std::shared_ptr<autograd::Node>& grad_fn() const;
  uint32_t output_nr() const;
  bool is_leaf() const;
  Tensor grad() const;
  void set_grad(const Tensor& g) const;
  // Same data and geometry, no autograd history.
  Tensor detach() const;
  const std::string& name() const;
  Tensor& set_name(std::string name);

  // Convenience members; each forwards to the function of the same name in ops.h.
  Tensor contiguous() const;
  Tensor reshape(const Dims& shape) const;
  Tensor view(const Dims& shape) const;
  Tensor permute(const Dims& dims) const;
  Tensor transpose(int64_t a, int64_t b) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor expand(const Dims& shape) const;
  Tensor squeeze(int64_t dim) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor to(DType dtype) const;
  Tensor to(Device device) const;

  std::string str(int max_per_dim = 6) const;  // "tensor([[1, 2], [3, 4]], f32, [2,2])"

 private:
  std::shared_ptr<TensorImpl> impl_;
};

using TensorList = std::vector<Tensor>;

class TensorImpl {
 public:
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;  // in elements
  Dims sizes;
  Dims strides;
  DType dtype = DType::f32;

  bool requires_grad = false;                  // leaves only; non-leaves: grad_fn != nullptr
  std::shared_ptr<autograd::Node> grad_fn;     // the Node that produced this tensor
  uint32_t output_nr = 0;                      // which output of grad_fn
  Tensor grad;                                 // accumulated by backward() on leaves
  std::weak_ptr<autograd::Node> grad_accumulator;  // AccumulateGrad node of a leaf, shared
  std::string name;
};

// ---- Factories -------------------------------------------------------------------------------

struct TensorOptions {
  DType dtype = DType::f32;
  Device device = Device::cpu();
  memory::Kind kind = memory::Kind::activation;
  TensorOptions& with(DType t) { dtype = t; return *this; }
};
inline TensorOptions opts(DType t, Device d = Device::cpu()) { return {t, d, memory::Kind::activation}; }

Tensor empty(const Dims& sizes, TensorOptions options = {});
Tensor empty_like(const Tensor& t);
Tensor zeros(const Dims& sizes, TensorOptions options = {});
Tensor zeros_like(const Tensor& t);
Tensor ones(const Dims& sizes, TensorOptions options = {});
Tensor ones_like(const Tensor& t);
Tensor full(const Dims& sizes, double value, TensorOptions options = {});
Tensor full_like(const Tensor& t, double value);
Tensor scalar_tensor(double value, TensorOptions options = {});
Tensor arange(int64_t n, TensorOptions options = {});
// From host values (row-major); converted to the requested dtype.
Tensor from_vector(const std::vector<double>& values, const Dims& sizes, TensorOptions options = {});
Tensor from_vector_i64(const std::vector<int64_t>& values, const Dims& sizes,
                       TensorOptions options = opts(DType::i64));
// Wrap `sizes` and `strides` around an existing storage (no copy).
Tensor make_view(const Tensor& base, const Dims& sizes, const Dims& strides, int64_t offset);

// ---- Random numbers: counter-based Philox4x32-10 --------------------------------------------
// The value of element i of a draw depends only on (seed, offset + i), never on thread count,
// device or call order: Note [counter-based RNG]. A Generator advances its offset after each draw.
struct Generator {
  uint64_t seed = 0;
  uint64_t offset = 0;
  explicit Generator(uint64_t s = 0, uint64_t o = 0) : seed(s), offset(o) {}
};
Tensor randn(const Dims& sizes, Generator& gen, TensorOptions options = {});
Tensor rand(const Dims& sizes, Generator& gen, TensorOptions options = {});  // U[0,1)
Tensor randint(const Dims& sizes, int64_t high, Generator& gen, TensorOptions options = opts(DType::i64));

// ---- In-place writes (no-grad only; they bump the storage version) --------------------------
void copy_(const Tensor& dst, const Tensor& src);  // any dtypes, broadcasting src to dst
void fill_(const Tensor& dst, double value);
void zero_(const Tensor& dst);
// dst += alpha * src (same dtype, src broadcast to dst); used by gradient accumulation and optimizers
void add_(const Tensor& dst, const Tensor& src, double alpha = 1.0);
void mul_(const Tensor& dst, double value);
// Bump the version of `t`'s storage, recording `op` as the writer (in-place ops call this).
void bump_version(const Tensor& t, const char* op);

}  // namespace engine

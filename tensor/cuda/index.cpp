// index.cpp (cuda): host side of the indexing kernels (index.h): checks, the coalesced geometry,
// the bad-index flag, and the launch.
#include "tensor/cuda/index.h"

#include "tensor/cuda/copy.h"
#include "tensor/cuda/device.h"
#include "tensor/cuda/elementwise.h"
#include "tensor/cuda/index_launch.h"

namespace engine::cuda {

namespace {

// A device flag set to 0; kernels set it to 1 on a bad index.
Tensor bad_flag(const Device& device) {
  Tensor flag = empty({1}, opts(DType::i32, device));
  cuda::fill_(flag, 0.0);
  return flag;
}

// The flag's value on the host: the op must raise its error before returning, so this copy (and
// the synchronisation it implies) is needed.
bool flag_clear(const Tensor& flag) { return flag.to(Device::cpu()).to_vector()[0] == 0.0; }

template <typename Fn>
decltype(auto) by_index_type(const Tensor& index, const char* op, Fn&& f) {
  switch (index.dtype()) {
    case DType::i64: return f(int64_t{});
    case DType::i32: return f(int32_t{});
    default:
      throw Error(fmt::format("{}: index must be an i64 (or i32) tensor, got {}", op, dtype_name(index.dtype())));
  }
}

void check_on(const char* op, const Tensor& t, const Tensor& out) {
  ENGINE_CHECK(t.device() == out.device(), "{}: operand on {} but the output on {}", op, t.device().str(),
               out.device().str());
}

// The checks every indexing op starts with: out on a CUDA device and each operand beside it.
template <typename... Operands>
void check_operands(const char* op, const Tensor& out, const Operands&... operands) {
  check_device(out.device(), op);
  (check_on(op, operands, out), ...);
}

// Runs launch(flag, stream) on out's device with a fresh bad-index flag and reports whether the
// flag stayed clear (every index in range).
template <typename Launch>
bool launch_flagged(const Tensor& out, Launch&& launch) {
  DeviceGuard guard(out.device());
  const Tensor flag = bad_flag(out.device());
  launch(flag.data<int32_t>(), compute_stream(out.device()));
  return flag_clear(flag);
}

}  // namespace

bool gather_loop(const Dims& shape, const Tensor& out, const Dims& out_strides, const Tensor& x, const Dims& x_strides,
                 int64_t x_stride_dim, int64_t n, const Tensor& index, const Dims& index_strides) {
  const char* op = "cuda::gather";
  check_operands(op, out, x, index);
  ENGINE_CHECK(x.dtype() == out.dtype(), "{}: x is {} but out is {}", op, dtype_name(x.dtype()),
               dtype_name(out.dtype()));
  const int64_t total = shape.product();
  if (total == 0) return true;
  if (n == 0) return false;  // nothing to read: every index is out of range
  const StridedGeometry<3> g = strided_geometry<3>(shape, {out_strides, x_strides, index_strides});
  return launch_flagged(out, [&](int32_t* flag, Stream stream) {
    auto run = [&](auto zero) {
      using T = decltype(zero);
      by_index_type(index, op, [&](auto izero) {
        using I = decltype(izero);
        launch_gather<T, I>(g, static_cast<T*>(out.raw_data()), static_cast<const T*>(x.raw_data()), index.data<I>(),
                            x_stride_dim, n, flag, stream);
      });
    };
    switch (dtype_size(out.dtype())) {
      case 1: run(uint8_t{}); break;
      case 2: run(uint16_t{}); break;
      case 4: run(uint32_t{}); break;
      case 8: run(uint64_t{}); break;
      default: throw Error(fmt::format("{}: unsupported dtype {}", op, dtype_name(out.dtype())));
    }
  });
}

bool scatter_add_loop(const Dims& shape, const Tensor& out, const Dims& out_strides, int64_t out_stride_dim, int64_t n,
                      const Tensor& src, const Dims& src_strides, const Tensor& index, const Dims& index_strides) {
  const char* op = "cuda::scatter_add";
  check_operands(op, out, src, index);
  ENGINE_CHECK(src.dtype() == out.dtype(), "{}: src is {} but out is {}", op, dtype_name(src.dtype()),
               dtype_name(out.dtype()));
  if (shape.product() == 0) return true;
  const StridedGeometry<3> g = strided_geometry<3>(shape, {out_strides, src_strides, index_strides});
  return launch_flagged(out, [&](int32_t* flag, Stream stream) {
    auto run = [&](auto zero) {
      using T = decltype(zero);
      by_index_type(index, op, [&](auto izero) {
        using I = decltype(izero);
        launch_scatter_add<T, I>(g, out.data<T>(), src.data<T>(), index.data<I>(), out_stride_dim, n, flag, stream);
      });
    };
    switch (out.dtype()) {
      case DType::f32: run(float{}); break;
      case DType::f64: run(double{}); break;
      case DType::i32: run(int32_t{}); break;
      case DType::i64: run(int64_t{}); break;
      default:
        throw Error(
            fmt::format("{}: unsupported dtype {} (expected f32, f64, i32 or i64)", op, dtype_name(out.dtype())));
    }
  });
}

bool one_hot(const Tensor& out, const Tensor& index, int64_t num_classes) {
  const char* op = "cuda::one_hot";
  check_operands(op, out, index);
  ENGINE_CHECK(out.is_contiguous() && index.is_contiguous(), "{}: expects contiguous out and index", op);
  const int64_t rows = index.numel();
  if (rows == 0 || num_classes == 0) return rows == 0;
  return launch_flagged(out, [&](int32_t* flag, Stream stream) {
    auto run = [&](auto zero) {
      using T = decltype(zero);
      by_index_type(index, op, [&](auto izero) {
        using I = decltype(izero);
        launch_one_hot<T, I>(rows, num_classes, out.data<T>(), index.data<I>(), flag, stream);
      });
    };
    switch (out.dtype()) {
      case DType::f32: run(float{}); break;
      case DType::f64: run(double{}); break;
      case DType::i32: run(int32_t{}); break;
      case DType::i64: run(int64_t{}); break;
      case DType::u8:
      case DType::boolean: run(uint8_t{}); break;
      default: throw Error(fmt::format("{}: unsupported dtype {}", op, dtype_name(out.dtype())));
    }
  });
}

}  // namespace engine::cuda

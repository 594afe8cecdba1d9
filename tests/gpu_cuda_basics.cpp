// gpu_cuda_basics: the CUDA backend's plumbing (docs/cuda.md).
//
// With a device: the device arena, host<->device copies (dtypes, views, autograd through to()),
// the strided elementwise launcher against the CPU loop, and Philox draws on the GPU against the
// CPU draws. Without one (CI: toolkit, no GPU), every device test prints
// "SKIPPED: no CUDA device" and passes; what can be checked without a GPU still runs: the
// strided geometry the kernels index with, and that every entry point fails with a clear error.
#include <doctest/doctest.h>

#include "tensor/cuda/cuda_api.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "autograd/engine.h"
#include "tensor/backend.h"
#include "tensor/cpu/loops.h"
#include "tensor/cuda/device.h"
#include "tensor/cuda/elementwise.h"
#include "tensor/cuda/random.h"
#include "tensor/kernels/elementwise.h"
#include "tensor/ops.h"
#include "tests/gpu_fixtures.h"

using namespace engine;

namespace {

using gpu_test::kGpu;
using gpu_test::no_device;
using gpu_test::bytes_of;
using gpu_test::contains;
using gpu_test::error_of;

std::vector<double> seq(int64_t n, double scale, double shift) {
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = std::sin(double(i) * scale) * 3.0 + shift;
  return v;
}

}  // namespace

// ---- without a device ------------------------------------------------------------------------

TEST_CASE("strided geometry visits the same offsets in the same order as the CPU loop") {
  // The GPU kernel computes offsets of linear index i with strided_offsets; the CPU loop
  // enumerates them with for_each_strided (serial below kParallelGrain elements). Both must
  // produce the identical sequence of (out, x, y) offsets for broadcast, transposed and sliced
  // operands.
  struct Case {
    Dims shape;
    std::array<Dims, 3> strides;
    bool contiguous;
  };
  const Case cases[] = {
      {{4, 3, 5}, {Dims{15, 5, 1}, Dims{15, 5, 1}, Dims{15, 5, 1}}, true},  // all contiguous: 1 run
      {{4, 3, 5}, {Dims{15, 5, 1}, Dims{5, 0, 1}, Dims{0, 5, 1}}, false},   // broadcast both ways
      {{3, 4}, {Dims{4, 1}, Dims{1, 3}, Dims{0, 0}}, false},                // transposed x, scalar y
      {{2, 3, 2}, {Dims{6, 2, 1}, Dims{20, 4, 2}, Dims{6, 2, 1}}, false},   // sliced x (step 2)
      {{1, 7, 1}, {Dims{7, 1, 1}, Dims{0, 1, 0}, Dims{7, 1, 7}}, true},     // size-1 dims dropped
      {{}, {Dims{}, Dims{}, Dims{}}, true},                                  // one element
  };
  for (const Case& c : cases) {
    CAPTURE(c.shape.str());
    const cuda::StridedGeometry<3> g = cuda::strided_geometry<3>(c.shape, c.strides);
    CHECK(g.numel == c.shape.product());
    CHECK(g.contiguous == c.contiguous);
    std::vector<std::array<int64_t, 3>> expected;
    cpu::for_each_strided<3>(c.shape, c.strides, [&](const std::array<int64_t, 3>& o) { expected.push_back(o); });
    REQUIRE(int64_t(expected.size()) == g.numel);
    for (int64_t i = 0; i < g.numel; ++i) {
      int64_t o[3];
      cuda::strided_offsets<3>(g, i, o);
      if (g.contiguous) {  // the contiguous kernel uses the linear index for every operand
        CHECK(expected[size_t(i)] == std::array<int64_t, 3>{i, i, i});
      }
      CHECK(expected[size_t(i)] == std::array<int64_t, 3>{o[0], o[1], o[2]});
    }
  }
}

TEST_CASE("without a device every CUDA entry point fails with a clear error") {
  if (cuda::is_available()) {
    MESSAGE("a CUDA device is present; the no-device error paths are not reachable");
    return;
  }
  CHECK(cuda::device_count() == 0);
  CHECK_FALSE(cuda::is_available());
  CHECK(contains(error_of([] { cuda::check_device(kGpu, "op"); }), "op: cuda:0 requested but no CUDA device is available"));
  CHECK(contains(error_of([] { (void)cuda::compute_stream(kGpu); }), "no CUDA device is available"));
  CHECK(contains(error_of([] { (void)memory::allocate(kGpu, 1000); }),
                 "on a CUDA device: no CUDA device is available"));
  // The backend is registered (so to() gets as far as the allocation), and fails there.
  CHECK(backend::has_device_copy(kGpu, Device::cpu()));
  Tensor x = from_vector({1, 2, 3}, {3});
  CHECK(contains(error_of([&] { (void)x.to(kGpu); }), "no CUDA device is available"));
  Generator gen(1);
  CHECK(contains(error_of([&] { (void)cuda::randn({4}, gen, opts(DType::f32, kGpu)); }),
                 "cuda::randn: cuda:0 requested but no CUDA device is available"));
  CHECK(gen.offset == 0);
  CHECK(contains(error_of([&] { cuda::map_binary<float, float>(x, x, x, kernels::AddFn{}); }),
                 "cuda::map_binary: expected a CUDA device, got cpu"));
}

// ---- with a device ---------------------------------------------------------------------------

TEST_CASE("device description and stream") {
  if (no_device()) return;
  MESSAGE(cuda::device_description(0));
  CHECK(cuda::device_count() >= 1);
  CHECK(cuda::compute_stream(kGpu) != nullptr);
  CHECK(cuda::compute_stream(kGpu) == cuda::compute_stream(kGpu));  // one stream per device
  cuda::synchronize(kGpu);
  CHECK(contains(error_of([] { cuda::check_device(Device::cuda(cuda::device_count()), "op"); }), "does not exist"));
  // The error macro names the CUDA error, the call and the line.
  const std::string e = error_of([] { ENGINE_CUDA_CHECK(cudaSetDevice(-1)); });
  CHECK(contains(e, "CUDA error cudaError"));  // cudaErrorInvalidDevice
  CHECK(contains(e, "cudaSetDevice(-1)"));
  CHECK(contains(e, "gpu_cuda_basics.cpp:"));
}

TEST_CASE("memory::allocate carves 256-byte aligned device blocks from the CUDA arena") {
  if (no_device()) return;
  const memory::Stats before = memory::stats(kGpu);
  void* a = memory::allocate(kGpu, 1000);
  void* b = memory::allocate(kGpu, 3000);
  REQUIRE(a != nullptr);
  REQUIRE(b != nullptr);
  CHECK(a != b);
  CHECK(reinterpret_cast<uintptr_t>(a) % memory::kAlignment == 0);
  CHECK(reinterpret_cast<uintptr_t>(b) % memory::kAlignment == 0);
  cudaPointerAttributes attr{};
  REQUIRE(cudaPointerGetAttributes(&attr, a) == cudaSuccess);
  CHECK(attr.type == cudaMemoryTypeDevice);
  CHECK(attr.device == 0);
  // 1000 -> 1024 and 3000 -> 3072 bytes after rounding to 256.
  CHECK(memory::stats(kGpu).live - before.live == 1024 + 3072);
  CHECK(memory::stats(kGpu).reserved >= 1024 + 3072);

  // The block is usable device memory: write through the backend copy and read it back.
  std::vector<unsigned char> in(1000), out(1000, 0);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<unsigned char>(i * 7 + 3);
  backend::copy_bytes(a, kGpu, in.data(), Device::cpu(), in.size(), "test");
  backend::copy_bytes(b, kGpu, a, kGpu, in.size(), "test");  // device -> device
  backend::copy_bytes(out.data(), Device::cpu(), b, kGpu, out.size(), "test");
  CHECK(in == out);

  memory::deallocate(kGpu, a);
  memory::deallocate(kGpu, b);
  CHECK(memory::stats(kGpu).live == before.live);
}

TEST_CASE("to(Device) round-trips every dtype, views and empty tensors") {
  if (no_device()) return;
  for (DType t : {DType::f32, DType::f64, DType::bf16, DType::f16, DType::i32, DType::i64, DType::u8, DType::boolean}) {
    CAPTURE(dtype_name(t));
    Tensor x = from_vector({0, 1, -2, 3, 4, 5, 6, 7, 1, 0, 1, 2}, {3, 4}, opts(t));
    if (t == DType::u8 || t == DType::boolean) x = from_vector({0, 1, 2, 3, 4, 5, 6, 7, 1, 0, 1, 2}, {3, 4}, opts(t));
    Tensor g = x.to(kGpu);
    CHECK(g.device() == kGpu);
    CHECK(g.dtype() == t);
    CHECK(g.sizes() == x.sizes());
    Tensor back = g.to(Device::cpu());
    CHECK(back.device().is_cpu());
    CHECK(bytes_of(back) == bytes_of(x));
  }
  // i64 beyond 2^53 survives bit for bit.
  Tensor big = from_vector_i64({(int64_t(1) << 62) + 1, -3}, {2});
  CHECK(bytes_of(big.to(kGpu)) == bytes_of(big));

  // Non-contiguous CPU source: made contiguous before the copy.
  Tensor m = from_vector(seq(24, 0.3, 0.0), {2, 3, 4}, opts(DType::f64));
  Tensor mt = m.permute({2, 0, 1}).narrow(0, 1, 2);
  CHECK(mt.to(kGpu).to_vector() == mt.to_vector());
  // Non-contiguous device source (a transposed and sliced view of a GPU tensor) to the CPU.
  Tensor mg = m.to(kGpu);
  Tensor view = mg.permute({2, 0, 1}).narrow(0, 1, 2);
  CHECK_FALSE(view.is_contiguous());
  CHECK(view.to(Device::cpu()).to_vector() == mt.to_vector());
  CHECK(mg.narrow(2, 3, 1).to_vector() == m.narrow(2, 3, 1).to_vector());  // storage offset
  CHECK(mg.expand({2, 2, 3, 4}).to_vector() == m.expand({2, 2, 3, 4}).to_vector());  // stride 0
  CHECK(mg.narrow(0, 1, 1).narrow(1, 2, 1).narrow(2, 0, 1).item() ==
        m.narrow(0, 1, 1).narrow(1, 2, 1).narrow(2, 0, 1).item());

  // from_vector straight to the device; empty tensors; the storage kind is kept.
  Tensor direct = from_vector({1.5, -2.5}, {2}, opts(DType::f32, kGpu));
  CHECK(direct.device() == kGpu);
  CHECK(direct.to_vector() == std::vector<double>{1.5, -2.5});
  Tensor none = empty({0, 3}, opts(DType::f32)).to(kGpu);
  CHECK(none.numel() == 0);
  CHECK(none.to(Device::cpu()).sizes() == Dims{0, 3});
  TensorOptions param_opts = opts(DType::f32);
  param_opts.kind = memory::Kind::param;
  CHECK(empty({2}, param_opts).to(kGpu).storage()->kind == memory::Kind::param);
}

TEST_CASE("to(Device) is differentiable, to second order") {
  if (no_device()) return;
  // y = sum((x on the GPU, back on the CPU)^3); dy/dx = 3 x^2; d/dx sum(dy/dx) = 6 x.
  Tensor x = from_vector({0.5, -1.0, 2.0}, {3}, opts(DType::f64)).requires_grad_(true);
  Tensor z = x.to(kGpu).to(Device::cpu());
  CHECK(z.requires_grad());
  Tensor y = sum(mul(mul(z, z), z));
  TensorList g = autograd::grad({y}, {x}, {}, /*create_graph=*/true);
  CHECK(g[0].to_vector() == std::vector<double>{0.75, 3.0, 12.0});
  TensorList gg = autograd::grad({sum(g[0])}, {x});
  CHECK(gg[0].to_vector() == std::vector<double>{3.0, -6.0, 12.0});
}

TEST_CASE("in-place writes on the GPU, and launcher argument errors") {
  if (no_device()) return;
  Tensor g = from_vector({1, 2, 3}, {3}, opts(DType::f32, kGpu));
  Tensor c = from_vector({1, 2, 3}, {3});
  CHECK(contains(error_of([&] { copy_(g, c); }), "copy_: source on cpu but destination on cuda:0"));
  CHECK(contains(error_of([&] { add_(c, g); }), "add_: source on cuda:0 but destination on cpu"));
  mul_(g, 2.0);
  CHECK(g.to_vector() == std::vector<double>{2, 4, 6});
  add_(g, from_vector({1, 1, 1}, {3}, opts(DType::f32, kGpu)), -0.5);
  CHECK(g.to_vector() == std::vector<double>{1.5, 3.5, 5.5});
  fill_(g.narrow(0, 1, 2), -7.0);
  CHECK(g.to_vector() == std::vector<double>{1.5, -7, -7});
  CHECK(zeros({2}, opts(DType::f32, kGpu)).to_vector() == std::vector<double>{0, 0});
  // A converting strided copy: f64 transposed source into a bf16 destination, then back.
  Tensor m = from_vector({0.1, 1.0 / 3.0, -2.5, 1e10, 7.0, -0.0}, {2, 3}, opts(DType::f64));
  Tensor bf = empty({3, 2}, opts(DType::bf16, kGpu));
  copy_(bf, m.to(kGpu).transpose(0, 1));
  CHECK(bf.to_vector() == m.transpose(0, 1).to(DType::bf16).to_vector());
  CHECK(contains(error_of([&] { (void)add(g, c); }), "add: device mismatch, cuda:0 vs cpu"));  // ops.h's own check
  CHECK(contains(error_of([&] { cuda::map_binary<float, float>(g, g, c, kernels::AddFn{}); }),
                 "cuda::map_binary: input 1 is on cpu but the output is on cuda:0"));
  CHECK(contains(error_of([&] { cuda::map_binary<double, double>(g, g, g, kernels::AddFn{}); }),
                 "cuda::map_binary: the output has dtype f32, which the kernel was not instantiated for"));
  Tensor g4 = from_vector({1, 2, 3, 4}, {4}, opts(DType::f32, kGpu));
  CHECK(contains(error_of([&] { cuda::map_binary<float, float>(g, g, g4, kernels::AddFn{}); }),
                 "does not broadcast to the output shape [3]"));
  Tensor expanded = from_vector({1}, {1}, opts(DType::f32, kGpu)).expand({3});
  CHECK(contains(error_of([&] { cuda::map_unary<float, float>(expanded, g, kernels::NegFn{}); }),
                 "the output has stride 0 in dim 0"));
}

TEST_CASE_TEMPLATE("elementwise kernels on the GPU equal the CPU loop", T, float, double) {
  if (no_device()) return;
  const DType dt = (std::is_same_v<T, float> ? DType::f32 : DType::f64);
  CAPTURE(dtype_name(dt));
  // Broadcasting [4,1,5] with [3,5], a transposed operand and a sliced (step, offset) operand.
  Tensor a = from_vector(seq(20, 0.7, 0.1), {4, 1, 5}, opts(dt));
  Tensor b = from_vector(seq(15, 1.3, -0.2), {3, 5}, opts(dt));
  Tensor bt_base = from_vector(seq(15, 0.9, 4.0), {5, 3}, opts(dt));
  Tensor bt = bt_base.transpose(0, 1);  // [3,5], strides (1,3)
  Tensor wide = from_vector(seq(4 * 3 * 10, 0.11, 0.5), {4, 3, 10}, opts(dt));
  Tensor sliced = wide.narrow(2, 1, 5);  // [4,3,5], offset 1, not contiguous

  const Dims shape{4, 3, 5};
  auto gpu_binary = [&](const Tensor& x, const Tensor& y, auto f) {
    Tensor out = empty(shape, opts(dt, kGpu));
    cuda::map_binary<T, T>(out, x.to(kGpu), y.to(kGpu), f);
    return out;
  };
  // Bit-exact: + - * / are correctly rounded IEEE operations on both devices.
  CHECK(bytes_of(gpu_binary(a, b, kernels::AddFn{})) == bytes_of(add(a, b)));
  CHECK(bytes_of(gpu_binary(a, bt, kernels::MulFn{})) == bytes_of(mul(a, bt)));
  CHECK(bytes_of(gpu_binary(sliced, b, kernels::SubFn{})) == bytes_of(sub(sliced, b)));
  CHECK(bytes_of(gpu_binary(sliced, bt, kernels::DivFn{})) == bytes_of(div(sliced, bt)));
  CHECK(bytes_of(gpu_binary(wide.narrow(2, 0, 5), a, kernels::AddFn{})) == bytes_of(add(wide.narrow(2, 0, 5), a)));

  // Writing into a non-contiguous output view.
  Tensor out_base = empty({5, 3}, opts(dt, kGpu));
  cuda::map_binary<T, T>(out_base.transpose(0, 1), b.to(kGpu), bt.to(kGpu), kernels::AddFn{});
  CHECK(bytes_of(out_base.transpose(0, 1)) == bytes_of(add(b, bt)));

  // Unary with a scalar: exact; exp/log: each device's libm, equal to a few ulp.
  Tensor us = empty(shape, opts(dt, kGpu));
  cuda::map_unary<T, T>(us, sliced.to(kGpu), kernels::MulScalarFn{-1.75});
  CHECK(bytes_of(us) == bytes_of(mul(sliced, -1.75)));
  cuda::map_unary<T, T>(us, sliced.to(kGpu), kernels::RDivScalarFn{3.0});
  CHECK(bytes_of(us) == bytes_of(div(full(shape, 3.0, opts(dt)), sliced)));
  Tensor ue = empty({3, 5}, opts(dt, kGpu));
  cuda::map_unary<T, T>(ue, bt.to(kGpu), kernels::ExpFn{});
  const std::vector<double> got = ue.to_vector(), want = exp(bt).to_vector();
  for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(sizeof(T) == 4 ? 1e-6 : 1e-14));

  // Large enough for every thread to loop (grid-stride): > 65536 blocks * 256 threads.
  const int64_t n = 4100;
  Tensor big = from_vector(seq(n * n, 0.001, 0.0), {n, n}, opts(dt));
  Tensor row = from_vector(seq(n, 0.37, 1.0), {n}, opts(dt));
  Tensor big_g = big.to(kGpu);
  Tensor out_c = empty({n, n}, opts(dt, kGpu));
  cuda::map_binary<T, T>(out_c, big_g, big_g, kernels::MulFn{});  // contiguous kernel
  CHECK(bytes_of(out_c) == bytes_of(mul(big, big)));
  Tensor out_s = empty({n, n}, opts(dt, kGpu));
  cuda::map_binary<T, T>(out_s, big_g.transpose(0, 1), row.to(kGpu), kernels::AddFn{});  // strided
  CHECK(bytes_of(out_s) == bytes_of(add(big.transpose(0, 1), row)));
}

TEST_CASE("Philox draws on the GPU equal the CPU draws") {
  if (no_device()) return;
  const Dims shape{3, 1000, 37};  // 111000 elements, several blocks
  for (uint64_t start : {uint64_t(0), uint64_t(123456789)}) {
    CAPTURE(start);
    Generator cpu_gen(2024, start), gpu_gen(2024, start);
    // Uniform: exact on both devices (integer bits times a power of two), any dtype.
    CHECK(bytes_of(cuda::rand(shape, gpu_gen, opts(DType::f64, kGpu))) == bytes_of(rand(shape, cpu_gen, opts(DType::f64))));
    CHECK(bytes_of(cuda::rand(shape, gpu_gen, opts(DType::f32, kGpu))) == bytes_of(rand(shape, cpu_gen, opts(DType::f32))));
    // Normal in f32: Box-Muller in double then rounded to float; bit-exact.
    CHECK(bytes_of(cuda::randn(shape, gpu_gen, opts(DType::f32, kGpu))) == bytes_of(randn(shape, cpu_gen, opts(DType::f32))));
    // Normal in f64: log and cos of CUDA's libm and glibc may differ in the last bits.
    const std::vector<double> g = cuda::randn(shape, gpu_gen, opts(DType::f64, kGpu)).to_vector();
    const std::vector<double> c = randn(shape, cpu_gen, opts(DType::f64)).to_vector();
    size_t exact = 0;
    for (size_t i = 0; i < g.size(); ++i) {
      CHECK(std::abs(g[i] - c[i]) <= 8 * std::numeric_limits<double>::epsilon() * std::max(1.0, std::abs(c[i])));
      exact += g[i] == c[i];
    }
    MESSAGE("randn f64: " << exact << " of " << g.size() << " values bit-identical to the CPU");
    CHECK(gpu_gen.offset == cpu_gen.offset);
    CHECK(gpu_gen.offset == start + 4 * uint64_t(shape.product()));
  }
  Generator gen(7);
  CHECK(contains(error_of([&] { (void)cuda::randint({2}, 0, gen, opts(DType::i32, kGpu)); }),
                 "cuda::randint: high must be positive, got 0"));
}

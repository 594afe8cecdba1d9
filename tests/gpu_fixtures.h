// gpu_fixtures.h: shared helpers of the gpu-labelled tests (tests/gpu_*.cpp).
//
// Every GPU test compares an op run on the CUDA device with the same op on the CPU (the CPU ops
// are themselves tested against PyTorch and finite differences in tests/test_*.cpp), for the
// forward pass, the backward pass and, where the CPU has it, the double backward.
//
// Where they run:
//   - a real GPU (build/ with the CUDA backend): the real kernels;
//   - the emulated device (build-emulated/, -DENGINE_CUDA=EMULATE, what CI runs): the same launcher
//     and kernel source compiled for the host (docs/cuda.md "The launch rule and the emulated device");
//   - neither (a CUDA build on a machine without a GPU): every device test prints
//     "SKIPPED: no CUDA device" and returns.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "autograd/engine.h"
#include "tensor/cuda/device.h"
#include "tensor/ops.h"

namespace gpu_test {

inline const engine::Device kGpu = engine::Device::cuda(0);

// The message of the engine::Error `f` throws, or "(no error)".
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const engine::Error& e) {
    return e.what();
  }
  return "(no error)";
}
inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Host bytes of `t` (any device, any geometry) in logical order: a bit-exact view that also
// compares NaNs.
inline std::vector<unsigned char> bytes_of(const engine::Tensor& t) {
  engine::Tensor c = t.to(engine::Device::cpu()).contiguous();
  const auto* p = static_cast<const unsigned char*>(c.raw_data());
  return {p, p + c.nbytes()};
}

// True (after saying so once) when there is no device to run on; each device test returns early.
inline bool no_device() {
  if (engine::cuda::is_available()) return false;
  static bool printed = false;
  if (!printed) {
    std::printf("SKIPPED: no CUDA device (cudaGetDeviceCount reports none); GPU checks not run\n");
    printed = true;
  }
  MESSAGE("SKIPPED: no CUDA device");
  return true;
}

inline bool emulated() {
#if defined(ENGINE_CUDA_EMULATION)
  return true;
#else
  return false;
#endif
}

// A copy of a CPU tensor on the GPU that keeps requires_grad (a leaf of its own graph).
inline engine::Tensor gpu_leaf(const engine::Tensor& cpu) {
  engine::Tensor g = cpu.detach().to(kGpu);
  if (cpu.requires_grad()) g.requires_grad_(true);
  return g;
}

// max |gpu - cpu| / (atol + rtol * |cpu|) over all elements: <= 1 passes. Shapes must match.
inline double error_ratio(const engine::Tensor& gpu, const engine::Tensor& cpu, double rtol, double atol) {
  REQUIRE_MESSAGE(gpu.sizes() == cpu.sizes(), "shape ", gpu.sizes().str(), " vs ", cpu.sizes().str());
  const std::vector<double> a = gpu.to(engine::Device::cpu()).to_vector();
  const std::vector<double> b = cpu.to_vector();
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double err = std::fabs(a[i] - b[i]);
    if (std::isnan(a[i]) != std::isnan(b[i])) return INFINITY;
    if (std::isnan(a[i])) continue;
    worst = std::max(worst, err / (atol + rtol * std::fabs(b[i])));
  }
  return worst;
}

// CHECKs that `gpu` matches `cpu` within (rtol, atol), naming `what` on failure.
inline void check_close(const std::string& what, const engine::Tensor& gpu, const engine::Tensor& cpu,
                        double rtol = 1e-5, double atol = 1e-6) {
  CAPTURE(what);
  REQUIRE(gpu.defined() == cpu.defined());
  if (!cpu.defined()) return;
  CHECK(gpu.device().is_cuda());
  CHECK(gpu.dtype() == cpu.dtype());
  const double r = error_ratio(gpu, cpu, rtol, atol);
  CHECK_MESSAGE(r <= 1.0, what, ": error/tolerance ", r);
}

// Bit-exact comparison (for ops whose kernels round identically on both devices).
inline void check_equal(const std::string& what, const engine::Tensor& gpu, const engine::Tensor& cpu) {
  CAPTURE(what);
  REQUIRE(gpu.sizes() == cpu.sizes());
  CHECK(gpu.to(engine::Device::cpu()).to_vector() == cpu.to_vector());
}

// Runs `f` on CPU inputs and on GPU copies of them; compares the output, the gradients of every
// input that requires grad (backward with a fixed upstream gradient), and, when `second_order`,
// the gradients of sum(grad * v) w.r.t. the inputs (a double backward, as R1 takes).
inline void check_op(const std::string& what, const std::vector<engine::Tensor>& cpu_inputs,
                     const std::function<engine::Tensor(const std::vector<engine::Tensor>&)>& f,
                     double rtol = 1e-5, double atol = 1e-6, bool second_order = false) {
  using namespace engine;
  std::vector<Tensor> gpu_inputs;
  for (const Tensor& t : cpu_inputs) gpu_inputs.push_back(t.defined() ? gpu_leaf(t) : Tensor());
  const Tensor y_cpu = f(cpu_inputs);
  const Tensor y_gpu = f(gpu_inputs);
  check_close(what + " forward", y_gpu, y_cpu, rtol, atol);
  TensorList wrt_cpu, wrt_gpu;
  for (size_t i = 0; i < cpu_inputs.size(); ++i)
    if (cpu_inputs[i].defined() && cpu_inputs[i].requires_grad()) {
      wrt_cpu.push_back(cpu_inputs[i]);
      wrt_gpu.push_back(gpu_inputs[i]);
    }
  if (wrt_cpu.empty() || !y_cpu.requires_grad()) return;
  Generator gen(1234);
  const Tensor up_cpu = randn(y_cpu.sizes(), gen, opts(y_cpu.dtype()));
  const Tensor up_gpu = up_cpu.to(kGpu);
  const TensorList g_cpu = autograd::grad({y_cpu}, wrt_cpu, {up_cpu}, /*create_graph=*/second_order,
                                          /*allow_unused=*/true, /*retain_graph=*/true);
  const TensorList g_gpu = autograd::grad({y_gpu}, wrt_gpu, {up_gpu}, second_order, true, true);
  for (size_t i = 0; i < g_cpu.size(); ++i)
    check_close(what + " grad of input " + std::to_string(i), g_gpu[i], g_cpu[i], rtol, atol);
  if (!second_order) return;
  Tensor s_cpu, s_gpu;
  for (size_t i = 0; i < g_cpu.size(); ++i) {
    if (!g_cpu[i].defined() || !g_cpu[i].requires_grad()) continue;
    const Tensor v = randn(g_cpu[i].sizes(), gen, opts(g_cpu[i].dtype()));
    const Tensor term_cpu = sum(mul(g_cpu[i], v));
    const Tensor term_gpu = sum(mul(g_gpu[i], v.to(kGpu)));
    s_cpu = s_cpu.defined() ? add(s_cpu, term_cpu) : term_cpu;
    s_gpu = s_gpu.defined() ? add(s_gpu, term_gpu) : term_gpu;
  }
  if (!s_cpu.defined()) return;
  const TensorList gg_cpu = autograd::grad({s_cpu}, wrt_cpu, {}, false, /*allow_unused=*/true);
  const TensorList gg_gpu = autograd::grad({s_gpu}, wrt_gpu, {}, false, true);
  for (size_t i = 0; i < gg_cpu.size(); ++i)
    check_close(what + " double-backward grad of input " + std::to_string(i), gg_gpu[i], gg_cpu[i], rtol, atol);
}

}  // namespace gpu_test

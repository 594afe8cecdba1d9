// cudnn_conv.cpp (cuda): the cuDNN convolution path of tensor/cuda/cudnn_conv.h (the legacy
// cudnnConvolutionForward / BackwardData / BackwardFilter API of cuDNN 9). Compiled in every CUDA
// build; without cuDNN (ENGINE_WITH_CUDNN unset: ENGINE_CUDNN=OFF or the emulated device) the
// entry points only throw the "build with cuDNN" error of tensor/conv_algorithm.h.
#include "tensor/cuda/cudnn_conv.h"

#include "tensor/conv_algorithm.h"

#if ENGINE_WITH_CUDNN
#include <cudnn.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <initializer_list>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "tensor/cuda/conv.h"
#include "tensor/cuda/cuda_api.h"
#include "tensor/cuda/device.h"
#endif

namespace engine::cuda {

#if !ENGINE_WITH_CUDNN

bool cudnn_conv2d_forward(const cpu::ConvProblem&, GemmMode, const Tensor&, const Tensor&, const Tensor&,
                          const Tensor&) {
  require_cudnn("conv2d");
  return false;
}
bool cudnn_conv2d_input(const cpu::ConvProblem&, GemmMode, const Tensor&, const Tensor&, const Tensor&,
                        const Tensor&) {
  require_cudnn("conv_transpose2d");
  return false;
}
bool cudnn_conv2d_weight(const cpu::ConvProblem&, GemmMode, const Tensor&, const Tensor&, const Tensor&) {
  require_cudnn("conv2d_weight");
  return false;
}
int64_t cudnn_cached_algorithms() { return 0; }
int64_t cudnn_conv_calls() { return 0; }

#else

namespace {

enum class Direction : int { forward, backward_data, backward_filter };

// What a failing call names: the op, its shapes and arithmetic.
struct Context {
  const char* op;
  const cpu::ConvProblem* p;
  GemmMode mode;
};

std::string describe(const Context& c) {
  const cpu::ConvProblem& p = *c.p;
  const kernels::ConvShape& s = p.shape;
  return fmt::format(
      "input [{}, {}, {}, {}], weight [{}, {}, {}, {}], output [{}, {}, {}, {}], stride ({}, {}), padding ({}, {}), "
      "dilation ({}, {}), groups {}, {}",
      p.batch, p.in_channels, s.height, s.width, p.out_channels, s.channels, s.kernel_h, s.kernel_w, p.batch,
      p.out_channels, s.out_h, s.out_w, s.stride_h, s.stride_w, s.pad_h, s.pad_w, s.dilation_h, s.dilation_w,
      p.groups, gemm_mode_name(c.mode));
}

[[noreturn]] void throw_cudnn(cudnnStatus_t status, const char* call, const Context& c) {
  throw Error(fmt::format("{}: cuDNN error {} ({}) in `{}` for {}", c.op, int(status), cudnnGetErrorString(status),
                          call, describe(c)));
}
#define ENGINE_CUDNN_CHECK(expr, ctx)                          \
  do {                                                         \
    const cudnnStatus_t engine_cudnn_status_ = (expr);         \
    if (engine_cudnn_status_ != CUDNN_STATUS_SUCCESS)          \
      throw_cudnn(engine_cudnn_status_, #expr, ctx);           \
  } while (0)

// Descriptor owners: cheap host objects, created per call.
struct TensorDesc {
  cudnnTensorDescriptor_t h = nullptr;
  ~TensorDesc() {
    if (h) cudnnDestroyTensorDescriptor(h);
  }
};
struct FilterDesc {
  cudnnFilterDescriptor_t h = nullptr;
  ~FilterDesc() {
    if (h) cudnnDestroyFilterDescriptor(h);
  }
};
struct ConvDesc {
  cudnnConvolutionDescriptor_t h = nullptr;
  ~ConvDesc() {
    if (h) cudnnDestroyConvolutionDescriptor(h);
  }
};

// Workspace cap: the im2col path's column budget; an algorithm asking for more is skipped.
constexpr size_t kMaxWorkspace = size_t(256) << 20;

// (device, direction, mode, N, Cin, H, W, Cout, kh, kw, sh, sw, ph, pw, dh, dw, groups)
using Key = std::array<int64_t, 17>;
struct Choice {
  bool ok = false;  // false: no acceptable algorithm, the im2col path runs
  int algo = 0;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
  size_t workspace = 0;
};

struct State {
  std::mutex mutex;
  std::map<int, cudnnHandle_t> handles;  // per device; live for the process
  std::map<Key, Choice> choices;
};
State& state() {
  static State* s = new State();  // never destroyed: handles may be used during static teardown
  return *s;
}
std::atomic<int64_t> calls{0};

cudnnHandle_t handle_for(Device device, const Context& ctx) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  auto it = s.handles.find(device.index);
  if (it != s.handles.end()) return it->second;
  DeviceGuard guard(device);
  cudnnHandle_t h = nullptr;
  ENGINE_CUDNN_CHECK(cudnnCreate(&h), ctx);
  // Every call of the engine on this device runs on its one compute stream (tensor/cuda/device.h).
  ENGINE_CUDNN_CHECK(cudnnSetStream(h, compute_stream(device)), ctx);
  s.handles[device.index] = h;
  return h;
}

cudnnDataType_t data_type(GemmMode mode) { return mode == GemmMode::f64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT; }
DType tensor_dtype(GemmMode mode) { return mode == GemmMode::f64 ? DType::f64 : DType::f32; }

// The math type put on the descriptor for the heuristic, and which of the returned ones are
// acceptable: f32 must never round to TF32, so only FMA kernels; nothing may convert to f16.
cudnnMathType_t requested_math(GemmMode mode) {
  switch (mode) {
    case GemmMode::f32: return CUDNN_FMA_MATH;
    case GemmMode::tf32: return CUDNN_TENSOR_OP_MATH;
    default: return CUDNN_DEFAULT_MATH;
  }
}
bool math_allowed(GemmMode mode, cudnnMathType_t math) {
  if (mode == GemmMode::f32) return math == CUDNN_FMA_MATH;
  return math != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
}

// The direct-sum algorithms (see the header): rounding like a GEMM, deterministic.
bool algo_allowed(Direction d, int algo) {
  switch (d) {
    case Direction::forward:
      return algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM ||
             algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM || algo == CUDNN_CONVOLUTION_FWD_ALGO_GEMM ||
             algo == CUDNN_CONVOLUTION_FWD_ALGO_DIRECT;
    case Direction::backward_data: return algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
    case Direction::backward_filter: return algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1;
  }
  return false;
}

// x [N, Cin, H, W], w [Cout, Cin/G, kh, kw], y [N, Cout, Ho, Wo] and the convolution.
struct Descriptors {
  TensorDesc x, y;
  FilterDesc w;
  ConvDesc conv;
  Descriptors(const cpu::ConvProblem& p, GemmMode mode, const Context& ctx) {
    const kernels::ConvShape& s = p.shape;
    const cudnnDataType_t t = data_type(mode);
    ENGINE_CUDNN_CHECK(cudnnCreateTensorDescriptor(&x.h), ctx);
    ENGINE_CUDNN_CHECK(cudnnSetTensor4dDescriptor(x.h, CUDNN_TENSOR_NCHW, t, int(p.batch), int(p.in_channels),
                                                  int(s.height), int(s.width)),
                       ctx);
    ENGINE_CUDNN_CHECK(cudnnCreateTensorDescriptor(&y.h), ctx);
    ENGINE_CUDNN_CHECK(cudnnSetTensor4dDescriptor(y.h, CUDNN_TENSOR_NCHW, t, int(p.batch), int(p.out_channels),
                                                  int(s.out_h), int(s.out_w)),
                       ctx);
    ENGINE_CUDNN_CHECK(cudnnCreateFilterDescriptor(&w.h), ctx);
    ENGINE_CUDNN_CHECK(cudnnSetFilter4dDescriptor(w.h, t, CUDNN_TENSOR_NCHW, int(p.out_channels), int(s.channels),
                                                  int(s.kernel_h), int(s.kernel_w)),
                       ctx);
    ENGINE_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv.h), ctx);
    // Cross-correlation (no kernel flip), as ops_conv.cpp defines conv2d; accumulation in the
    // data type (f32 for f32 / tf32, f64 for f64).
    ENGINE_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv.h, int(s.pad_h), int(s.pad_w), int(s.stride_h),
                                                       int(s.stride_w), int(s.dilation_h), int(s.dilation_w),
                                                       CUDNN_CROSS_CORRELATION, t),
                       ctx);
    ENGINE_CUDNN_CHECK(cudnnSetConvolutionGroupCount(conv.h, int(p.groups)), ctx);
    ENGINE_CUDNN_CHECK(cudnnSetConvolutionMathType(conv.h, requested_math(mode)), ctx);
  }
};

// The first acceptable entry of a heuristic's list (in its order), with its workspace size.
template <typename Perf, typename WorkspaceOf>
Choice pick(Direction d, GemmMode mode, const std::vector<Perf>& perfs, int returned, cudnnConvolutionDescriptor_t conv,
            const Context& ctx, WorkspaceOf&& workspace_of) {
  for (int i = 0; i < returned && size_t(i) < perfs.size(); ++i) {
    const Perf& r = perfs[size_t(i)];
    if (r.status != CUDNN_STATUS_SUCCESS || r.determinism != CUDNN_DETERMINISTIC || !algo_allowed(d, int(r.algo)) ||
        !math_allowed(mode, r.mathType))
      continue;
    // The workspace size depends on the math type, which lives on the descriptor.
    ENGINE_CUDNN_CHECK(cudnnSetConvolutionMathType(conv, r.mathType), ctx);
    size_t bytes = 0;
    if (workspace_of(r.algo, &bytes) != CUDNN_STATUS_SUCCESS || bytes > kMaxWorkspace) continue;
    Choice c;
    c.ok = true;
    c.algo = int(r.algo);
    c.math = r.mathType;
    c.workspace = bytes;
    return c;
  }
  return Choice();
}

Choice choose(Direction d, Device device, const cpu::ConvProblem& p, GemmMode mode, cudnnHandle_t h,
              const Descriptors& ds, const Context& ctx) {
  const kernels::ConvShape& s = p.shape;
  const Key key{device.index, int64_t(d),     int64_t(mode), p.batch,    p.in_channels, s.height,
                s.width,      p.out_channels, s.kernel_h,    s.kernel_w, s.stride_h,    s.stride_w,
                s.pad_h,      s.pad_w,        s.dilation_h,  s.dilation_w, p.groups};
  State& st = state();
  {
    std::lock_guard<std::mutex> lock(st.mutex);
    auto it = st.choices.find(key);
    if (it != st.choices.end()) return it->second;
  }
  Choice c;
  int count = 0, returned = 0;
  // A problem the heuristic does not support at all is declined (the im2col path runs it); any
  // other failure is an error.
  const auto heuristic = [&](cudnnStatus_t status, const char* call) {
    if (status == CUDNN_STATUS_NOT_SUPPORTED) returned = 0;
    else if (status != CUDNN_STATUS_SUCCESS) throw_cudnn(status, call, ctx);
  };
  switch (d) {
    case Direction::forward: {
      ENGINE_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(h, &count), ctx);
      std::vector<cudnnConvolutionFwdAlgoPerf_t> perfs(size_t(std::max(count, 1)));
      heuristic(cudnnGetConvolutionForwardAlgorithm_v7(h, ds.x.h, ds.w.h, ds.conv.h, ds.y.h, int(perfs.size()),
                                                       &returned, perfs.data()),
                "cudnnGetConvolutionForwardAlgorithm_v7");
      c = pick(d, mode, perfs, returned, ds.conv.h, ctx, [&](cudnnConvolutionFwdAlgo_t algo, size_t* bytes) {
        return cudnnGetConvolutionForwardWorkspaceSize(h, ds.x.h, ds.w.h, ds.conv.h, ds.y.h, algo, bytes);
      });
      break;
    }
    case Direction::backward_data: {
      ENGINE_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, &count), ctx);
      std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perfs(size_t(std::max(count, 1)));
      heuristic(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, ds.w.h, ds.y.h, ds.conv.h, ds.x.h, int(perfs.size()),
                                                            &returned, perfs.data()),
                "cudnnGetConvolutionBackwardDataAlgorithm_v7");
      c = pick(d, mode, perfs, returned, ds.conv.h, ctx, [&](cudnnConvolutionBwdDataAlgo_t algo, size_t* bytes) {
        return cudnnGetConvolutionBackwardDataWorkspaceSize(h, ds.w.h, ds.y.h, ds.conv.h, ds.x.h, algo, bytes);
      });
      break;
    }
    case Direction::backward_filter: {
      ENGINE_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, &count), ctx);
      std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perfs(size_t(std::max(count, 1)));
      heuristic(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, ds.x.h, ds.y.h, ds.conv.h, ds.w.h,
                                                              int(perfs.size()), &returned, perfs.data()),
                "cudnnGetConvolutionBackwardFilterAlgorithm_v7");
      c = pick(d, mode, perfs, returned, ds.conv.h, ctx, [&](cudnnConvolutionBwdFilterAlgo_t algo, size_t* bytes) {
        return cudnnGetConvolutionBackwardFilterWorkspaceSize(h, ds.x.h, ds.y.h, ds.conv.h, ds.w.h, algo, bytes);
      });
      break;
    }
  }
  std::lock_guard<std::mutex> lock(st.mutex);
  st.choices.emplace(key, c);
  return c;
}

void check(const char* op, const Tensor& t, DType dtype, const char* what) {
  ENGINE_CHECK(t.device().is_cuda() && t.is_contiguous() && t.dtype() == dtype,
               "{}: {} must be a contiguous {} tensor on a CUDA device, got {} {} on {}", op, what, dtype_name(dtype),
               t.is_contiguous() ? "contiguous" : "strided", dtype_name(t.dtype()), t.device().str());
}

// Whether cuDNN's 4-D descriptors (int sizes, at most 2^31 - 1 elements per tensor) can describe
// the problem, in a mode it runs exactly. Empty problems are left to the im2col path, which
// defines them (zeros, or the error for an empty batch's weight gradient).
bool describable(const cpu::ConvProblem& p, GemmMode mode, std::initializer_list<const Tensor*> tensors) {
  if (mode == GemmMode::bf16) return false;
  const kernels::ConvShape& s = p.shape;
  for (const Tensor* t : tensors)
    if (t->numel() == 0 || t->numel() > INT_MAX) return false;
  for (int64_t v : {s.kernel_h, s.kernel_w, s.stride_h, s.stride_w, s.pad_h, s.pad_w, s.dilation_h, s.dilation_w,
                    p.groups})
    if (v > INT_MAX) return false;
  return true;
}

// The algorithm's workspace: an arena block tagged with the calling op (its OpScope).
Tensor workspace_for(const Choice& c, Device device) {
  if (c.workspace == 0) return Tensor();
  return empty({int64_t(c.workspace)}, {DType::u8, device, memory::Kind::workspace});
}

// alpha = 1 and beta in the type cuDNN reads for the data type (double for f64, else float).
struct Scalars {
  float a32 = 1.0f, b32 = 0.0f;
  double a64 = 1.0, b64 = 0.0;
  bool f64;
  Scalars(GemmMode mode, double beta) : b32(float(beta)), b64(beta), f64(mode == GemmMode::f64) {}
  const void* alpha() const { return f64 ? static_cast<const void*>(&a64) : static_cast<const void*>(&a32); }
  const void* beta() const { return f64 ? static_cast<const void*>(&b64) : static_cast<const void*>(&b32); }
};

}  // namespace

namespace {

// One cuDNN convolution call: the problem's three tensors (named for the errors), the bias added
// to `out` as `bias_channels` planes of `bias_pixels` (filled first, then cuDNN adds with beta =
// 1; undefined: beta = 0), and `launch`, which issues the cuDNN call through ENGINE_CUDNN_CHECK.
// Returns false (nothing written) for a problem left to the im2col path.
struct Operand {
  const Tensor* tensor;
  const char* what;
};

template <typename Launch>
bool run_cudnn(Direction direction, const Context& ctx, const cpu::ConvProblem& p, GemmMode mode,
               std::initializer_list<Operand> operands, const Tensor& bias, int64_t bias_channels,
               int64_t bias_pixels, const Tensor& out, Launch&& launch) {
  const Operand* o = operands.begin();
  if (!describable(p, mode, {o[0].tensor, o[1].tensor, o[2].tensor})) return false;
  const DType dt = tensor_dtype(mode);
  for (const Operand& operand : operands) check(ctx.op, *operand.tensor, dt, operand.what);
  if (bias.defined()) check(ctx.op, bias, dt, "bias");
  const Device device = out.device();
  check_device(device, ctx.op);
  DeviceGuard guard(device);
  const cudnnHandle_t h = handle_for(device, ctx);
  Descriptors ds(p, mode, ctx);
  const Choice c = choose(direction, device, p, mode, h, ds, ctx);
  if (!c.ok) return false;
  ENGINE_CUDNN_CHECK(cudnnSetConvolutionMathType(ds.conv.h, c.math), ctx);
  const Tensor ws = workspace_for(c, device);
  double beta = 0;
  if (bias.defined()) {
    bias_fill(out, bias, bias_channels, bias_pixels);
    beta = 1;
  }
  launch(h, ds, c, ws.defined() ? ws.raw_data() : nullptr, Scalars(mode, beta));
  calls.fetch_add(1, std::memory_order_relaxed);
  return true;
}

}  // namespace

bool cudnn_conv2d_forward(const cpu::ConvProblem& p, GemmMode mode, const Tensor& x, const Tensor& w,
                          const Tensor& bias, const Tensor& y) {
  const Context ctx{"conv2d", &p, mode};
  return run_cudnn(Direction::forward, ctx, p, mode, {{&x, "input"}, {&w, "weight"}, {&y, "output"}}, bias,
                   p.out_channels, p.shape.out_h * p.shape.out_w, y,
                   [&](cudnnHandle_t h, const Descriptors& ds, const Choice& c, void* ws, const Scalars& sc) {
                     ENGINE_CUDNN_CHECK(cudnnConvolutionForward(h, sc.alpha(), ds.x.h, x.raw_data(), ds.w.h,
                                                                w.raw_data(), ds.conv.h,
                                                                cudnnConvolutionFwdAlgo_t(c.algo), ws, c.workspace,
                                                                sc.beta(), ds.y.h, y.raw_data()),
                                        ctx);
                   });
}

bool cudnn_conv2d_input(const cpu::ConvProblem& p, GemmMode mode, const Tensor& gy, const Tensor& w,
                        const Tensor& bias, const Tensor& x) {
  const Context ctx{"conv_transpose2d", &p, mode};
  return run_cudnn(Direction::backward_data, ctx, p, mode, {{&gy, "input"}, {&w, "weight"}, {&x, "output"}}, bias,
                   p.in_channels, p.shape.height * p.shape.width, x,
                   [&](cudnnHandle_t h, const Descriptors& ds, const Choice& c, void* ws, const Scalars& sc) {
                     ENGINE_CUDNN_CHECK(cudnnConvolutionBackwardData(h, sc.alpha(), ds.w.h, w.raw_data(), ds.y.h,
                                                                     gy.raw_data(), ds.conv.h,
                                                                     cudnnConvolutionBwdDataAlgo_t(c.algo), ws,
                                                                     c.workspace, sc.beta(), ds.x.h, x.raw_data()),
                                        ctx);
                   });
}

bool cudnn_conv2d_weight(const cpu::ConvProblem& p, GemmMode mode, const Tensor& x, const Tensor& gy,
                         const Tensor& gw) {
  const Context ctx{"conv2d_weight", &p, mode};
  return run_cudnn(Direction::backward_filter, ctx, p, mode,
                   {{&x, "input"}, {&gy, "output gradient"}, {&gw, "weight gradient"}}, Tensor(), 0, 0, gw,
                   [&](cudnnHandle_t h, const Descriptors& ds, const Choice& c, void* ws, const Scalars& sc) {
                     ENGINE_CUDNN_CHECK(cudnnConvolutionBackwardFilter(h, sc.alpha(), ds.x.h, x.raw_data(), ds.y.h,
                                                                       gy.raw_data(), ds.conv.h,
                                                                       cudnnConvolutionBwdFilterAlgo_t(c.algo), ws,
                                                                       c.workspace, sc.beta(), ds.w.h, gw.raw_data()),
                                        ctx);
                   });
}

int64_t cudnn_cached_algorithms() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  return int64_t(s.choices.size());
}

int64_t cudnn_conv_calls() { return calls.load(std::memory_order_relaxed); }

#endif

}  // namespace engine::cuda

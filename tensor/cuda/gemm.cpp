// gemm.cpp (cuda): the strided-batched GEMM of tensor/cuda/gemm.h: cuBLASLt on a GPU, the CPU
// GEMM on the host pointers in the emulated-device build.
#include "tensor/cuda/gemm.h"

#include <algorithm>
#include <vector>

#include "tensor/cuda/cuda_api.h"
#include "tensor/cuda/device.h"
#include "tensor/dtype.h"
#include "tensor/error.h"
#include "tensor/tensor.h"

#if defined(ENGINE_CUDA_EMULATION)
#include "tensor/cpu/gemm.h"
#else
#include <cublasLt.h>

#include <array>
#include <map>
#include <mutex>
#include <tuple>
#endif

namespace engine::cuda {

const char* gemm_mode_name(GemmMode mode) {
  switch (mode) {
    case GemmMode::f32: return "f32";
    case GemmMode::tf32: return "tf32";
    case GemmMode::bf16: return "bf16 x bf16 -> f32";
    case GemmMode::f64: return "f64";
  }
  return "?";
}

namespace {

void check_desc(const GemmDesc& d, const char* op) {
  ENGINE_CHECK(d.m >= 0 && d.n >= 0 && d.k >= 0 && d.batch >= 0, "{}: GEMM sizes must be >= 0, got m={} n={} k={} batch={}",
               op, d.m, d.n, d.k, d.batch);
  ENGINE_CHECK(d.beta == 0 || d.beta == 1, "{}: GEMM beta must be 0 or 1, got {}", op, d.beta);
  const int64_t lim = 2147483647;
  ENGINE_CHECK(d.batch <= lim, "{}: GEMM batch count {} does not fit cuBLASLt's 32-bit count", op, d.batch);
  // Leading dimensions as in BLAS: at least the stored row length.
  const int64_t a_cols = d.trans_a ? d.m : d.k, b_cols = d.trans_b ? d.k : d.n;
  ENGINE_CHECK(d.lda >= std::max<int64_t>(a_cols, 1) && d.ldb >= std::max<int64_t>(b_cols, 1) &&
                   d.ldc >= std::max<int64_t>(d.n, 1),
               "{}: GEMM leading dimensions too small (lda={} for {} columns, ldb={} for {}, ldc={} for {})", op, d.lda,
               a_cols, d.ldb, b_cols, d.ldc, d.n);
}

// Elements of one operand spanned by the batch: the last matrix's last element + 1.
int64_t extent(bool trans, int64_t rows, int64_t cols, int64_t ld, int64_t batch, int64_t stride) {
  const int64_t r = trans ? cols : rows, c = trans ? rows : cols;  // as stored
  if (r == 0 || c == 0 || batch == 0) return 0;
  return (batch - 1) * stride + (r - 1) * ld + c;
}

}  // namespace

#if defined(ENGINE_CUDA_EMULATION)

namespace {

template <typename T>
void host_gemm(const GemmDesc& d, const T* a, const T* b, T* c) {
  cpu::gemm_batch<T>(d.batch, d.m, d.n, d.k, [&](int64_t i) {
    cpu::GemmCall<T> g;
    g.trans_a = d.trans_a, g.trans_b = d.trans_b;
    g.m = d.m, g.n = d.n, g.k = d.k;
    g.a = a + i * d.stride_a, g.lda = d.lda;
    g.b = b + i * d.stride_b, g.ldb = d.ldb;
    g.beta = T(d.beta), g.c = c + i * d.stride_c, g.ldc = d.ldc;
    return g;
  });
}

std::vector<float> widen_bf16(const void* p, int64_t count) {
  std::vector<float> out(static_cast<size_t>(count));
  const uint16_t* h = static_cast<const uint16_t*>(p);
  for (int64_t i = 0; i < count; ++i) out[size_t(i)] = bf16_to_f32(h[i]);
  return out;
}

}  // namespace

void gemm(Device device, const GemmDesc& d, const char* op) {
  check_device(device, op);
  check_desc(d, op);
  if (d.batch == 0 || d.m == 0 || d.n == 0) return;
  if (d.k == 0 && d.beta == 0) {
    // BLAS with k = 0 scales C by beta; with beta = 0 it writes zeros.
    for (int64_t i = 0; i < d.batch; ++i)
      for (int64_t r = 0; r < d.m; ++r)
        for (int64_t col = 0; col < d.n; ++col) {
          const int64_t at = i * d.stride_c + r * d.ldc + col;
          if (d.mode == GemmMode::f64) static_cast<double*>(d.c)[at] = 0;
          else static_cast<float*>(d.c)[at] = 0;
        }
    return;
  }
  switch (d.mode) {
    case GemmMode::f64:
      host_gemm<double>(d, static_cast<const double*>(d.a), static_cast<const double*>(d.b), static_cast<double*>(d.c));
      break;
    case GemmMode::f32:
    case GemmMode::tf32:  // no TF32 arithmetic on the host: exact f32, as the CPU backend
      host_gemm<float>(d, static_cast<const float*>(d.a), static_cast<const float*>(d.b), static_cast<float*>(d.c));
      break;
    case GemmMode::bf16: {
      const std::vector<float> a = widen_bf16(d.a, extent(d.trans_a, d.m, d.k, d.lda, d.batch, d.stride_a));
      const std::vector<float> b = widen_bf16(d.b, extent(d.trans_b, d.k, d.n, d.ldb, d.batch, d.stride_b));
      host_gemm<float>(d, a.data(), b.data(), static_cast<float*>(d.c));
      break;
    }
  }
}

int64_t gemm_cached_algorithms() { return 0; }

#else  // real cuBLASLt

namespace {

[[noreturn]] void throw_cublas(cublasStatus_t status, const char* call, const char* op) {
  throw Error(fmt::format("{}: cuBLASLt error {} ({}) in `{}`", op, cublasLtGetStatusName(status),
                          cublasLtGetStatusString(status), call));
}
#define ENGINE_CUBLAS_CHECK(expr, op)                               \
  do {                                                              \
    const cublasStatus_t engine_cublas_status_ = (expr);            \
    if (engine_cublas_status_ != CUBLAS_STATUS_SUCCESS)             \
      throw_cublas(engine_cublas_status_, #expr, op);               \
  } while (0)

// Descriptors are created per call (cheap host objects) and destroyed by these owners.
struct MatmulDesc {
  cublasLtMatmulDesc_t h = nullptr;
  ~MatmulDesc() {
    if (h) cublasLtMatmulDescDestroy(h);
  }
};
struct Layout {
  cublasLtMatrixLayout_t h = nullptr;
  ~Layout() {
    if (h) cublasLtMatrixLayoutDestroy(h);
  }
};
struct Preference {
  cublasLtMatmulPreference_t h = nullptr;
  ~Preference() {
    if (h) cublasLtMatmulPreferenceDestroy(h);
  }
};

// Workspace offered to the heuristic (NVIDIA recommends 32 MiB on Hopper); the arena block is
// only as large as the chosen algorithm asks for.
constexpr uint64_t kMaxWorkspace = uint64_t(32) << 20;

// Largest power of two (up to 256) dividing the address: algorithms with vector loads need it.
uint32_t alignment_of(const void* p) {
  const uintptr_t v = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && v % a != 0) a /= 2;
  return a;
}

using AlgoKey = std::tuple<int, int, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                           int64_t, int64_t, int64_t, uint32_t, uint32_t, uint32_t, bool>;
struct CachedAlgo {
  cublasLtMatmulAlgo_t algo;
  size_t workspace = 0;
};

struct State {
  std::mutex mutex;
  std::map<int, cublasLtHandle_t> handles;  // per device; live for the process
  std::map<AlgoKey, CachedAlgo> algos;
};
State& state() {
  static State* s = new State();  // never destroyed: handles may be used during static teardown
  return *s;
}

cublasLtHandle_t handle_for(Device device, const char* op) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  auto it = s.handles.find(device.index);
  if (it != s.handles.end()) return it->second;
  DeviceGuard guard(device);
  cublasLtHandle_t h = nullptr;
  ENGINE_CUBLAS_CHECK(cublasLtCreate(&h), op);
  s.handles[device.index] = h;
  return h;
}

void set_layout(Layout& l, cudaDataType type, uint64_t rows, uint64_t cols, int64_t ld, int64_t batch,
                int64_t stride, const char* op) {
  ENGINE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l.h, type, rows, cols, ld), op);
  if (batch > 1) {
    const int32_t count = int32_t(batch);
    ENGINE_CUBLAS_CHECK(
        cublasLtMatrixLayoutSetAttribute(l.h, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)), op);
    ENGINE_CUBLAS_CHECK(
        cublasLtMatrixLayoutSetAttribute(l.h, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)),
        op);
  }
}

}  // namespace

void gemm(Device device, const GemmDesc& d, const char* op) {
  check_device(device, op);
  check_desc(d, op);
  if (d.batch == 0 || d.m == 0 || d.n == 0) return;
  DeviceGuard guard(device);
  const size_t esize = d.mode == GemmMode::f64 ? 8 : 4;
  if (d.k == 0) {
    // An empty sum: C = beta * C, i.e. zeros for beta = 0 (cuBLASLt is not asked about k = 0).
    if (d.beta == 0)
      for (int64_t i = 0; i < d.batch; ++i)
        ENGINE_CUDA_CHECK(cudaMemset2DAsync(static_cast<char*>(d.c) + size_t(i * d.stride_c) * esize,
                                            size_t(d.ldc) * esize, 0, size_t(d.n) * esize, size_t(d.m),
                                            compute_stream(device)));
    return;
  }
  cublasLtHandle_t handle = handle_for(device, op);

  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  cudaDataType scale = CUDA_R_32F, in_type = CUDA_R_32F, out_type = CUDA_R_32F;
  switch (d.mode) {
    case GemmMode::f32: break;
    case GemmMode::tf32: compute = CUBLAS_COMPUTE_32F_FAST_TF32; break;
    case GemmMode::bf16: in_type = CUDA_R_16BF; break;
    case GemmMode::f64:
      compute = CUBLAS_COMPUTE_64F;
      scale = in_type = out_type = CUDA_R_64F;
      break;
  }

  // Column-major view of the row-major problem: D^T[n, m] = op(B)^T[n, k] op(A)^T[k, m]. cuBLASLt's
  // first operand is our B: stored (col-major) as [n, k] with ld ldb, or [k, n] when trans_b.
  MatmulDesc desc;
  ENGINE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc.h, compute, scale), op);
  const cublasOperation_t op_first = d.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = d.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  ENGINE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.h, CUBLASLT_MATMUL_DESC_TRANSA, &op_first, sizeof(op_first)),
                      op);
  ENGINE_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(desc.h, CUBLASLT_MATMUL_DESC_TRANSB, &op_second, sizeof(op_second)), op);
  Layout la, lb, lc;
  set_layout(la, in_type, d.trans_b ? d.k : d.n, d.trans_b ? d.n : d.k, d.ldb, d.batch, d.stride_b, op);
  set_layout(lb, in_type, d.trans_a ? d.m : d.k, d.trans_a ? d.k : d.m, d.lda, d.batch, d.stride_a, op);
  set_layout(lc, out_type, d.n, d.m, d.ldc, d.batch, d.stride_c, op);

  const uint32_t align_a = alignment_of(d.a), align_b = alignment_of(d.b), align_c = alignment_of(d.c);
  const AlgoKey key{device.index, int(d.mode), d.trans_a, d.trans_b, d.m, d.n, d.k, d.batch, d.lda, d.ldb, d.ldc,
                    d.stride_a, d.stride_b, d.stride_c, align_a, align_b, align_c, d.beta != 0};
  CachedAlgo chosen;
  bool found = false;
  {
    State& s = state();
    std::lock_guard<std::mutex> lock(s.mutex);
    auto it = s.algos.find(key);
    if (it != s.algos.end()) {
      chosen = it->second;
      found = true;
    }
  }
  if (!found) {
    Preference pref;
    ENGINE_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref.h), op);
    const uint64_t ws = kMaxWorkspace;
    ENGINE_CUBLAS_CHECK(
        cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)), op);
    // Our A is cuBLASLt's B and vice versa.
    ENGINE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                             &align_b, sizeof(align_b)),
                        op);
    ENGINE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                             &align_a, sizeof(align_a)),
                        op);
    ENGINE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                             &align_c, sizeof(align_c)),
                        op);
    ENGINE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                             &align_c, sizeof(align_c)),
                        op);
    cublasLtMatmulHeuristicResult_t result{};
    int returned = 0;
    ENGINE_CUBLAS_CHECK(
        cublasLtMatmulAlgoGetHeuristic(handle, desc.h, la.h, lb.h, lc.h, lc.h, pref.h, 1, &result, &returned), op);
    ENGINE_CHECK(returned > 0,
                 "{}: cuBLASLt has no algorithm for a {} GEMM m={} n={} k={} batch={} (lda={} ldb={} ldc={})", op,
                 gemm_mode_name(d.mode), d.m, d.n, d.k, d.batch, d.lda, d.ldb, d.ldc);
    chosen.algo = result.algo;
    chosen.workspace = result.workspaceSize;
    State& s = state();
    std::lock_guard<std::mutex> lock(s.mutex);
    s.algos.emplace(key, chosen);
  }

  // The workspace block of the arena (tagged with the calling op by its OpScope).
  Tensor workspace;
  if (chosen.workspace > 0)
    workspace = empty({int64_t(chosen.workspace)}, {DType::u8, device, memory::Kind::workspace});
  const float alpha32 = 1.0f, beta32 = float(d.beta);
  const double alpha64 = 1.0, beta64 = d.beta;
  const bool f64 = d.mode == GemmMode::f64;
  const void* alpha = f64 ? static_cast<const void*>(&alpha64) : static_cast<const void*>(&alpha32);
  const void* beta = f64 ? static_cast<const void*>(&beta64) : static_cast<const void*>(&beta32);
  ENGINE_CUBLAS_CHECK(cublasLtMatmul(handle, desc.h, alpha, d.b, la.h, d.a, lb.h, beta, d.c, lc.h, d.c, lc.h,
                                     &chosen.algo, workspace.defined() ? workspace.raw_data() : nullptr,
                                     chosen.workspace, compute_stream(device)),
                      op);
}

int64_t gemm_cached_algorithms() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  return int64_t(s.algos.size());
}

#endif

}  // namespace engine::cuda

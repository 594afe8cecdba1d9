// device.h (cuda): which CUDA devices exist, the one compute stream of each, and error checking.
//
// Every CUDA call of the engine goes through ENGINE_CUDA_CHECK, which turns a failing
// cudaError_t into an engine::Error naming the CUDA error, the call and the source line, so a
// GPU failure reads like any other engine error.
//
// Streams: the engine runs all work of a device on one compute stream (compute_stream). The
// arena hands a freed block to the next allocation at once, without waiting for the GPU; that is
// safe only because every kernel and copy that can touch the block is ordered on this same
// stream (the rule of PyTorch's caching allocator, with one stream). Anything that reads device
// memory from the host must synchronize() first.
//
// Availability never throws: with no GPU, no driver or a broken driver, device_count() is 0.
//
// This header does not include the CUDA headers, so plain C++ files (tests, the op layer) can
// use it; files that call the CUDA runtime include tensor/cuda/cuda_api.h.
#pragma once
#include <string>

#include "tensor/device.h"

// The runtime's stream type (cudaStream_t is a typedef of CUstream_st*).
struct CUstream_st;

namespace engine::cuda {

using Stream = CUstream_st*;

// Number of usable CUDA devices; 0 when the runtime reports any error (no device, no driver,
// driver older than the runtime). Queried once and cached.
int device_count();
bool is_available();
// "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)"; throws engine::Error for a bad index.
std::string device_description(int index);

// Throws a clear engine::Error unless `device` is a CUDA device that exists. `op` names the
// caller in the message.
void check_device(Device device, const char* op);

// The compute stream of `device` (created on first use, never destroyed: tensors freed during
// program exit may still need it).
Stream compute_stream(Device device);
// Wait until all work queued on `device`'s compute stream has finished.
void synchronize(Device device);

// The calling thread's current CUDA device (cudaGetDevice / cudaSetDevice).
int current_device();
void set_device(int index);

// RAII: make `device` current for a scope, restore the previous one on exit.
class DeviceGuard {
 public:
  explicit DeviceGuard(Device device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

// Throws engine::Error("CUDA error cudaErrorX (text) in `expr` at file:line").
[[noreturn]] void throw_cuda_error(int code, const char* expr, const char* file, int line);

}  // namespace engine::cuda

// ENGINE_CUDA_CHECK(cudaMemcpyAsync(...)): cudaSuccess is 0, so the check needs no CUDA header.
#define ENGINE_CUDA_CHECK(expr)                                                        \
  do {                                                                                 \
    const int engine_cuda_status_ = static_cast<int>(expr);                            \
    if (engine_cuda_status_ != 0)                                                      \
      ::engine::cuda::throw_cuda_error(engine_cuda_status_, #expr, __FILE__, __LINE__); \
  } while (0)

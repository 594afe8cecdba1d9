// cuda_runtime_emulated.h: the subset of the CUDA runtime API the engine uses, implemented on the
// host, for the emulated-device build (-DENGINE_CUDA=EMULATE, docs/cuda.md "The launch rule and the emulated device").
//
// Why: the CUDA backend is mostly launchers (tensor/cuda/*.cu) around the portable kernel bodies
// of tensor/kernels/. On a machine without a GPU, nvcc can compile them but nothing can run them.
// The emulated build compiles the same .cu files with g++ instead: `launch_elements` (launch.cuh)
// becomes a host loop over the element index, and this header stands in for <cuda_runtime.h>.
// "Device" memory is host memory from cudaMalloc below, so every CUDA code path of the engine (op
// dispatch, the Tensor-level launcher, the kernel's index arithmetic, the device arena, the
// profiler's CUDA events and cudaMemGetInfo reconciliation) runs and is tested on any machine.
//
// What it cannot check: real concurrency (races, missing synchronisation: here every call is
// synchronous), host code that dereferences a device pointer (here that works), cuBLASLt and
// cuDNN (replaced by the CPU GEMM in emulation), and performance.
//
// Faithful details that catch real bugs:
//   - cudaMalloc memory is filled with 0xFF bytes (NaN in every float type): a kernel that relies
//     on fresh memory being zero fails its test, as it would on a GPU with reused memory;
//   - the emulated device has a fixed capacity (ENGINE_EMULATED_MEMORY_MIB, default 16384):
//     cudaMalloc beyond it returns cudaErrorMemoryAllocation, so out-of-memory paths run;
//   - ENGINE_EMULATED_DEVICES (default 1) sets cudaGetDeviceCount; 0 emulates "no GPU".
#pragma once
#include <cstddef>
#include <cstdint>

// CUDA's function-space and inlining keywords mean nothing to g++.
#define __host__
#define __device__
#define __global__
#define __forceinline__ inline

struct CUstream_st;
struct CUevent_st;
using cudaStream_t = CUstream_st*;
using cudaEvent_t = CUevent_st*;

enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorCudartUnloading = 4,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorNotReady = 600,
};
using cudaError = cudaError_t;

enum cudaMemcpyKind : int {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

enum cudaMemoryType : int {
  cudaMemoryTypeUnregistered = 0,
  cudaMemoryTypeHost = 1,
  cudaMemoryTypeDevice = 2,
  cudaMemoryTypeManaged = 3,
};

struct cudaPointerAttributes {
  cudaMemoryType type = cudaMemoryTypeUnregistered;
  int device = -1;
  void* devicePointer = nullptr;
  void* hostPointer = nullptr;
};

struct cudaDeviceProp {
  char name[256] = {};
  size_t totalGlobalMem = 0;
  int major = 0, minor = 0;
  int multiProcessorCount = 0;
  int clockRate = 0;  // kHz
};

constexpr unsigned int cudaStreamDefault = 0x0;
constexpr unsigned int cudaStreamNonBlocking = 0x1;
constexpr unsigned int cudaEventDefault = 0x0;
constexpr unsigned int cudaEventDisableTiming = 0x2;
constexpr unsigned int cudaHostAllocDefault = 0x0;

cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorName(cudaError_t error);
const char* cudaGetErrorString(cudaError_t error);
cudaError_t cudaDeviceSynchronize();

cudaError_t cudaMalloc(void** ptr, size_t bytes);
cudaError_t cudaFree(void* ptr);
cudaError_t cudaMallocHost(void** ptr, size_t bytes);
cudaError_t cudaHostAlloc(void** ptr, size_t bytes, unsigned int flags);
cudaError_t cudaFreeHost(void* ptr);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attributes, const void* ptr);

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = nullptr);
cudaError_t cudaMemcpyPeerAsync(void* dst, int dst_device, const void* src, int src_device, size_t bytes,
                                cudaStream_t stream = nullptr);
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream = nullptr);

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);

cudaError_t cudaEventCreate(cudaEvent_t* event);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventQuery(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags = 0);

// Emulation only: the bytes currently held by cudaMalloc on `device` (tests check the arena and
// the profiler's reconciliation against it).
size_t engine_emulated_allocated_bytes(int device);

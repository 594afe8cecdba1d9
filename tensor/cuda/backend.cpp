// backend.cpp (cuda): plugs the CUDA backend into the device-independent engine at static
// initialisation time:
//   - the raw allocator of the memory arenas (memory.h): whole chunks from cudaMalloc/cudaFree,
//     so memory::allocate(Device::cuda(i), n) carves 256-byte aligned blocks from a device arena
//     exactly as on the CPU (cudaMalloc returns at least 256-byte aligned addresses);
//   - the byte copy between host and device used by Tensor::to(Device) (backend.h).
//
// The raw allocator has no device argument (RawAllocator::reserve(bytes)), so chunks come from
// the calling thread's current CUDA device; one device per process (or a DeviceGuard around the
// first allocation on each device) is assumed until RawAllocator carries the device index.
#include "tensor/cuda/cuda_api.h"

#include <fmt/format.h>

#include "tensor/backend.h"
#include "tensor/cuda/device.h"
#include "tensor/cuda/timing.h"
#include "tensor/error.h"
#include "tensor/memory/memory.h"

namespace engine::cuda {

namespace {

void* reserve_device_chunk(size_t bytes) {
  ENGINE_CHECK(is_available(),
               "memory: cannot reserve {} on a CUDA device: no CUDA device is available (no GPU or "
               "no driver)",
               memory::format_bytes(int64_t(bytes)));
  void* ptr = nullptr;
  const cudaError_t status = cudaMalloc(&ptr, bytes);
  if (status == cudaErrorMemoryAllocation) {
    // Out of device memory: let the arena report its live-set table.
    (void)cudaGetLastError();
    return nullptr;
  }
  ENGINE_CUDA_CHECK(status);
  return ptr;
}

void release_device_chunk(void* ptr, size_t /*bytes*/) {
  // Called from destructors, possibly during program exit after the runtime has been unloaded
  // (cudaErrorCudartUnloading): never throw, just clear the error. cudaFree waits for pending
  // work on the chunk, so a chunk is never returned while a kernel still uses it.
  if (cudaFree(ptr) != cudaSuccess) (void)cudaGetLastError();
}

// True when `p` is page-locked host memory: a copy from it is truly asynchronous, so the host may
// not reuse it until the copy has finished. Pageable memory (the CPU arena) is staged by the
// runtime before cudaMemcpyAsync returns.
bool is_pinned_host(const void* p) {
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return attr.type == cudaMemoryTypeHost;
}

void copy_device_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (dst_device.is_cuda()) check_device(dst_device, "to");
  if (src_device.is_cuda()) check_device(src_device, "to");
  if (dst_device.is_cuda() && src_device.is_cpu()) {  // host -> device
    DeviceGuard guard(dst_device);
    Stream stream = compute_stream(dst_device);
    ENGINE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
    if (is_pinned_host(src)) ENGINE_CUDA_CHECK(cudaStreamSynchronize(stream));
  } else if (dst_device.is_cpu() && src_device.is_cuda()) {  // device -> host: the host reads next
    DeviceGuard guard(src_device);
    Stream stream = compute_stream(src_device);
    ENGINE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream));
    ENGINE_CUDA_CHECK(cudaStreamSynchronize(stream));
  } else if (dst_device == src_device) {  // same device: stream order is enough
    DeviceGuard guard(dst_device);
    ENGINE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, compute_stream(dst_device)));
  } else {  // device -> other device: finish the producer, copy, finish the copy
    synchronize(src_device);
    DeviceGuard guard(dst_device);
    Stream stream = compute_stream(dst_device);
    ENGINE_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dst_device.index, src, src_device.index, bytes, stream));
    ENGINE_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
}

bool register_backend() {
  memory::register_raw_allocator(DeviceType::CUDA, {reserve_device_chunk, release_device_chunk});
  backend::register_device_copy(DeviceType::CUDA, copy_device_bytes);
  memory::register_device_timer(device_timer());  // the profiler's CUDA events (timing.h)
  return true;
}

// Registration at static-initialisation time. Nothing here touches the CUDA runtime, so a
// program without a GPU starts normally.
const bool g_registered = register_backend();

}  // namespace

// Referenced from tensor/backend.cpp so the static linker keeps this object (and g_registered).
void backend_link_anchor() { (void)g_registered; }

}  // namespace engine::cuda

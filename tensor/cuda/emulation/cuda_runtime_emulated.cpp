// cuda_runtime_emulated.cpp: the host implementation of cuda_runtime_emulated.h (read it first).
// Every call is synchronous; streams and events are tokens; errors follow the runtime's
// "last error" convention so the engine's ENGINE_CUDA_CHECK paths behave as on a GPU.
#include "tensor/cuda/emulation/cuda_runtime_emulated.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <set>

struct CUstream_st {
  int device = 0;
};
struct CUevent_st {
  double time_ms = -1;  // host clock when recorded; -1 until then
};

namespace {

struct Allocation {
  size_t bytes = 0;
  int device = 0;
};

struct State {
  std::mutex mutex;
  std::map<const void*, Allocation> device_blocks;  // base pointer -> block
  std::set<const void*> host_blocks;                // cudaMallocHost
  size_t allocated[16] = {};
  cudaError_t last_error = cudaSuccess;
};
State& state() {
  static State* s = new State();  // never destroyed: tensors freed at exit still call cudaFree
  return *s;
}
thread_local int t_current_device = 0;

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::atoi(v);
}
int emulated_devices() {
  static const int n = [] {
    const int v = env_int("ENGINE_EMULATED_DEVICES", 1);
    return v < 0 ? 0 : (v > 16 ? 16 : v);
  }();
  return n;
}
size_t capacity_bytes() {
  static const size_t c = size_t(env_int("ENGINE_EMULATED_MEMORY_MIB", 16384)) << 20;
  return c;
}

cudaError_t fail(cudaError_t e) {
  state().last_error = e;
  return e;
}
bool valid_device(int d) { return d >= 0 && d < emulated_devices(); }

double now_ms() {
  using namespace std::chrono;
  static const auto start = steady_clock::now();
  return duration<double, std::milli>(steady_clock::now() - start).count();
}

// The block containing `p` (any interior pointer), or end().
std::map<const void*, Allocation>::const_iterator find_block(const State& s, const void* p) {
  auto it = s.device_blocks.upper_bound(p);
  if (it == s.device_blocks.begin()) return s.device_blocks.end();
  --it;
  const auto* base = static_cast<const char*>(it->first);
  if (static_cast<const char*>(p) < base + it->second.bytes) return it;
  return s.device_blocks.end();
}

}  // namespace

cudaError_t cudaGetDeviceCount(int* count) {
  *count = emulated_devices();
  return *count == 0 ? fail(cudaErrorNoDevice) : cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = t_current_device;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  if (!valid_device(device)) return fail(cudaErrorInvalidDevice);
  t_current_device = device;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (!valid_device(device)) return fail(cudaErrorInvalidDevice);
  *prop = cudaDeviceProp{};
  std::strncpy(prop->name, "Emulated CUDA device (host memory, serial kernels)", sizeof(prop->name) - 1);
  prop->totalGlobalMem = capacity_bytes();
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = 1;
  prop->clockRate = 1000000;
  return cudaSuccess;
}
cudaError_t cudaGetLastError() {
  State& s = state();
  const cudaError_t e = s.last_error;
  s.last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return state().last_error; }
const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorCudartUnloading: return "cudaErrorCudartUnloading";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
  }
  return "cudaErrorUnknown";
}
const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorCudartUnloading: return "driver shutting down";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
  }
  return "unknown error";
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  *ptr = nullptr;
  const int device = t_current_device;
  if (!valid_device(device)) return fail(cudaErrorNoDevice);
  State& s = state();
  std::lock_guard lock(s.mutex);
  if (s.allocated[device] + bytes > capacity_bytes()) return fail(cudaErrorMemoryAllocation);
  const size_t rounded = (bytes + 255) / 256 * 256;
  void* p = std::aligned_alloc(256, rounded == 0 ? 256 : rounded);
  if (p == nullptr) return fail(cudaErrorMemoryAllocation);
  std::memset(p, 0xFF, rounded);  // NaN in every float type: fresh device memory is not zero
  s.device_blocks[p] = Allocation{bytes, device};
  s.allocated[device] += bytes;
  *ptr = p;
  return cudaSuccess;
}
cudaError_t cudaFree(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  State& s = state();
  std::lock_guard lock(s.mutex);
  auto it = s.device_blocks.find(ptr);
  if (it == s.device_blocks.end()) return fail(cudaErrorInvalidValue);
  s.allocated[it->second.device] -= it->second.bytes;
  s.device_blocks.erase(it);
  std::free(ptr);
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** ptr, size_t bytes) {
  *ptr = std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256);
  if (*ptr == nullptr) return fail(cudaErrorMemoryAllocation);
  State& s = state();
  std::lock_guard lock(s.mutex);
  s.host_blocks.insert(*ptr);
  return cudaSuccess;
}
cudaError_t cudaHostAlloc(void** ptr, size_t bytes, unsigned int /*flags*/) { return cudaMallocHost(ptr, bytes); }
cudaError_t cudaFreeHost(void* ptr) {
  State& s = state();
  std::lock_guard lock(s.mutex);
  if (s.host_blocks.erase(ptr) == 0) return fail(cudaErrorInvalidValue);
  std::free(ptr);
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  const int device = t_current_device;
  if (!valid_device(device)) return fail(cudaErrorNoDevice);
  State& s = state();
  std::lock_guard lock(s.mutex);
  *total_bytes = capacity_bytes();
  *free_bytes = capacity_bytes() - s.allocated[device];
  return cudaSuccess;
}
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attributes, const void* ptr) {
  *attributes = cudaPointerAttributes{};
  State& s = state();
  std::lock_guard lock(s.mutex);
  auto it = find_block(s, ptr);
  if (it != s.device_blocks.end()) {
    attributes->type = cudaMemoryTypeDevice;
    attributes->device = it->second.device;
    attributes->devicePointer = const_cast<void*>(ptr);
  } else if (s.host_blocks.count(ptr) != 0) {
    attributes->type = cudaMemoryTypeHost;
    attributes->hostPointer = const_cast<void*>(ptr);
  }
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind /*kind*/) {
  if (bytes != 0) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
  return cudaMemcpy(dst, src, bytes, kind);
}
cudaError_t cudaMemcpyPeerAsync(void* dst, int dst_device, const void* src, int src_device, size_t bytes,
                                cudaStream_t) {
  if (!valid_device(dst_device) || !valid_device(src_device)) return fail(cudaErrorInvalidDevice);
  return cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice);
}
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t) {
  if (bytes != 0) std::memset(ptr, value, bytes);
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int /*flags*/) {
  *stream = new CUstream_st{t_current_device};
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  delete stream;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  *event = new CUevent_st{};
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int) { return cudaEventCreate(event); }
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete event;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t) {
  if (event == nullptr) return fail(cudaErrorInvalidResourceHandle);
  event->time_ms = now_ms();
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  return event == nullptr ? fail(cudaErrorInvalidResourceHandle) : cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t event) {
  return event == nullptr ? fail(cudaErrorInvalidResourceHandle) : cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (start == nullptr || end == nullptr || start->time_ms < 0 || end->time_ms < 0)
    return fail(cudaErrorInvalidResourceHandle);
  *ms = float(end->time_ms - start->time_ms);
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned int) { return cudaSuccess; }

size_t engine_emulated_allocated_bytes(int device) {
  if (!valid_device(device)) return 0;
  State& s = state();
  std::lock_guard lock(s.mutex);
  return s.allocated[device];
}

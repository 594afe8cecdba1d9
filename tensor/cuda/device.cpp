// device.cpp (cuda): device queries, per-device compute streams, the CUDA error -> engine::Error
// conversion (device.h).
#include "tensor/cuda/device.h"

#include "tensor/cuda/cuda_api.h"

#include <array>
#include <mutex>

#include <fmt/format.h>

#include "tensor/error.h"

namespace engine::cuda {

namespace {

constexpr int kMaxDevices = 64;

int query_device_count() {
  int n = 0;
  const cudaError_t status = cudaGetDeviceCount(&n);
  if (status != cudaSuccess) {
    // No device, no driver, or a driver older than the runtime: report "no devices". Clear the
    // (non-sticky) error so that it does not resurface in a later cudaGetLastError.
    (void)cudaGetLastError();
    return 0;
  }
  return n < 0 ? 0 : (n > kMaxDevices ? kMaxDevices : n);
}

struct Streams {
  std::mutex mutex;
  std::array<Stream, kMaxDevices> stream{};
};
Streams& streams() {
  static Streams* s = new Streams();  // never destroyed: see compute_stream in device.h
  return *s;
}

}  // namespace

void throw_cuda_error(int code, const char* expr, const char* file, int line) {
  const auto status = static_cast<cudaError_t>(code);
  (void)cudaGetLastError();  // reset a non-sticky error so the next check does not see it again
  throw Error(fmt::format("CUDA error {} ({}) in `{}` at {}:{}", cudaGetErrorName(status),
                          cudaGetErrorString(status), expr, file, line));
}

int device_count() {
  static const int count = query_device_count();
  return count;
}

bool is_available() { return device_count() > 0; }

void check_device(Device device, const char* op) {
  ENGINE_CHECK(device.is_cuda(), "{}: expected a CUDA device, got {}", op, device.str());
  const int n = device_count();
  ENGINE_CHECK(n > 0, "{}: {} requested but no CUDA device is available (no GPU or no driver)", op,
               device.str());
  ENGINE_CHECK(device.index >= 0 && device.index < n, "{}: {} does not exist ({} CUDA device{})", op,
               device.str(), n, n == 1 ? "" : "s");
}

std::string device_description(int index) {
  check_device(Device::cuda(index), "device_description");
  cudaDeviceProp prop{};
  ENGINE_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  return fmt::format("{} (sm_{}{}, {:.1f} GiB)", prop.name, prop.major, prop.minor,
                     double(prop.totalGlobalMem) / double(1ull << 30));
}

int current_device() {
  int index = 0;
  ENGINE_CUDA_CHECK(cudaGetDevice(&index));
  return index;
}

void set_device(int index) {
  check_device(Device::cuda(index), "set_device");
  ENGINE_CUDA_CHECK(cudaSetDevice(index));
}

DeviceGuard::DeviceGuard(Device device) {
  check_device(device, "DeviceGuard");
  previous_ = current_device();
  if (previous_ != device.index) ENGINE_CUDA_CHECK(cudaSetDevice(device.index));
}

DeviceGuard::~DeviceGuard() {
  // A destructor must not throw; restoring the previous device cannot fail for a valid index.
  if (previous_ >= 0) (void)cudaSetDevice(previous_);
}

Stream compute_stream(Device device) {
  check_device(device, "compute_stream");
  Streams& s = streams();
  std::lock_guard lock(s.mutex);
  Stream& slot = s.stream[size_t(device.index)];
  if (slot == nullptr) {
    DeviceGuard guard(device);
    // A blocking stream (not cudaStreamNonBlocking): it stays ordered with the legacy default
    // stream, so a library call that forgets to take our stream is still correct, only slower.
    cudaStream_t created = nullptr;
    ENGINE_CUDA_CHECK(cudaStreamCreateWithFlags(&created, cudaStreamDefault));
    slot = created;
  }
  return slot;
}

void synchronize(Device device) {
  Stream stream = compute_stream(device);
  ENGINE_CUDA_CHECK(cudaStreamSynchronize(stream));
}

}  // namespace engine::cuda

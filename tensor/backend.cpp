// backend.cpp: the registry behind backend.h.
//
// Link note: the CUDA backend registers itself from a static initialiser in
// tensor/cuda/backend.cpp. A static library only links an object file that something refers to,
// so this file (which tensor.cpp always pulls in through Tensor::to) refers to that object via
// cuda::backend_link_anchor() when the backend is built.
#include "tensor/backend.h"

#include <cstring>

#include "tensor/error.h"

#if ENGINE_WITH_CUDA
namespace engine::cuda {
void backend_link_anchor();  // tensor/cuda/backend.cpp
}
#endif

namespace engine::backend {

namespace {
// Zero-initialised before any dynamic initialiser runs, so a backend may register from its own
// static initialiser in any order relative to this file.
DeviceCopyFn g_device_copy[2] = {nullptr, nullptr};  // indexed by DeviceType

DeviceCopyFn copy_for(Device dst, Device src) {
  const Device device = dst.is_cpu() ? src : dst;
  return g_device_copy[int(device.type)];
}
}  // namespace

void register_device_copy(DeviceType type, DeviceCopyFn fn) {
  ENGINE_CHECK(type != DeviceType::CPU, "register_device_copy: the CPU needs no backend copy");
  g_device_copy[int(type)] = fn;
}

bool has_device_copy(Device dst_device, Device src_device) {
#if ENGINE_WITH_CUDA
  cuda::backend_link_anchor();
#endif
  return (dst_device.is_cpu() && src_device.is_cpu()) || copy_for(dst_device, src_device) != nullptr;
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes,
                const char* op) {
  ENGINE_CHECK(has_device_copy(dst_device, src_device),
               "{}: copying from {} to {} needs the CUDA backend (configure with -DENGINE_CUDA=ON)",
               op, src_device.str(), dst_device.str());
  if (bytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, bytes);
    return;
  }
  copy_for(dst_device, src_device)(dst, dst_device, src, src_device, bytes);
}

}  // namespace engine::backend

// backend.h: the few hooks through which device-independent code (tensor.cpp) reaches a device
// backend that may not be built. A backend registers its functions at static-initialisation time;
// with no backend registered for a device type, the caller gets a clear engine::Error instead of
// a link error, so -DENGINE_CUDA=OFF builds stay identical to the CPU-only engine.
//
// Registered today: the byte copy between host and device (CUDA, tensor/cuda/backend.cpp), which
// Tensor::to(Device) uses.
#pragma once
#include <cstddef>

#include "tensor/device.h"

namespace engine::backend {

// Copy `bytes` contiguous bytes from `src` (on `src_device`) to `dst` (on `dst_device`).
// Contract: when it returns, `dst` may be read by the host if dst_device is the CPU, and by
// later work on dst_device's compute stream otherwise; `src` may be reused by the host at once.
using DeviceCopyFn = void (*)(void* dst, Device dst_device, const void* src, Device src_device,
                              size_t bytes);

// The copy function of a non-CPU device type (replaces any earlier one).
void register_device_copy(DeviceType type, DeviceCopyFn fn);
// Whether a copy between these two devices is available (CPU<->CPU always is).
bool has_device_copy(Device dst_device, Device src_device);
// Copy through the backend of whichever side is not the CPU (the destination's backend when
// both are devices). CPU<->CPU is a memcpy. Throws engine::Error naming `op` and both devices
// when no backend is registered for them.
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes,
                const char* op);

}  // namespace engine::backend

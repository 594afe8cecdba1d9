// timing.h (cuda): CUDA-event timing and the driver's memory view for the profiler
// (DESIGN.md section 6; docs/memory.md "On a GPU").
//
// The profiler (tensor/memory/profiler.cpp) has no CUDA code; it calls a memory::DeviceTimer,
// which the CUDA backend registers at start-up (tensor/cuda/backend.cpp). This is that timer:
//   record(index)      an event from a per-device pool recorded on the device's compute stream
//                      (no synchronisation; events are created lazily, the first time the pool
//                      is empty); the first mark of a device after reset_marks also records the
//                      device's reference event
//   resolve(marks)     synchronises each device involved once, then reads every mark's time
//                      since its device's reference (cudaEventElapsedTime) and returns the
//                      events to the pool
//   used_bytes(index)  cudaMemGetInfo's total - free
// Plain C++ header: no CUDA types.
#pragma once
#include "tensor/memory/profiler.h"

namespace engine::cuda {

memory::DeviceTimer device_timer();

}  // namespace engine::cuda

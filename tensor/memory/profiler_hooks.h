// profiler_hooks.h: the private interface between the allocator (memory.cpp) and the profiler
// (profiler.cpp). Not for use outside tensor/memory/.
//
// Why a separate header: the allocator owns the table of live allocations and the mutex, the
// profiler owns the op-call records; each needs a little of the other's state, and keeping those
// few functions here leaves memory.h and profiler.h as clean public APIs.
//
// Locking: one mutex (state_mutex) guards both sides. Every function below is called with it held,
// and none of them takes it again.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "tensor/memory/profiler.h"

namespace engine::memory::detail {

std::mutex& state_mutex();

// One live allocation as the allocator records it.
struct Allocation {
  LiveEntry entry;               // what live-set tables show: bytes, kind, owner op, module, ...
  bool in_phase_region = false;  // which arena of the device holds it
  uint64_t phase_serial = 0;     // the PhaseScope it was made in (phase region only)
  uint64_t seq = 0;              // allocation number, increasing (orders allocations in time)
};

// Current usage of one device, both regions together.
struct DeviceUsage {
  Device device;
  int64_t live = 0;
  int64_t reserved = 0;
};

// --- implemented in memory.cpp ---
const std::unordered_map<void*, Allocation>& live_allocations();
uint64_t last_allocation_seq();
std::vector<DeviceUsage> device_usages();

// --- implemented in profiler.cpp ---
// After an allocation: charges the open op calls of this thread and fills entry.owner / entry.op.
void on_allocate(Allocation& allocation, const DeviceUsage& usage);
// Before the allocation record is erased.
void on_free(const Allocation& allocation, const DeviceUsage& usage);
// mark_saved: adds `bytes` to the saved bytes of the innermost op call on this thread.
void on_saved(int64_t bytes);
// The allocator could not satisfy a request of `bytes` on `device`.
void on_out_of_memory(Device device, int64_t bytes);
// Name of the innermost op call on this thread ("" when none or when profiling is off).
std::string current_op_name();
// The live-set table (Markdown), largest first, at most max_rows rows plus a total line.
std::string live_table_markdown(std::vector<LiveEntry> entries, size_t max_rows);

}  // namespace engine::memory::detail

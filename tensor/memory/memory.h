// memory.h: every byte the engine allocates goes through here (DESIGN.md sections 5 and 6).
//
// Two regions per device:
//   persistent  parameters, gradients, optimizer moments, EMA, buffers, and anything allocated
//               outside a PhaseScope (tests, setup). Never reset.
//   phase       activations and temporaries of one training phase (G_main, D_main, D_r1, ...).
//               Opened by PhaseScope; at its end nothing may be left alive (leak check), so the
//               arena is empty again and the next step reuses the very same addresses.
// Both regions are an Arena: best fit over an address-ordered free list that coalesces
// neighbours, 256-byte alignment, grown by whole chunks (or failing with the live-set table).
//
// The profiler (profiler.h) is fed from here: each allocation is tagged with the op call on top
// of the OpScope stack, the module path, the pass (fwd / bwd / bwd2 / optim / comm) and the phase.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "tensor/device.h"

namespace engine::memory {

// What an allocation is for; shown in the live-set table.
enum class Kind : uint8_t { activation, param, grad, optimizer_state, buffer, workspace };
const char* kind_name(Kind k);

// Which pass of the training step is running. The autograd engine sets bwd when it runs nodes
// recorded in fwd, bwd2 when it runs nodes recorded in bwd (double backward), and so on.
enum class Pass : uint8_t { fwd = 0, bwd = 1, bwd2 = 2, bwd3 = 3, optim = 4, comm = 5 };
const char* pass_name(Pass p);
// The pass that runs the backward of a node recorded during pass `p` (fwd->bwd, bwd->bwd2, ...).
Pass next_backward_pass(Pass p);

constexpr size_t kAlignment = 256;

// Allocate `bytes` (rounded up to kAlignment; zero-byte requests return a valid unique pointer)
// on `device`. Goes to the phase arena if a PhaseScope is open on this thread for that device
// and kind == activation or workspace; otherwise to the persistent arena.
// Throws engine::Error with the live-set table when the arena cannot grow.
void* allocate(Device device, size_t bytes, Kind kind = Kind::activation);
void deallocate(Device device, void* ptr);

// Annotations used by the live-set table. No-ops for unknown pointers.
void annotate(void* ptr, std::string_view shape, std::string_view dtype);
// Autograd calls this when a Node saves a tensor for backward: the allocation is shown as
// "saved by <node>" and its bytes (rounded up to kAlignment, like every byte count here) are added
// to the saved bytes of the current op call (the innermost OpScope on this thread).
void mark_saved(void* ptr, size_t bytes, std::string_view node_name);

// Region statistics for one device (bytes).
struct Stats {
  int64_t live = 0;      // bytes currently allocated (after alignment rounding)
  int64_t peak = 0;      // high-water mark of `live` since the last reset_peak
  int64_t reserved = 0;  // bytes held from the system (sum of chunk sizes)
  int64_t num_allocs = 0;
  int64_t num_frees = 0;
};
Stats stats(Device device);             // both regions together
Stats persistent_stats(Device device);
Stats phase_stats(Device device);
void reset_peak(Device device);

// Configuration (env: ENGINE_ARENA_CHUNK_MB, ENGINE_ARENA_GROW=0/1, ENGINE_ARENA_LIMIT_MB).
struct ArenaOptions {
  size_t chunk_bytes = size_t(256) << 20;  // size of each reservation from the system
  bool grow = true;                        // false: fail with the live-set table when full
  size_t limit_bytes = 0;                  // 0 = no limit; else total reservation cap
};
// Best called before first use of the device; a later call applies to chunks reserved from then
// on. An explicit configure() wins over the environment.
void configure(Device device, const ArenaOptions& options);
// The defaults overridden by the environment (ENGINE_ARENA_CHUNK_MB, ENGINE_ARENA_GROW,
// ENGINE_ARENA_LIMIT_MB); what a device uses unless configure() was called for it. Throws
// engine::Error naming the variable when a value is not a non-negative integer (GROW: 0 or 1).
ArenaOptions arena_options_from_env();
// The options a device uses now.
ArenaOptions arena_options(Device device);
// Returns the chunks of every region of `device` that has nothing allocated to the system
// (like torch.cuda.empty_cache). configure() only changes future chunks, so configure() followed
// by empty_cache() restarts a device with new options.
void empty_cache(Device device);

// Raw allocator of a device, plugged in by the backend (CPU: aligned host memory; CUDA:
// cudaMalloc). The arena calls it only to reserve or release whole chunks.
struct RawAllocator {
  void* (*reserve)(size_t bytes) = nullptr;
  void (*release)(void* ptr, size_t bytes) = nullptr;
};
// Devices already in use keep the allocator their chunks came from.
void register_raw_allocator(DeviceType type, RawAllocator allocator);

// PhaseScope("D_r1", device): names a training phase. On close() it checks that every
// phase-region allocation made inside it has been freed (else throws engine::Error listing
// the leaked allocations with their owner ops), then resets the phase arena. The destructor
// calls close() if the user did not, and reports a leak on stderr instead of throwing.
// Owner ops are known only while the profiler is enabled (OpScope costs nothing otherwise); the
// module path, phase, kind, shape and dtype are always listed.
class PhaseScope {
 public:
  explicit PhaseScope(std::string name, Device device = Device::cpu());
  ~PhaseScope();
  PhaseScope(const PhaseScope&) = delete;
  PhaseScope& operator=(const PhaseScope&) = delete;
  void close();

 private:
  std::string name_;
  Device device_;
  bool closed_ = false;
};

// Name of the innermost open phase on this thread ("" when none).
std::string current_phase();

// "512 B", "1.5 KiB", "2.00 GiB" (binary units), as every memory table prints bytes.
std::string format_bytes(int64_t bytes);

}  // namespace engine::memory

// profiler.h: per-op memory (and time) accounting (DESIGN.md section 6).
//
// Every op call opens an OpScope. The scope stack gives each allocation and free an owner:
// the innermost op call. For each call we keep
//   allocated   bytes allocated inside the call (including nested calls)
//   freed       bytes freed inside the call
//   retained    bytes allocated inside the call that are still alive when it exits (its outputs)
//   transient   high-water of live bytes inside the call minus live bytes at entry, minus
//               retained: what the call needed only while running (workspaces, im2col)
//   saved       bytes of tensors that the autograd Node created by this call saved for backward
// plus its module path (ModuleScope stack joined with '.'), pass, phase and input shapes.
//
// Globally: live / peak / reserved bytes per device, and at the moment of the peak a snapshot of
// the live set (owner op and module, shape, dtype, bytes, kind or "saved by <Node>").
//
// Exports: Markdown and CSV tables sorted by contribution to peak (bytes an op allocated that
// were still alive at the peak), a Chrome / Perfetto trace JSON, and a one-line step summary.
// Recording is off by default (OpScope then costs one branch); Profiler::enable(true) turns it on.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tensor/memory/memory.h"

namespace engine::memory {

struct OpRecord {
  uint64_t id = 0;          // call id, unique per profiler session
  uint64_t parent = 0;      // enclosing op call id (0 at top level)
  std::string op;           // "conv2d", "contiguous", ...
  std::string module;       // "G.b16.attn0.moe" or ""
  std::string phase;        // "D_r1" or ""
  Pass pass = Pass::fwd;
  std::string shapes;       // "[4,3,16,16] [8,3,3,3]"
  Device device;            // device of the call's first allocation (cpu if none)
  int64_t allocated = 0;
  int64_t freed = 0;
  int64_t retained = 0;
  int64_t transient = 0;
  int64_t saved = 0;        // of this call's own Node (not inclusive)
  int64_t at_peak = 0;      // bytes allocated by this call that were alive at the global peak;
                            // not inclusive either (a block counts for the innermost call that
                            // made it), so the column adds up to the peak
  double start_us = 0;      // wall time since profiler reset
  double end_us = 0;
  // CUDA calls: the GPU time of the call from a pair of CUDA events recorded on the compute
  // stream at entry and exit, in microseconds since the session's first event on that device
  // (-1 when not timed on a device: CPU calls, or no device timer registered).
  double gpu_start_us = -1;
  double gpu_end_us = -1;
  bool gpu_timed() const { return gpu_start_us >= 0 && gpu_end_us >= 0; }
  // The call's duration: GPU (event) time when timed on a device, else wall-clock time.
  double time_us() const {
    return gpu_timed() ? gpu_end_us - gpu_start_us : end_us - start_us;
  }
};

// Reconciliation of a CUDA device's memory (docs/memory.md): the driver's view (cudaMemGetInfo
// total - free) against the arena's reserved bytes, both at the start of the session (reset, or
// the device's first allocation in it) and now. `unattributed` = used growth - reserved growth:
// bytes that appeared on the device outside the arena (library handles and workspaces, the
// context, kernels loaded lazily, any cudaMalloc not made by the arena).
struct Reconciliation {
  Device device;
  int64_t baseline_used = 0, used = 0;          // cudaMemGetInfo: total - free
  int64_t baseline_reserved = 0, reserved = 0;  // arena reserved (both regions)
  int64_t unattributed = 0;
};

// The profiler's access to device timing and the driver's memory view. profiler.cpp has no CUDA
// code: the CUDA backend registers these functions (tensor/cuda/timing.cpp), as tensor/backend.h
// does for device copies. Every function is called with the profiler's lock held.
struct DeviceTimer {
  // Record a timing mark on the compute stream of CUDA device `index`; returns a mark id > 0
  // (events come from a pool; nothing synchronises here).
  uint64_t (*record)(int index) = nullptr;
  // Wait for the marks and write each one's time in microseconds since the reference mark of its
  // device (the first mark recorded after the last reset_marks) into out_us; the marks' events
  // return to the pool.
  void (*resolve)(const uint64_t* marks, double* out_us, size_t n) = nullptr;
  // Forget every mark and reference (the next mark of each device becomes its reference).
  void (*reset_marks)() = nullptr;
  // The driver's used bytes of device `index` (total - free), or -1 when unknown.
  int64_t (*used_bytes)(int index) = nullptr;
};
void register_device_timer(const DeviceTimer& timer);

// Live allocation at the moment of the peak.
struct LiveEntry {
  uint64_t owner = 0;       // op call id (0: outside any op)
  std::string op, module, phase;
  Pass pass = Pass::fwd;
  std::string shape, dtype;
  Kind kind = Kind::activation;
  std::string saved_by;     // Node name or ""
  int64_t bytes = 0;
  Device device;            // which device's peak this entry belongs to
};

class OpScope {
 public:
  // `shapes` is only formatted by the caller when Profiler::enabled().
  explicit OpScope(std::string_view op, std::string_view shapes = {});
  ~OpScope();
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;

 private:
  bool active_ = false;
};

// Pushes one component of the module path ("G", "b16", "attn0"): G.b16.attn0.
class ModuleScope {
 public:
  explicit ModuleScope(std::string_view name);
  ~ModuleScope();
  ModuleScope(const ModuleScope&) = delete;
  ModuleScope& operator=(const ModuleScope&) = delete;
};

// Sets the current pass for its lifetime (the autograd engine uses it; the optimizer uses optim).
class PassScope {
 public:
  explicit PassScope(Pass pass);
  ~PassScope();
  PassScope(const PassScope&) = delete;
  PassScope& operator=(const PassScope&) = delete;

 private:
  Pass previous_;
};
Pass current_pass();
std::string current_module_path();

class Profiler {
 public:
  static void enable(bool on);
  static bool enabled();
  // Forget all records and peak snapshots (not the live allocations themselves).
  static void reset();

  static std::vector<OpRecord> records();
  static std::vector<LiveEntry> live_set_at_peak();
  static int64_t peak_bytes(Device device = Device::cpu());
  // Bytes alive at the session's peak on `device` that no op call of the session allocated
  // (parameters, optimizer state, setup): peak_bytes = this + the device's at_peak entries.
  static int64_t outside_ops_at_peak(Device device = Device::cpu());
  // Starts a new step for step_summary: its peak restarts at the current live bytes. The
  // session's peak (tables, live set) keeps covering every step since reset().
  static void begin_step();
  // Peak of the current step (since begin_step, or reset) on `device`.
  static int64_t step_peak_bytes(Device device = Device::cpu());
  // One Reconciliation per CUDA device used in the session (empty without a device timer).
  static std::vector<Reconciliation> reconciliation();

  // Exports.
  static std::string table_markdown(size_t max_rows = 50);
  static std::string table_csv();
  // One CSV row per op call (no aggregation), in call order, with id, parent and shapes.
  static std::string calls_csv();
  static std::string live_set_markdown(size_t max_rows = 50);
  static std::string chrome_trace_json();
  // Calls aggregated by module path (every pass and op together; "" = outside any module),
  // sorted by at_peak: which part of the model holds the memory at the peak, and its time.
  static std::string per_module_markdown(size_t max_rows = 60);
  static std::string per_module_csv();
  // "step 12 | peak 1.21 GiB (fwd 0.80, bwd 0.31, bwd2 0.10) | reserved 1.50 GiB | top: conv2d 0.30 GiB"
  // about the current step (begin_step) of the device with the largest step peak.
  static std::string step_summary(int64_t step = -1);
  // Writes table.md, table.csv, calls.csv, live_set.md, trace.json, per_module.md and
  // per_module.csv into `directory` (created if missing).
  static void write_all(const std::string& directory);
};

}  // namespace engine::memory

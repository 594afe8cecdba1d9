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
};

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

  // Exports.
  static std::string table_markdown(size_t max_rows = 50);
  static std::string table_csv();
  // One CSV row per op call (no aggregation), in call order, with id, parent and shapes.
  static std::string calls_csv();
  static std::string live_set_markdown(size_t max_rows = 50);
  static std::string chrome_trace_json();
  // "step 12 | peak 1.21 GiB (fwd 0.80, bwd 0.31, bwd2 0.10) | reserved 1.50 GiB | top: conv2d 0.30 GiB"
  static std::string step_summary(int64_t step = -1);
  // Writes table.md, table.csv, calls.csv, live_set.md and trace.json into `directory`
  // (created if missing).
  static void write_all(const std::string& directory);
};

}  // namespace engine::memory

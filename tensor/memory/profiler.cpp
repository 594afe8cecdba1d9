// profiler.cpp: per-op memory and time accounting (profiler.h; DESIGN.md section 6).
//
// How the numbers are obtained. Each thread keeps a stack of its open op calls (Frames). The
// allocator reports every allocation and free (profiler_hooks.h) and we charge it to the frames
// of the calling thread:
//   allocation of b bytes: every open frame gets allocated += b, live_inside += b, delta += b
//   free of b bytes:       every open frame gets freed += b, delta -= b; the calls that made
//                          the block (its owner and its open ancestors) get live_inside -= b
// so nested calls are inclusive: a parent's numbers contain its children's. When a call exits,
//   retained  = live_inside                    (bytes it allocated that are still alive)
//   transient = max(0, max(delta) - retained)  (its high-water above the live bytes at entry,
//                                               minus what it leaves behind)
// `delta` counts only this thread's allocations, so a data-loader thread allocating at the same
// time does not distort a training op's transient bytes; with one thread it equals "max live
// bytes during the call minus live bytes at entry".
//
// The live set at the peak, cheaply. Copying the whole live set each time live bytes reach a new
// maximum would cost O(live) per allocation during a forward pass (where nearly every allocation
// is a new maximum). Instead we remember the allocation number (seq) that made the peak. The live
// set at the peak is then the allocations with seq <= peak_seq that are still alive, plus those
// freed since the peak; the latter are copied into `freed_since_peak` as they are freed. A new
// peak empties that list. When profiling stops (or on reset) the snapshot is materialised
// ("frozen"), because frees are no longer observed.
//
// On a CUDA device (docs/memory.md "On a GPU"): each call records a CUDA event on the compute
// stream at entry and exit (DeviceTimer::record, no synchronisation); records() resolves the
// pending ones with one synchronisation (resolve_gpu_times). Reconciliation compares the driver's
// used bytes with the arena's reserved bytes between reset() and the export. Both go through the
// DeviceTimer the CUDA backend registers (tensor/cuda/timing.cpp), so this file has no CUDA code.
#include "tensor/memory/profiler.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <tuple>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tensor/error.h"
#include "tensor/memory/profiler_hooks.h"

namespace engine::memory {

namespace {

using Clock = std::chrono::steady_clock;

// Read on every OpScope construction without the lock: the one branch a disabled profiler costs.
std::atomic<bool> g_enabled{false};

// One op call: its public record plus what is needed while it runs.
struct Call {
  OpRecord record;
  int64_t live_inside = 0;  // bytes allocated inside the call (inclusive) and still alive
  bool open = true;
  bool device_known = false;  // record.device is the device of the first allocation inside
  int thread = 0;             // small per-thread number: the trace's tid
  // CUDA event marks at entry and exit (DeviceTimer; 0 = none), resolved into
  // record.gpu_start_us / gpu_end_us by resolve_gpu_times.
  uint64_t mark_start = 0, mark_end = 0;
  int timing_device = -1;
};

// An open OpScope on this thread.
struct Frame {
  uint64_t id = 0;
  int64_t delta = 0;      // this thread's allocated minus freed bytes since the call began
  int64_t max_delta = 0;  // high-water of delta
};

struct CounterSample {
  double ts = 0;
  Device device;
  int64_t live = 0, reserved = 0;
};

struct OomEvent {
  double ts = 0;
  Device device;
  int64_t bytes = 0;
};

// The peak of one device and how to reconstruct its live set (see the file comment).
struct DevicePeak {
  Device device;
  int64_t peak = 0;
  uint64_t peak_seq = 0;
  double peak_us = 0;
  bool frozen = true;
  std::vector<LiveEntry> frozen_set;        // the snapshot, when frozen
  std::vector<LiveEntry> freed_since_peak;  // alive at the peak, freed since (when not frozen)
};

// Start-of-session memory of one CUDA device, for Reconciliation.
struct Baseline {
  int64_t used = 0, reserved = 0;
};

struct ProfilerState {
  uint64_t next_id = 1;
  uint64_t first_id = 1;    // ids below this belong to a session before the last reset()
  std::vector<Call> calls;  // calls[id - first_id]
  std::vector<CounterSample> counters;
  std::vector<OomEvent> ooms;
  std::vector<DevicePeak> peaks;       // one per device seen, over the whole session
  std::vector<DevicePeak> step_peaks;  // the same since begin_step (step_summary)
  Clock::time_point start = Clock::now();
  int next_thread = 0;
  // Device timing (register_device_timer): which CUDA device op calls are timed on (the device
  // of the latest CUDA allocation; -1 before any), the wall time of each device's reference
  // mark, the first call whose marks may be unresolved, and the reconciliation baselines.
  DeviceTimer timer;
  int timing_device = -1;
  std::map<int, double> gpu_reference_wall_us;
  size_t first_unresolved = 0;
  std::map<int, Baseline> baselines;
};

// Never destroyed, like the allocator state (memory.cpp), for frees that happen during exit.
ProfilerState& prof() {
  static ProfilerState* p = new ProfilerState();
  return *p;
}

thread_local std::vector<Frame> t_frames;
thread_local Pass t_pass = Pass::fwd;
thread_local int t_thread = -1;

// The module path is kept joined ("G.b16.attn0") so that every allocation can copy it cheaply;
// `lengths` remembers where to cut it when a ModuleScope ends.
struct ModulePath {
  std::string path;
  std::vector<size_t> lengths;
};
thread_local ModulePath t_module;

double now_us() {
  return std::chrono::duration<double, std::micro>(Clock::now() - prof().start).count();
}

Call* find_call(uint64_t id) {
  ProfilerState& p = prof();
  if (id < p.first_id || id >= p.next_id) return nullptr;
  return &p.calls[id - p.first_id];
}

DevicePeak& peak_of(std::vector<DevicePeak>& peaks, Device device) {
  for (DevicePeak& dp : peaks)
    if (dp.device == device) return dp;
  DevicePeak dp;
  dp.device = device;
  peaks.push_back(std::move(dp));
  return peaks.back();
}

std::vector<LiveEntry> current_live(Device device, uint64_t up_to_seq) {
  std::vector<LiveEntry> out;
  for (const auto& [ptr, a] : detail::live_allocations())
    if (a.entry.device == device && a.seq <= up_to_seq) out.push_back(a.entry);
  return out;
}

std::vector<LiveEntry> snapshot(const DevicePeak& dp) {
  if (dp.frozen) return dp.frozen_set;
  std::vector<LiveEntry> out = current_live(dp.device, dp.peak_seq);
  out.insert(out.end(), dp.freed_since_peak.begin(), dp.freed_since_peak.end());
  return out;
}

void freeze(DevicePeak& dp) {
  if (dp.frozen) return;
  dp.frozen_set = snapshot(dp);
  dp.freed_since_peak.clear();
  dp.frozen = true;
}

// Peaks that start now: at the current live bytes, with the current live set as the snapshot.
std::vector<DevicePeak> peaks_from_now() {
  std::vector<DevicePeak> out;
  for (const detail::DeviceUsage& u : detail::device_usages()) {
    DevicePeak dp;
    dp.device = u.device;
    dp.peak = u.live;
    dp.peak_seq = detail::last_allocation_seq();
    dp.frozen_set = current_live(u.device, dp.peak_seq);
    out.push_back(std::move(dp));
  }
  return out;
}

// Fills gpu_start_us / gpu_end_us of the finished calls whose marks are not resolved yet: one
// DeviceTimer::resolve (one synchronisation) for all of them. A call counts as a device call
// when its first allocation was on the CUDA device or it allocated nothing (an in-place op);
// a call that allocated on the CPU keeps its wall-clock time.
void resolve_gpu_times() {
  ProfilerState& p = prof();
  if (p.timer.resolve == nullptr) return;
  std::vector<uint64_t> marks;
  std::vector<size_t> owners;  // index into calls of each pair of marks
  size_t i = p.first_unresolved;
  for (; i < p.calls.size(); ++i) {
    Call& c = p.calls[i];
    if (c.open) break;  // resolve up to the first open call; it and later ones wait
    if (c.mark_start == 0 || c.mark_end == 0) continue;
    marks.push_back(c.mark_start);
    marks.push_back(c.mark_end);
    owners.push_back(i);
  }
  p.first_unresolved = i;
  if (marks.empty()) return;
  std::vector<double> us(marks.size(), -1.0);
  p.timer.resolve(marks.data(), us.data(), marks.size());
  for (size_t k = 0; k < owners.size(); ++k) {
    Call& c = p.calls[owners[k]];
    c.mark_start = c.mark_end = 0;
    const bool on_device = !c.device_known || c.record.device.is_cuda();
    if (on_device && us[2 * k] >= 0 && us[2 * k + 1] >= 0) {
      c.record.gpu_start_us = us[2 * k];
      c.record.gpu_end_us = std::max(us[2 * k], us[2 * k + 1]);
    }
  }
}

// Reconciliation of every CUDA device with a baseline (mutex held).
std::vector<Reconciliation> reconcile() {
  ProfilerState& p = prof();
  std::vector<Reconciliation> out;
  if (p.timer.used_bytes == nullptr) return out;
  const std::vector<detail::DeviceUsage> usages = detail::device_usages();
  for (const auto& [index, base] : p.baselines) {
    Reconciliation r;
    r.device = Device::cuda(index);
    r.baseline_used = base.used;
    r.baseline_reserved = base.reserved;
    r.used = p.timer.used_bytes(index);
    for (const detail::DeviceUsage& u : usages)
      if (u.device == r.device) r.reserved = u.reserved;
    r.unattributed = (r.used - r.baseline_used) - (r.reserved - r.baseline_reserved);
    out.push_back(r);
  }
  return out;
}

std::string reconciliation_text(const std::vector<Reconciliation>& recs) {
  std::string out;
  for (const Reconciliation& r : recs)
    out += fmt::format(
        "{}: unattributed {} ({} bytes): device memory used (cudaMemGetInfo) {} -> {}, arena "
        "reserved {} -> {}; bytes outside the arena (library handles and workspaces, context, "
        "other allocations)\n",
        r.device.str(), format_bytes(r.unattributed), r.unattributed, format_bytes(r.baseline_used),
        format_bytes(r.used), format_bytes(r.baseline_reserved), format_bytes(r.reserved));
  return out;
}

// Live set at the peak of every device, largest allocations first within a device.
std::vector<LiveEntry> all_snapshots() {
  std::vector<LiveEntry> out;
  for (const DevicePeak& dp : prof().peaks) {
    std::vector<LiveEntry> s = snapshot(dp);
    std::stable_sort(s.begin(), s.end(),
                     [](const LiveEntry& a, const LiveEntry& b) { return a.bytes > b.bytes; });
    out.insert(out.end(), s.begin(), s.end());
  }
  return out;
}

// Records of this session with at_peak filled in (at_peak is exclusive: a block counts for the
// innermost call that allocated it, so the column sums to the attributed part of the peak).
std::vector<OpRecord> records_locked() {
  ProfilerState& p = prof();
  resolve_gpu_times();
  std::map<uint64_t, int64_t> at_peak;
  for (const LiveEntry& e : all_snapshots())
    if (e.owner >= p.first_id) at_peak[e.owner] += e.bytes;
  std::vector<OpRecord> out;
  out.reserve(p.calls.size());
  for (const Call& c : p.calls) {
    out.push_back(c.record);
    auto it = at_peak.find(c.record.id);
    if (it != at_peak.end()) out.back().at_peak = it->second;
  }
  return out;
}

// One row of the aggregated tables: all calls with the same (op, module, pass).
struct Row {
  std::string op, module, phase;
  Pass pass = Pass::fwd;
  int64_t calls = 0, at_peak = 0, allocated = 0, freed = 0, retained = 0, transient_max = 0,
          saved = 0;
  double time_us = 0;
};

std::vector<Row> aggregate_locked() {
  std::map<std::tuple<std::string, std::string, int, std::string>, Row> rows;
  for (const OpRecord& r : records_locked()) {
    Row& row = rows[{r.op, r.module, int(r.pass), r.phase}];
    row.op = r.op;
    row.module = r.module;
    row.phase = r.phase;
    row.pass = r.pass;
    row.calls += 1;
    row.at_peak += r.at_peak;
    row.allocated += r.allocated;
    row.freed += r.freed;
    row.retained += r.retained;
    row.transient_max = std::max(row.transient_max, r.transient);
    row.saved += r.saved;
    row.time_us += std::max(0.0, r.time_us());
  }
  std::vector<Row> out;
  for (auto& [key, row] : rows) out.push_back(row);
  // By contribution to the peak, then by bytes allocated; the map order breaks remaining ties.
  std::stable_sort(out.begin(), out.end(), [](const Row& a, const Row& b) {
    if (a.at_peak != b.at_peak) return a.at_peak > b.at_peak;
    return a.allocated > b.allocated;
  });
  return out;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string or_dash(const std::string& s) { return s.empty() ? "-" : s; }

// Bytes in a fixed unit (for the step summary, where all numbers share the peak's unit).
struct Unit {
  double divisor;
  const char* name;
};
Unit unit_for(int64_t bytes) {
  if (bytes >= (int64_t(1) << 30)) return {double(int64_t(1) << 30), "GiB"};
  if (bytes >= (int64_t(1) << 20)) return {double(int64_t(1) << 20), "MiB"};
  if (bytes >= (int64_t(1) << 10)) return {1024.0, "KiB"};
  return {1.0, "B"};
}
std::string in_unit(int64_t bytes, Unit u) {
  if (u.divisor == 1.0) return fmt::format("{}", bytes);
  return fmt::format("{:.2f}", double(bytes) / u.divisor);
}

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  ENGINE_CHECK(out.good(), "Profiler::write_all: cannot open {} for writing", path.string());
  out << text;
  ENGINE_CHECK(out.good(), "Profiler::write_all: failed writing {}", path.string());
}

}  // namespace

// --- scopes ---

OpScope::OpScope(std::string_view op, std::string_view shapes) {
  if (!g_enabled.load(std::memory_order_relaxed)) return;  // profiling off: nothing else happens
  active_ = true;
  std::lock_guard lock(detail::state_mutex());
  ProfilerState& p = prof();
  if (t_thread < 0) t_thread = p.next_thread++;

  Call call;
  call.record.id = p.next_id++;
  // The parent is the enclosing call, unless it belongs to a session before a reset().
  if (!t_frames.empty() && find_call(t_frames.back().id)) call.record.parent = t_frames.back().id;
  call.record.op = op;
  call.record.module = t_module.path;
  call.record.phase = current_phase();
  call.record.pass = t_pass;
  call.record.shapes = shapes;
  call.record.device = Device::cpu();
  call.record.start_us = now_us();
  call.thread = t_thread;
  if (p.timer.record != nullptr && p.timing_device >= 0) {
    if (!p.gpu_reference_wall_us.count(p.timing_device))
      p.gpu_reference_wall_us[p.timing_device] = call.record.start_us;
    call.timing_device = p.timing_device;
    call.mark_start = p.timer.record(p.timing_device);
  }
  p.calls.push_back(std::move(call));
  t_frames.push_back({p.calls.back().record.id, 0, 0});
}

OpScope::~OpScope() {
  if (!active_) return;
  std::lock_guard lock(detail::state_mutex());
  Frame frame = t_frames.back();
  t_frames.pop_back();
  if (Call* c = find_call(frame.id)) {
    c->open = false;
    c->record.retained = c->live_inside;
    c->record.transient = std::max<int64_t>(0, frame.max_delta - c->record.retained);
    c->record.end_us = now_us();
    if (c->mark_start != 0) c->mark_end = prof().timer.record(c->timing_device);
  }
}

ModuleScope::ModuleScope(std::string_view name) {
  t_module.lengths.push_back(t_module.path.size());
  if (!t_module.path.empty()) t_module.path += '.';
  t_module.path += name;
}

ModuleScope::~ModuleScope() {
  t_module.path.resize(t_module.lengths.back());
  t_module.lengths.pop_back();
}

PassScope::PassScope(Pass pass) : previous_(t_pass) { t_pass = pass; }
PassScope::~PassScope() { t_pass = previous_; }

Pass current_pass() { return t_pass; }
std::string current_module_path() { return t_module.path; }

// --- hooks called by the allocator (mutex held) ---

namespace detail {

void on_allocate(Allocation& a, const DeviceUsage& usage) {
  if (!g_enabled.load(std::memory_order_relaxed)) return;
  const int64_t b = a.entry.bytes;
  for (Frame& f : t_frames) {
    f.delta += b;
    f.max_delta = std::max(f.max_delta, f.delta);
    if (Call* c = find_call(f.id)) {
      c->record.allocated += b;
      c->live_inside += b;
      if (!c->device_known) {
        c->record.device = a.entry.device;
        c->device_known = true;
      }
    }
  }
  if (!t_frames.empty()) {
    if (Call* owner = find_call(t_frames.back().id)) {
      a.entry.owner = owner->record.id;
      a.entry.op = owner->record.op;
    }
  }

  ProfilerState& p = prof();
  if (usage.device.is_cuda()) {
    p.timing_device = usage.device.index;
    // A device first used inside the session: its baseline is the driver's view before this
    // allocation's arena growth (the reserved bytes, all made since the session began).
    if (p.timer.used_bytes != nullptr && !p.baselines.count(usage.device.index))
      p.baselines[usage.device.index] = {p.timer.used_bytes(usage.device.index) - usage.reserved, 0};
  }
  double ts = now_us();
  p.counters.push_back({ts, usage.device, usage.live, usage.reserved});
  for (std::vector<DevicePeak>* peaks : {&p.peaks, &p.step_peaks}) {
    DevicePeak& dp = peak_of(*peaks, usage.device);
    if (usage.live > dp.peak) {
      // A new peak: the live set is "everything alive now", i.e. allocations up to this one.
      dp.peak = usage.live;
      dp.peak_seq = a.seq;
      dp.peak_us = ts;
      dp.frozen = false;
      dp.frozen_set.clear();
      dp.freed_since_peak.clear();
    }
  }
}

void on_free(const Allocation& a, const DeviceUsage& usage) {
  if (!g_enabled.load(std::memory_order_relaxed)) return;
  const int64_t b = a.entry.bytes;
  for (Frame& f : t_frames) {
    f.delta -= b;
    if (Call* c = find_call(f.id)) c->record.freed += b;
  }
  // The block no longer counts as retained by the calls that made it (if they are still open).
  for (Call* c = find_call(a.entry.owner); c != nullptr; c = find_call(c->record.parent))
    if (c->open) c->live_inside -= b;

  ProfilerState& p = prof();
  p.counters.push_back({now_us(), usage.device, usage.live, usage.reserved});
  for (std::vector<DevicePeak>* peaks : {&p.peaks, &p.step_peaks}) {
    DevicePeak& dp = peak_of(*peaks, usage.device);
    if (!dp.frozen && a.seq <= dp.peak_seq) dp.freed_since_peak.push_back(a.entry);
  }
}

void on_saved(int64_t bytes) {
  if (!g_enabled.load(std::memory_order_relaxed) || t_frames.empty()) return;
  if (Call* c = find_call(t_frames.back().id)) c->record.saved += bytes;
}

void on_out_of_memory(Device device, int64_t bytes) {
  if (!g_enabled.load(std::memory_order_relaxed)) return;
  prof().ooms.push_back({now_us(), device, bytes});
}

std::string current_op_name() {
  if (t_frames.empty()) return {};
  Call* c = find_call(t_frames.back().id);
  return c ? c->record.op : std::string();
}

std::string live_table_markdown(std::vector<LiveEntry> entries, size_t max_rows) {
  std::stable_sort(entries.begin(), entries.end(),
                   [](const LiveEntry& a, const LiveEntry& b) { return a.bytes > b.bytes; });
  std::string out =
      "| bytes | size | what | op | module | pass | phase | shape | dtype |\n"
      "|---:|---:|---|---|---|---|---|---|---|\n";
  int64_t total = 0, rest = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const LiveEntry& e = entries[i];
    total += e.bytes;
    if (i >= max_rows) {
      rest += e.bytes;
      continue;
    }
    std::string what = e.saved_by.empty() ? kind_name(e.kind) : "saved by " + e.saved_by;
    out += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", e.bytes,
                       format_bytes(e.bytes), what, or_dash(e.op), or_dash(e.module),
                       pass_name(e.pass), or_dash(e.phase), or_dash(e.shape), or_dash(e.dtype));
  }
  if (entries.size() > max_rows)
    out += fmt::format("| {} | {} | ... {} more allocation(s) | | | | | | |\n", rest,
                       format_bytes(rest), entries.size() - max_rows);
  out += fmt::format("\nTotal: {} ({} bytes) in {} allocation(s).\n", format_bytes(total), total,
                     entries.size());
  return out;
}

}  // namespace detail

// --- Profiler ---

void Profiler::enable(bool on) {
  std::lock_guard lock(detail::state_mutex());
  // Turning off: frees are no longer observed, so materialise the peak snapshots now.
  if (!on) {
    for (DevicePeak& dp : prof().peaks) freeze(dp);
    for (DevicePeak& dp : prof().step_peaks) freeze(dp);
  }
  g_enabled.store(on, std::memory_order_relaxed);
}

bool Profiler::enabled() { return g_enabled.load(std::memory_order_relaxed); }

void Profiler::reset() {
  std::lock_guard lock(detail::state_mutex());
  ProfilerState& p = prof();
  p.first_id = p.next_id;  // ids keep increasing, so stale owners never alias new calls
  p.calls.clear();
  p.counters.clear();
  p.ooms.clear();
  p.start = Clock::now();
  // The peak restarts at the current live bytes, with the current live set as its snapshot.
  p.peaks = peaks_from_now();
  p.step_peaks = peaks_from_now();
  // Device timing restarts: new reference marks, new reconciliation baselines.
  p.first_unresolved = 0;
  p.gpu_reference_wall_us.clear();
  p.baselines.clear();
  p.timing_device = -1;
  if (p.timer.reset_marks != nullptr) p.timer.reset_marks();
  for (const detail::DeviceUsage& u : detail::device_usages()) {
    if (!u.device.is_cuda()) continue;
    p.timing_device = u.device.index;
    if (p.timer.used_bytes != nullptr)
      p.baselines[u.device.index] = {p.timer.used_bytes(u.device.index), u.reserved};
  }
}

int64_t Profiler::outside_ops_at_peak(Device device) {
  std::lock_guard lock(detail::state_mutex());
  int64_t bytes = 0;
  for (const DevicePeak& dp : prof().peaks)
    if (dp.device == device)
      for (const LiveEntry& e : snapshot(dp))
        if (e.owner < prof().first_id) bytes += e.bytes;
  return bytes;
}

void Profiler::begin_step() {
  std::lock_guard lock(detail::state_mutex());
  prof().step_peaks = peaks_from_now();
}

int64_t Profiler::step_peak_bytes(Device device) {
  std::lock_guard lock(detail::state_mutex());
  for (const DevicePeak& dp : prof().step_peaks)
    if (dp.device == device) return dp.peak;
  return 0;
}

std::vector<Reconciliation> Profiler::reconciliation() {
  std::lock_guard lock(detail::state_mutex());
  return reconcile();
}

void register_device_timer(const DeviceTimer& timer) {
  std::lock_guard lock(detail::state_mutex());
  prof().timer = timer;
}

std::vector<OpRecord> Profiler::records() {
  std::lock_guard lock(detail::state_mutex());
  return records_locked();
}

std::vector<LiveEntry> Profiler::live_set_at_peak() {
  std::lock_guard lock(detail::state_mutex());
  return all_snapshots();
}

int64_t Profiler::peak_bytes(Device device) {
  std::lock_guard lock(detail::state_mutex());
  for (const DevicePeak& dp : prof().peaks)
    if (dp.device == device) return dp.peak;
  return 0;
}

std::string Profiler::table_markdown(size_t max_rows) {
  std::lock_guard lock(detail::state_mutex());
  std::vector<Row> rows = aggregate_locked();
  std::string out = "# Memory by op\n\n";
  for (const DevicePeak& dp : prof().peaks)
    out += fmt::format("Peak on {}: {} ({} bytes).\n", dp.device.str(), format_bytes(dp.peak),
                       dp.peak);
  out +=
      "\nSorted by `at peak`: bytes allocated by the op that were alive at the peak (the innermost "
      "op owns a block, so this column adds up). `allocated`, `freed`, `retained` and `saved` are "
      "sums over the calls and include nested ops; `transient` is the largest of any call.\n\n"
      "| op | module | pass | calls | at peak | allocated | freed | retained | transient (max) | "
      "saved | time (ms) | phase |\n"
      "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
  for (size_t i = 0; i < rows.size() && i < max_rows; ++i) {
    const Row& r = rows[i];
    out += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.3f} | {} |\n",
                       r.op, or_dash(r.module), pass_name(r.pass), r.calls,
                       format_bytes(r.at_peak), format_bytes(r.allocated), format_bytes(r.freed),
                       format_bytes(r.retained), format_bytes(r.transient_max),
                       format_bytes(r.saved), r.time_us / 1000.0, or_dash(r.phase));
  }
  if (rows.size() > max_rows)
    out += fmt::format("\n{} more row(s) in table.csv.\n", rows.size() - max_rows);
  int64_t unattributed = 0;
  for (const LiveEntry& e : all_snapshots())
    if (e.owner < prof().first_id) unattributed += e.bytes;
  out += fmt::format(
      "\nAlive at the peak but allocated outside any profiled op (parameters, optimizer state, "
      "setup): {}.\n",
      format_bytes(unattributed));
  const std::vector<Reconciliation> recs = reconcile();
  if (!recs.empty()) out += "\n## Device memory outside the arena\n\n" + reconciliation_text(recs);
  return out;
}

std::string Profiler::table_csv() {
  std::lock_guard lock(detail::state_mutex());
  std::string out =
      "op,module,pass,calls,at_peak_bytes,allocated_bytes,freed_bytes,retained_bytes,"
      "transient_max_bytes,saved_bytes,time_us,phase\n";
  for (const Row& r : aggregate_locked())
    out += fmt::format("{},{},{},{},{},{},{},{},{},{},{:.3f},{}\n", csv_field(r.op),
                       csv_field(r.module), pass_name(r.pass), r.calls, r.at_peak, r.allocated,
                       r.freed, r.retained, r.transient_max, r.saved, r.time_us,
                       csv_field(r.phase));
  return out;
}

std::string Profiler::calls_csv() {
  std::lock_guard lock(detail::state_mutex());
  std::string out =
      "id,parent,op,module,pass,phase,device,shapes,allocated_bytes,freed_bytes,retained_bytes,"
      "transient_bytes,saved_bytes,at_peak_bytes,start_us,end_us,gpu_start_us,gpu_end_us\n";
  for (const OpRecord& r : records_locked())
    out += fmt::format("{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.3f},{:.3f},{:.3f},{:.3f}\n",
                       r.id, r.parent, csv_field(r.op), csv_field(r.module), pass_name(r.pass),
                       csv_field(r.phase), r.device.str(), csv_field(r.shapes), r.allocated,
                       r.freed, r.retained, r.transient, r.saved, r.at_peak, r.start_us, r.end_us,
                       r.gpu_start_us, r.gpu_end_us);
  return out;
}

std::string Profiler::live_set_markdown(size_t max_rows) {
  std::lock_guard lock(detail::state_mutex());
  std::string out = "# Live set at the peak\n";
  if (prof().peaks.empty()) out += "\nNo allocation observed while profiling.\n";
  for (const DevicePeak& dp : prof().peaks) {
    out += fmt::format("\n## {}: peak {} ({} bytes)\n\n", dp.device.str(), format_bytes(dp.peak),
                       dp.peak);
    out += detail::live_table_markdown(snapshot(dp), max_rows);
  }
  return out;
}

std::string Profiler::chrome_trace_json() {
  std::lock_guard lock(detail::state_mutex());
  using nlohmann::json;
  json events = json::array();
  events.push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", 0},
                    {"args", {{"name", "engine"}}}});
  // One complete ("X") event per finished op call; nested calls nest in the viewer.
  std::vector<OpRecord> records = records_locked();
  const std::vector<Call>& calls = prof().calls;
  for (size_t i = 0; i < records.size(); ++i) {
    const OpRecord& r = records[i];
    if (calls[i].open) continue;
    events.push_back({{"name", r.op},
                      {"cat", "op"},
                      {"ph", "X"},
                      {"ts", r.start_us},
                      {"dur", r.end_us - r.start_us},
                      {"pid", 0},
                      {"tid", calls[i].thread},
                      {"args",
                       {{"id", r.id},
                        {"allocated", r.allocated},
                        {"freed", r.freed},
                        {"retained", r.retained},
                        {"transient", r.transient},
                        {"saved", r.saved},
                        {"at_peak", r.at_peak},
                        {"shapes", r.shapes},
                        {"module", r.module},
                        {"pass", pass_name(r.pass)},
                        {"phase", r.phase},
                        {"device", r.device.str()},
                        {"gpu_us", r.gpu_timed() ? r.time_us() : -1.0}}}});
    // The GPU's view (CUDA events) on a track of its own: the same call where the stream ran
    // it, placed on the host timeline at its device's reference mark.
    if (r.gpu_timed()) {
      auto ref = prof().gpu_reference_wall_us.find(calls[i].timing_device);
      const double origin = ref == prof().gpu_reference_wall_us.end() ? 0.0 : ref->second;
      events.push_back({{"name", r.op},
                        {"cat", "gpu"},
                        {"ph", "X"},
                        {"ts", origin + r.gpu_start_us},
                        {"dur", r.gpu_end_us - r.gpu_start_us},
                        {"pid", 1},
                        {"tid", calls[i].timing_device},
                        {"args", {{"id", r.id}, {"module", r.module}, {"pass", pass_name(r.pass)},
                                  {"phase", r.phase}}}});
    }
  }
  if (!prof().gpu_reference_wall_us.empty())
    events.push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", 1},
                      {"args", {{"name", "GPU (CUDA events)"}}}});
  // Counters ("C"): live and reserved bytes of each device after every allocation and free.
  for (const CounterSample& c : prof().counters)
    events.push_back({{"name", "memory " + c.device.str()},
                      {"ph", "C"},
                      {"ts", c.ts},
                      {"pid", 0},
                      {"args", {{"live", c.live}, {"reserved", c.reserved}}}});
  // Instants ("i"): the peak of each device and every out-of-memory failure.
  for (const DevicePeak& dp : prof().peaks)
    events.push_back({{"name", "peak " + dp.device.str()},
                      {"ph", "i"},
                      {"s", "g"},
                      {"ts", dp.peak_us},
                      {"pid", 0},
                      {"tid", 0},
                      {"args", {{"bytes", dp.peak}}}});
  for (const OomEvent& o : prof().ooms)
    events.push_back({{"name", "out of memory " + o.device.str()},
                      {"ph", "i"},
                      {"s", "g"},
                      {"ts", o.ts},
                      {"pid", 0},
                      {"tid", 0},
                      {"args", {{"requested", o.bytes}}}});
  json trace = {{"traceEvents", events}, {"displayTimeUnit", "ms"}};
  return trace.dump();
}

namespace {

// One row of the per-module tables: every call made under one module path.
struct ModuleRow {
  std::string module;
  int64_t calls = 0, at_peak = 0, allocated = 0, saved = 0;
  double time_us = 0;  // of the module's outermost calls (nested calls are inside them)
};

std::vector<ModuleRow> aggregate_modules_locked() {
  std::map<std::string, ModuleRow> rows;
  std::map<uint64_t, std::string> module_of;  // call id -> module (to find outermost calls)
  for (const OpRecord& r : records_locked()) {
    module_of[r.id] = r.module;
    ModuleRow& row = rows[r.module];
    row.module = r.module;
    row.calls += 1;
    row.at_peak += r.at_peak;  // exclusive per call, so it adds up over modules too
    row.saved += r.saved;
    // Bytes and time inclusive of nested calls: counted once, at the outermost call of the
    // module (a nested call in the same module is already inside its parent's numbers).
    auto parent = module_of.find(r.parent);
    if (r.parent != 0 && parent != module_of.end() && parent->second == r.module) continue;
    row.allocated += r.allocated;
    row.time_us += std::max(0.0, r.time_us());
  }
  std::vector<ModuleRow> out;
  for (auto& [key, row] : rows) out.push_back(row);
  std::stable_sort(out.begin(), out.end(), [](const ModuleRow& a, const ModuleRow& b) {
    if (a.at_peak != b.at_peak) return a.at_peak > b.at_peak;
    return a.time_us > b.time_us;
  });
  return out;
}

}  // namespace

std::string Profiler::per_module_markdown(size_t max_rows) {
  std::lock_guard lock(detail::state_mutex());
  std::vector<ModuleRow> rows = aggregate_modules_locked();
  std::string out =
      "# Memory and time by module\n\n"
      "All op calls under one module path, every pass and phase together. `at peak` adds up "
      "(see table.md); `allocated` and `time` count the module's outermost calls (nested calls "
      "are inside them); time is GPU time (CUDA events) for device calls, wall-clock time "
      "otherwise. `-` = outside any module (losses, optimizer, data).\n\n"
      "| module | calls | at peak | allocated | saved | time (ms) |\n"
      "|---|---:|---:|---:|---:|---:|\n";
  for (size_t i = 0; i < rows.size() && i < max_rows; ++i) {
    const ModuleRow& r = rows[i];
    out += fmt::format("| {} | {} | {} | {} | {} | {:.3f} |\n", or_dash(r.module), r.calls,
                       format_bytes(r.at_peak), format_bytes(r.allocated), format_bytes(r.saved),
                       r.time_us / 1000.0);
  }
  if (rows.size() > max_rows)
    out += fmt::format("\n{} more row(s) in per_module.csv.\n", rows.size() - max_rows);
  return out;
}

std::string Profiler::per_module_csv() {
  std::lock_guard lock(detail::state_mutex());
  std::string out = "module,calls,at_peak_bytes,allocated_bytes,saved_bytes,time_us\n";
  for (const ModuleRow& r : aggregate_modules_locked())
    out += fmt::format("{},{},{},{},{},{:.3f}\n", csv_field(r.module), r.calls, r.at_peak,
                       r.allocated, r.saved, r.time_us);
  return out;
}

std::string Profiler::step_summary(int64_t step) {
  std::lock_guard lock(detail::state_mutex());
  std::string prefix = step >= 0 ? fmt::format("step {} | ", step) : std::string();
  // Summarise the device with the largest peak (the GPU when there is one).
  const DevicePeak* main = nullptr;
  for (const DevicePeak& dp : prof().step_peaks)
    if (main == nullptr || dp.peak > main->peak) main = &dp;
  if (main == nullptr) return prefix + "no memory recorded";

  Unit u = unit_for(main->peak);
  // Peak split into persistent state (parameters, gradients, optimizer, buffers) and the
  // activations of each pass; plus the op holding the most bytes at the peak.
  std::map<std::string, int64_t> by_op;
  int64_t by_group[7] = {};  // passes 0..5, then state
  for (const LiveEntry& e : snapshot(*main)) {
    bool state = e.kind != Kind::activation && e.kind != Kind::workspace;
    by_group[state ? 6 : int(e.pass)] += e.bytes;
    if (!e.op.empty()) by_op[e.op] += e.bytes;
  }
  std::string parts;
  auto add = [&](const char* name, int64_t bytes) {
    if (bytes == 0) return;
    parts += fmt::format("{}{} {}", parts.empty() ? "" : ", ", name, in_unit(bytes, u));
  };
  add("state", by_group[6]);
  for (int pass = 0; pass < 6; ++pass) add(pass_name(Pass(pass)), by_group[pass]);

  int64_t reserved = 0;
  for (const detail::DeviceUsage& d : detail::device_usages())
    if (d.device == main->device) reserved = d.reserved;
  std::string top = "-";
  auto best = std::max_element(by_op.begin(), by_op.end(),
                               [](const auto& a, const auto& b) { return a.second < b.second; });
  if (best != by_op.end())
    top = fmt::format("{} {} {}", best->first, in_unit(best->second, u), u.name);
  return fmt::format("{}peak {} {}{} | reserved {} | top: {}", prefix, in_unit(main->peak, u),
                     u.name, parts.empty() ? "" : " (" + parts + ")", format_bytes(reserved), top);
}

void Profiler::write_all(const std::string& directory) {
  std::filesystem::path dir(directory);
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  ENGINE_CHECK(!error, "Profiler::write_all: cannot create directory {}: {}", directory,
               error.message());
  // Each export takes the lock itself.
  write_file(dir / "table.md", table_markdown());
  write_file(dir / "table.csv", table_csv());
  write_file(dir / "calls.csv", calls_csv());
  write_file(dir / "live_set.md", live_set_markdown());
  write_file(dir / "trace.json", chrome_trace_json());
  write_file(dir / "per_module.md", per_module_markdown());
  write_file(dir / "per_module.csv", per_module_csv());
}

}  // namespace engine::memory

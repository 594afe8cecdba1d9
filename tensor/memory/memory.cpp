// memory.cpp: the engine's allocator front end (memory.h; DESIGN.md section 5).
//
// Per device there are two Arenas (arena.h): the persistent region and the phase region. This
// file decides which one serves a request, keeps the table of live allocations (what each block
// is, who made it, for the leak check, the out-of-memory message and the profiler's live set),
// implements PhaseScope, reads the ENGINE_ARENA_* environment, and provides the CPU raw
// allocator. Every call takes one mutex: a data-loader thread may allocate while the training
// thread runs, and the arenas themselves are not thread-safe.
#include "tensor/memory/memory.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <utility>

#include <fmt/format.h>

#include "tensor/error.h"
#include "tensor/memory/arena.h"
#include "tensor/memory/profiler_hooks.h"

namespace engine::memory {

namespace {

// --- the CPU raw allocator: whole chunks of host memory, 256-byte aligned ---
void* cpu_reserve(size_t bytes) {
  // aligned_alloc needs a size that is a multiple of the alignment; chunks always are.
  return std::aligned_alloc(kAlignment, bytes);
}
void cpu_release(void* ptr, size_t /*bytes*/) { std::free(ptr); }

// Both regions of one device. The SharedReservation is declared first so that it outlives the
// arenas that point to it.
struct DeviceState {
  DeviceState(Device device, RawAllocator raw, const ArenaOptions& opts)
      : options(opts),
        persistent(device.str() + " persistent", raw, opts, &reservation),
        phase(device.str() + " phase", raw, opts, &reservation) {}

  int64_t live() const { return persistent.stats().live + phase.stats().live; }
  int64_t reserved() const { return persistent.stats().reserved + phase.stats().reserved; }

  ArenaOptions options;
  SharedReservation reservation;
  Arena persistent;
  Arena phase;
  int64_t peak = 0;  // high-water of live() since reset_peak
};

// A PhaseScope open on some thread.
struct OpenPhase {
  std::string name;
  Device device;
  uint64_t serial = 0;
  const PhaseScope* scope = nullptr;
};

using DeviceKey = std::pair<int, int>;  // (type, index)
DeviceKey key_of(Device d) { return {int(d.type), d.index}; }

struct State {
  std::mutex mutex;
  RawAllocator raw[2] = {{cpu_reserve, cpu_release}, {}};  // indexed by DeviceType
  std::map<DeviceKey, std::unique_ptr<DeviceState>> devices;
  std::map<DeviceKey, ArenaOptions> configured;
  std::unordered_map<void*, detail::Allocation> live;
  uint64_t seq = 0;                // number of the last allocation
  uint64_t next_phase_serial = 1;
};

// Created on first use and never destroyed: tensors in static storage may still free their
// memory while the program exits, after a normal static would already be gone.
State& state() {
  static State* s = new State();
  return *s;
}

// Phases are per thread: a data-loader thread that allocates while the training thread is inside
// a phase gets persistent memory, not a block of the training phase.
thread_local std::vector<OpenPhase> t_phases;

const OpenPhase* innermost_phase(Device device) {
  for (auto it = t_phases.rbegin(); it != t_phases.rend(); ++it)
    if (it->device == device) return &*it;
  return nullptr;
}

DeviceState* find_device(Device device) {
  auto it = state().devices.find(key_of(device));
  return it == state().devices.end() ? nullptr : it->second.get();
}

DeviceState& device_state(Device device) {
  State& s = state();
  auto& slot = s.devices[key_of(device)];
  if (!slot) {
    RawAllocator raw = s.raw[int(device.type)];
    if (!raw.reserve) {
      s.devices.erase(key_of(device));
      throw Error(fmt::format("memory: no raw allocator for device {} (is the {} backend built?)",
                              device.str(), device.is_cuda() ? "CUDA" : "CPU"));
    }
    auto configured = s.configured.find(key_of(device));
    ArenaOptions opts = configured != s.configured.end() ? configured->second
                                                          : arena_options_from_env();
    slot = std::make_unique<DeviceState>(device, raw, opts);
  }
  return *slot;
}

detail::DeviceUsage usage_of(Device device, const DeviceState& d) {
  return {device, d.live(), d.reserved()};
}

// Live allocations of `device` that satisfy `keep`, as live-set entries.
template <typename Predicate>
std::vector<LiveEntry> live_entries(Device device, Predicate keep) {
  std::vector<LiveEntry> out;
  for (const auto& [ptr, a] : state().live)
    if (a.entry.device == device && keep(a)) out.push_back(a.entry);
  return out;
}

int64_t total_bytes(const std::vector<LiveEntry>& entries) {
  int64_t sum = 0;
  for (const LiveEntry& e : entries) sum += e.bytes;
  return sum;
}

// Parses an unsigned integer environment variable; nullopt when unset or empty.
std::optional<uint64_t> env_uint(const char* name) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return std::nullopt;
  char* end = nullptr;
  errno = 0;
  unsigned long long value = std::strtoull(text, &end, 10);
  ENGINE_CHECK(errno == 0 && *end == '\0' && text[0] != '-',
               "{}: expected a non-negative integer, got '{}'", name, text);
  return value;
}

}  // namespace

// --- names ---

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::activation: return "activation";
    case Kind::param: return "param";
    case Kind::grad: return "grad";
    case Kind::optimizer_state: return "optimizer_state";
    case Kind::buffer: return "buffer";
    case Kind::workspace: return "workspace";
  }
  return "?";
}

const char* pass_name(Pass p) {
  switch (p) {
    case Pass::fwd: return "fwd";
    case Pass::bwd: return "bwd";
    case Pass::bwd2: return "bwd2";
    case Pass::bwd3: return "bwd3";
    case Pass::optim: return "optim";
    case Pass::comm: return "comm";
  }
  return "?";
}

Pass next_backward_pass(Pass p) {
  switch (p) {
    case Pass::fwd: return Pass::bwd;
    case Pass::bwd: return Pass::bwd2;
    // Fourth and higher orders are rare enough to share the bwd3 label.
    case Pass::bwd2: case Pass::bwd3: return Pass::bwd3;
    // Nodes recorded while the optimizer or a collective runs (normally none: no-grad) get a
    // plain backward.
    case Pass::optim: case Pass::comm: return Pass::bwd;
  }
  return Pass::bwd;
}

std::string format_bytes(int64_t bytes) {
  const char* sign = bytes < 0 ? "-" : "";
  double b = double(bytes < 0 ? -bytes : bytes);
  if (b < 1024) return fmt::format("{}{} B", sign, int64_t(b));
  if (b < 1024.0 * 1024) return fmt::format("{}{:.1f} KiB", sign, b / 1024);
  if (b < 1024.0 * 1024 * 1024) return fmt::format("{}{:.1f} MiB", sign, b / (1024.0 * 1024));
  return fmt::format("{}{:.2f} GiB", sign, b / (1024.0 * 1024 * 1024));
}

// --- configuration ---

ArenaOptions arena_options_from_env() {
  ArenaOptions o;
  if (auto mb = env_uint("ENGINE_ARENA_CHUNK_MB")) {
    ENGINE_CHECK(*mb > 0, "ENGINE_ARENA_CHUNK_MB: must be at least 1, got 0");
    o.chunk_bytes = size_t(*mb) << 20;
  }
  if (auto grow = env_uint("ENGINE_ARENA_GROW")) {
    ENGINE_CHECK(*grow <= 1, "ENGINE_ARENA_GROW: expected 0 or 1, got {}", *grow);
    o.grow = *grow == 1;
  }
  if (auto mb = env_uint("ENGINE_ARENA_LIMIT_MB")) o.limit_bytes = size_t(*mb) << 20;
  return o;
}

void configure(Device device, const ArenaOptions& opts) {
  std::lock_guard lock(detail::state_mutex());
  state().configured[key_of(device)] = opts;
  if (DeviceState* d = find_device(device)) {
    d->options = opts;
    d->persistent.set_options(opts);
    d->phase.set_options(opts);
  }
}

ArenaOptions arena_options(Device device) {
  std::lock_guard lock(detail::state_mutex());
  if (DeviceState* d = find_device(device)) return d->options;
  auto configured = state().configured.find(key_of(device));
  return configured != state().configured.end() ? configured->second : arena_options_from_env();
}

void empty_cache(Device device) {
  std::lock_guard lock(detail::state_mutex());
  if (DeviceState* d = find_device(device)) {
    if (d->persistent.stats().live == 0) d->persistent.release_chunks();
    if (d->phase.stats().live == 0) d->phase.release_chunks();
  }
}

void register_raw_allocator(DeviceType type, RawAllocator allocator) {
  std::lock_guard lock(detail::state_mutex());
  // Devices already in use keep the allocator their chunks came from.
  state().raw[int(type)] = allocator;
}

// --- allocate / free ---

void* allocate(Device device, size_t bytes, Kind kind) {
  std::lock_guard lock(detail::state_mutex());
  State& s = state();
  DeviceState& d = device_state(device);

  // Activations and workspaces of a phase go to the phase arena; everything else (parameters,
  // gradients, optimizer state, buffers, and all allocations outside phases) is persistent.
  const OpenPhase* phase = innermost_phase(device);
  bool in_phase = phase != nullptr && (kind == Kind::activation || kind == Kind::workspace);
  Arena& arena = in_phase ? d.phase : d.persistent;

  void* ptr = arena.try_allocate(bytes);
  if (ptr == nullptr) {
    size_t rounded = round_up_to_alignment(bytes);
    detail::on_out_of_memory(device, int64_t(rounded));
    std::vector<LiveEntry> entries =
        live_entries(device, [](const detail::Allocation&) { return true; });
    std::string op = detail::current_op_name();
    throw Error(fmt::format(
        "out of memory on {}: cannot allocate {} ({} bytes) of {} in the {} region "
        "(op {}, module {}, phase {}).\n{}\n{}\n"
        "Set ENGINE_ARENA_GROW=1, or raise ENGINE_ARENA_CHUNK_MB / ENGINE_ARENA_LIMIT_MB.\n"
        "Live set on {}: {} in {} allocation(s)\n{}",
        device.str(), format_bytes(int64_t(rounded)), rounded, kind_name(kind),
        in_phase ? "phase" : "persistent", op.empty() ? "-" : op,
        current_module_path().empty() ? "-" : current_module_path(),
        current_phase().empty() ? "-" : current_phase(), d.persistent.describe(),
        d.phase.describe(), device.str(), format_bytes(total_bytes(entries)), entries.size(),
        detail::live_table_markdown(entries, 30)));
  }

  detail::Allocation a;
  a.entry.bytes = int64_t(arena.block_size(ptr));
  a.entry.kind = kind;
  a.entry.device = device;
  a.entry.module = current_module_path();
  a.entry.phase = current_phase();
  a.entry.pass = current_pass();
  a.in_phase_region = in_phase;
  a.phase_serial = in_phase ? phase->serial : 0;
  a.seq = ++s.seq;
  d.peak = std::max(d.peak, d.live());

  detail::Allocation& stored = s.live.emplace(ptr, std::move(a)).first->second;
  detail::on_allocate(stored, usage_of(device, d));
  return ptr;
}

void deallocate(Device device, void* ptr) {
  if (ptr == nullptr) return;  // like free(nullptr)
  std::lock_guard lock(detail::state_mutex());
  State& s = state();
  auto it = s.live.find(ptr);
  ENGINE_CHECK(it != s.live.end(),
               "memory::deallocate: {} on {} was not allocated by the engine (double free?)", ptr,
               device.str());
  const detail::Allocation& a = it->second;
  ENGINE_CHECK(a.entry.device == device,
               "memory::deallocate: {} was allocated on {} but freed on {}", ptr,
               a.entry.device.str(), device.str());
  DeviceState& d = *find_device(device);
  (a.in_phase_region ? d.phase : d.persistent).deallocate(ptr);
  detail::on_free(a, usage_of(device, d));
  s.live.erase(it);
}

void annotate(void* ptr, std::string_view shape, std::string_view dtype) {
  std::lock_guard lock(detail::state_mutex());
  auto it = state().live.find(ptr);
  if (it == state().live.end()) return;
  it->second.entry.shape = shape;
  it->second.entry.dtype = dtype;
}

void mark_saved(void* ptr, size_t bytes, std::string_view node_name) {
  std::lock_guard lock(detail::state_mutex());
  auto it = state().live.find(ptr);
  if (it != state().live.end()) it->second.entry.saved_by = node_name;
  // Rounded like every byte count of the profiler: the block really holds that much.
  detail::on_saved(int64_t(round_up_to_alignment(bytes)));
}

// --- statistics ---

Stats persistent_stats(Device device) {
  std::lock_guard lock(detail::state_mutex());
  DeviceState* d = find_device(device);
  return d ? d->persistent.stats() : Stats{};
}

Stats phase_stats(Device device) {
  std::lock_guard lock(detail::state_mutex());
  DeviceState* d = find_device(device);
  return d ? d->phase.stats() : Stats{};
}

Stats stats(Device device) {
  std::lock_guard lock(detail::state_mutex());
  DeviceState* d = find_device(device);
  if (d == nullptr) return {};
  const Stats& p = d->persistent.stats();
  const Stats& q = d->phase.stats();
  return {p.live + q.live, d->peak, p.reserved + q.reserved, p.num_allocs + q.num_allocs,
          p.num_frees + q.num_frees};
}

void reset_peak(Device device) {
  std::lock_guard lock(detail::state_mutex());
  if (DeviceState* d = find_device(device)) {
    d->persistent.reset_peak();
    d->phase.reset_peak();
    d->peak = d->live();
  }
}

// --- phases ---

PhaseScope::PhaseScope(std::string name, Device device) : name_(std::move(name)), device_(device) {
  std::lock_guard lock(detail::state_mutex());
  device_state(device_);  // fail here, not at the first allocation, if the device is unusable
  t_phases.push_back({name_, device_, state().next_phase_serial++, this});
}

PhaseScope::~PhaseScope() {
  if (closed_) return;
  // A destructor must not throw (it may run during unwinding): report instead.
  try {
    close();
  } catch (const std::exception& e) {
    std::cerr << "warning: " << e.what() << std::endl;
  }
}

void PhaseScope::close() {
  if (closed_) return;
  closed_ = true;
  std::lock_guard lock(detail::state_mutex());
  auto open = std::find_if(t_phases.begin(), t_phases.end(),
                           [this](const OpenPhase& p) { return p.scope == this; });
  ENGINE_CHECK(open != t_phases.end(),
               "PhaseScope {}: close() must run on the thread that opened the phase", name_);
  uint64_t serial = open->serial;
  t_phases.erase(open);

  // Leaks: phase-region blocks made in this phase (or in a phase nested in it, which has a
  // larger serial) that are still alive.
  std::vector<LiveEntry> leaked = live_entries(device_, [serial](const detail::Allocation& a) {
    return a.in_phase_region && a.phase_serial >= serial;
  });
  if (!leaked.empty()) {
    // The leaked blocks stay allocated (their owners may still free them); the phase arena is
    // simply not empty at the start of the next phase.
    throw Error(fmt::format(
        "PhaseScope {} on {}: {} allocation(s) ({}) made in this phase are still alive at its "
        "end. Activations must not outlive their phase: keep tensors that must survive in "
        "persistent memory (param / grad / buffer kinds) or free them before the phase ends.\n{}",
        name_, device_.str(), leaked.size(), format_bytes(total_bytes(leaked)),
        detail::live_table_markdown(leaked, 30)));
  }

  // Reset: once everything is freed, coalescing has already turned each chunk back into one free
  // block, so the next phase sees a fresh arena and repeats this phase's addresses. Check it.
  DeviceState& d = *find_device(device_);
  if (d.phase.stats().live == 0) {
    ENGINE_CHECK(d.phase.is_pristine(),
                 "PhaseScope {}: internal error, the empty phase arena is fragmented: {}", name_,
                 d.phase.describe());
  }
}

std::string current_phase() { return t_phases.empty() ? std::string() : t_phases.back().name; }

// --- the profiler's view of the allocator (profiler_hooks.h) ---

namespace detail {

std::mutex& state_mutex() { return state().mutex; }

const std::unordered_map<void*, Allocation>& live_allocations() { return state().live; }

uint64_t last_allocation_seq() { return state().seq; }

std::vector<DeviceUsage> device_usages() {
  std::vector<DeviceUsage> out;
  for (const auto& [key, d] : state().devices)
    out.push_back({Device{DeviceType(key.first), key.second}, d->live(), d->reserved()});
  return out;
}

}  // namespace detail

}  // namespace engine::memory

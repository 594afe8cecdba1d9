// test_memory.cpp: the memory subsystem (tensor/memory/): the Arena's best fit, coalescing,
// alignment, growth and failure; regions, phases and their leak check; and the per-op profiler's
// exact byte accounting, peak live set and exports.
//
// Byte counts are exact on purpose: every block is a multiple of 256 bytes, so e.g. a 1000-byte
// request costs 1024 bytes and a 300-byte one 512. The allocator state is global per device, so
// every test frees all it allocates (Fresh checks that the CPU starts empty).
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "tensor/error.h"
#include "tensor/memory/arena.h"
#include "tensor/memory/memory.h"
#include "tensor/memory/profiler.h"

using namespace engine;
using namespace engine::memory;

namespace {

const Device cpu = Device::cpu();
constexpr size_t KiB = 1024;

uintptr_t addr(const void* p) { return reinterpret_cast<uintptr_t>(p); }

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A test raw allocator that hands out consecutive pieces of one static buffer, so that chunks
// are adjacent in memory (the arena must still not merge blocks across them), and counts calls.
struct BumpHeap {
  alignas(256) static inline std::byte buffer[4 << 20];
  static inline size_t used = 0;
  static inline int reserves = 0, releases = 0;
  static void* reserve(size_t bytes) {
    if (used + bytes > sizeof(buffer)) return nullptr;
    void* p = buffer + used;
    used += bytes;
    reserves += 1;
    return p;
  }
  static void release(void*, size_t) { releases += 1; }
  static RawAllocator allocator() {
    used = 0;
    reserves = releases = 0;
    return {reserve, release};
  }
};

ArenaOptions options_with(size_t chunk, bool grow = true, size_t limit = 0) {
  ArenaOptions o;
  o.chunk_bytes = chunk;
  o.grow = grow;
  o.limit_bytes = limit;
  return o;
}

// Start of every memory-level test: nothing alive on the CPU, profiler off and empty.
struct Fresh {
  Fresh() {
    REQUIRE(stats(cpu).live == 0);
    Profiler::enable(false);
    Profiler::reset();
  }
  ~Fresh() { Profiler::enable(false); }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

const OpRecord& find_record(const std::vector<OpRecord>& records, const std::string& op) {
  for (const OpRecord& r : records)
    if (r.op == op) return r;
  FAIL("no record for op " << op);
  return records.front();
}

}  // namespace

// ---------------------------------------------------------------- Arena

TEST_CASE("arena: requests are rounded up to 256 bytes and zero bytes get a unique block") {
  Arena arena("test", BumpHeap::allocator(), options_with(64 * KiB));
  CHECK(round_up_to_alignment(0) == 256);
  CHECK(round_up_to_alignment(1) == 256);
  CHECK(round_up_to_alignment(256) == 256);
  CHECK(round_up_to_alignment(257) == 512);

  void* z1 = arena.allocate(0);
  void* z2 = arena.allocate(0);
  void* a = arena.allocate(1000);
  void* b = arena.allocate(1);
  CHECK(z1 != z2);
  CHECK(addr(z1) % 256 == 0);
  CHECK(addr(a) % 256 == 0);
  CHECK(addr(b) % 256 == 0);
  CHECK(arena.block_size(z1) == 256);
  CHECK(arena.block_size(a) == 1024);
  // Blocks are carved from the low end of the chunk, one after the other.
  CHECK(addr(z2) == addr(z1) + 256);
  CHECK(addr(a) == addr(z2) + 256);
  CHECK(addr(b) == addr(a) + 1024);
  CHECK(arena.stats().live == 256 + 256 + 1024 + 256);
  CHECK(arena.stats().num_allocs == 4);
  for (void* p : {z1, z2, a, b}) arena.deallocate(p);
  CHECK(arena.stats().live == 0);
  CHECK(arena.stats().peak == 1792);
  CHECK(arena.stats().num_frees == 4);
}

TEST_CASE("arena: best fit takes the smallest hole that fits, not the first one") {
  Arena arena("test", BumpHeap::allocator(), options_with(64 * KiB));
  void* big = arena.allocate(4 * KiB);    // will become a 4 KiB hole at the lowest address
  void* sep1 = arena.allocate(256);
  void* small = arena.allocate(1 * KiB);  // will become a 1 KiB hole
  void* sep2 = arena.allocate(256);
  arena.deallocate(big);
  arena.deallocate(small);
  // Holes: 4 KiB, 1 KiB, and the rest of the chunk.
  REQUIRE(arena.free_blocks().size() == 3);

  void* a = arena.allocate(1000);  // first fit would take the 4 KiB hole
  CHECK(a == small);
  void* b = arena.allocate(3 * KiB);  // the 4 KiB hole is the best fit now (the tail is larger)
  CHECK(b == big);
  // The 1 KiB left of the 4 KiB hole stays free, right after b.
  CHECK(arena.free_blocks().front() == Arena::Block{addr(big) + 3 * KiB, 1 * KiB});
  for (void* p : {a, b, sep1, sep2}) arena.deallocate(p);
  CHECK(arena.is_pristine());
}

TEST_CASE("arena: freeing coalesces with free neighbours") {
  Arena arena("test", BumpHeap::allocator(), options_with(64 * KiB));
  void* a = arena.allocate(1 * KiB);
  void* b = arena.allocate(1 * KiB);
  void* c = arena.allocate(1 * KiB);
  void* d = arena.allocate(1 * KiB);
  const uintptr_t base = addr(a);
  const Arena::Block tail{base + 4 * KiB, 60 * KiB};
  REQUIRE(arena.free_blocks() == std::vector<Arena::Block>{tail});

  SUBCASE("with the right neighbour") {
    arena.deallocate(c);
    arena.deallocate(b);  // b + c
    CHECK(arena.free_blocks() == std::vector<Arena::Block>{{addr(b), 2 * KiB}, tail});
    CHECK(arena.allocate(2 * KiB) == b);  // the merged hole is reused as one block
    arena.deallocate(b);
    arena.deallocate(a);
    arena.deallocate(d);
  }
  SUBCASE("with the left neighbour") {
    arena.deallocate(a);
    arena.deallocate(b);  // a + b
    CHECK(arena.free_blocks() == std::vector<Arena::Block>{{base, 2 * KiB}, tail});
    arena.deallocate(c);
    arena.deallocate(d);
  }
  SUBCASE("with both neighbours") {
    arena.deallocate(a);
    arena.deallocate(c);
    CHECK(arena.free_blocks().size() == 3);
    arena.deallocate(b);  // a + b + c
    CHECK(arena.free_blocks() == std::vector<Arena::Block>{{base, 3 * KiB}, tail});
    CHECK(arena.allocate(3 * KiB) == a);
    arena.deallocate(a);
    arena.deallocate(d);  // d merges with both the 3 KiB hole and the tail
  }
  // Whatever the order, freeing everything leaves the chunk as one free block.
  CHECK(arena.free_blocks() == std::vector<Arena::Block>{{base, 64 * KiB}});
  CHECK(arena.is_pristine());
  CHECK(arena.stats().live == 0);
}

TEST_CASE("arena: grows by whole chunks and never merges blocks across chunks") {
  Arena arena("test", BumpHeap::allocator(), options_with(64 * KiB));
  CHECK(arena.stats().reserved == 0);  // nothing is reserved before the first request
  void* a = arena.allocate(40 * KiB);
  CHECK(arena.stats().reserved == 64 * KiB);
  void* b = arena.allocate(40 * KiB);  // does not fit in the 24 KiB left: a second chunk
  CHECK(arena.stats().reserved == 128 * KiB);
  void* c = arena.allocate(100 * KiB);  // larger than a chunk: a chunk of exactly its size
  CHECK(arena.stats().reserved == 228 * KiB);
  CHECK(BumpHeap::reserves == 3);
  // The bump heap placed the chunks back to back.
  auto chunks = arena.chunks();
  REQUIRE(chunks.size() == 3);
  CHECK(chunks[1].address == chunks[0].address + 64 * KiB);
  CHECK(chunks[2] == Arena::Block{chunks[0].address + 128 * KiB, 100 * KiB});
  CHECK(addr(c) == chunks[2].address);

  arena.deallocate(a);
  arena.deallocate(b);
  arena.deallocate(c);
  // One free block per chunk, even though the chunks touch.
  CHECK(arena.free_blocks() == chunks);
  CHECK(arena.is_pristine());
  CHECK(arena.stats().peak == 180 * KiB);

  arena.release_chunks();
  CHECK(arena.stats().reserved == 0);
  CHECK(BumpHeap::releases == 3);
  CHECK(arena.chunks().empty());
  // Usable again afterwards.
  void* d = arena.allocate(1);
  CHECK(arena.stats().reserved == 64 * KiB);
  CHECK_THROWS_AS(arena.release_chunks(), Error);  // not while a block is in use
  arena.deallocate(d);
}

TEST_CASE("arena: without growth or beyond the limit a request fails with the live blocks") {
  SUBCASE("grow off: only the first chunk") {
    Arena arena("fixed", BumpHeap::allocator(), options_with(64 * KiB, /*grow=*/false));
    void* a = arena.allocate(40 * KiB);
    CHECK(arena.try_allocate(40 * KiB) == nullptr);
    std::string message = error_of([&] { arena.allocate(40 * KiB); });
    CHECK(contains(message, "arena 'fixed': cannot allocate 40.0 KiB (40960 bytes)"));
    CHECK(contains(message, "live blocks"));
    CHECK(contains(message, fmt::format("| {:#x} | 40960 |", addr(a))));
    CHECK(contains(message, "grow off"));
    CHECK(arena.stats().reserved == 64 * KiB);
    arena.deallocate(a);
  }
  SUBCASE("limit: the last chunk shrinks to what the limit leaves, then requests fail") {
    Arena arena("capped", BumpHeap::allocator(), options_with(64 * KiB, true, 100 * KiB));
    void* a = arena.allocate(40 * KiB);
    void* b = arena.allocate(30 * KiB);  // needs a second chunk: 36 KiB are left under the limit
    CHECK(arena.stats().reserved == 100 * KiB);
    CHECK(arena.chunks().back().bytes == 36 * KiB);
    void* c = arena.allocate(6 * KiB);  // best fit: exactly the rest of the second chunk
    CHECK(addr(c) == addr(b) + 30 * KiB);
    CHECK(arena.try_allocate(25 * KiB) == nullptr);  // only the 24 KiB hole of chunk 1 is left
    void* d = arena.allocate(24 * KiB);
    CHECK(arena.try_allocate(1) == nullptr);
    CHECK(arena.stats().reserved == 100 * KiB);
    for (void* p : {a, b, c, d}) arena.deallocate(p);
  }
  SUBCASE("the limit is shared by the arenas of one group") {
    SharedReservation group;
    Arena first("first", BumpHeap::allocator(), options_with(64 * KiB, true, 96 * KiB), &group);
    Arena second("second", {BumpHeap::reserve, BumpHeap::release},
                 options_with(64 * KiB, true, 96 * KiB), &group);
    void* a = first.allocate(1);
    CHECK(group.reserved == 64 * KiB);
    CHECK(second.try_allocate(40 * KiB) == nullptr);  // only 32 KiB left for the group
    void* b = second.allocate(32 * KiB);
    CHECK(group.reserved == 96 * KiB);
    first.deallocate(a);
    second.deallocate(b);
    first.release_chunks();
    CHECK(group.reserved == 32 * KiB);
  }
}

TEST_CASE("arena: freeing an unknown pointer is an error") {
  Arena arena("test", BumpHeap::allocator(), options_with(64 * KiB));
  void* a = arena.allocate(512);
  int local = 0;
  CHECK_THROWS_AS(arena.deallocate(&local), Error);
  CHECK_THROWS_AS(arena.deallocate(static_cast<char*>(a) + 256), Error);  // not a block start
  arena.deallocate(a);
  CHECK_THROWS_AS(arena.deallocate(a), Error);  // double free
}

// ---------------------------------------------------------------- memory.h

TEST_CASE("memory: names, passes and byte formatting") {
  CHECK(std::string(kind_name(Kind::optimizer_state)) == "optimizer_state");
  CHECK(std::string(pass_name(Pass::bwd2)) == "bwd2");
  CHECK(next_backward_pass(Pass::fwd) == Pass::bwd);
  CHECK(next_backward_pass(Pass::bwd) == Pass::bwd2);
  CHECK(next_backward_pass(Pass::bwd2) == Pass::bwd3);
  CHECK(format_bytes(512) == "512 B");
  CHECK(format_bytes(1536) == "1.5 KiB");
  CHECK(format_bytes(int64_t(3) << 29) == "1.50 GiB");
}

TEST_CASE("memory: the environment configures the arenas") {
  ::setenv("ENGINE_ARENA_CHUNK_MB", "4", 1);
  ::setenv("ENGINE_ARENA_GROW", "0", 1);
  ::setenv("ENGINE_ARENA_LIMIT_MB", "64", 1);
  ArenaOptions o = arena_options_from_env();
  CHECK(o.chunk_bytes == size_t(4) << 20);
  CHECK(o.grow == false);
  CHECK(o.limit_bytes == size_t(64) << 20);
  ::setenv("ENGINE_ARENA_GROW", "yes", 1);
  CHECK(contains(error_of([] { arena_options_from_env(); }), "ENGINE_ARENA_GROW"));
  ::setenv("ENGINE_ARENA_GROW", "2", 1);
  CHECK_THROWS_AS(arena_options_from_env(), Error);
  ::unsetenv("ENGINE_ARENA_CHUNK_MB");
  ::unsetenv("ENGINE_ARENA_GROW");
  ::unsetenv("ENGINE_ARENA_LIMIT_MB");
  ArenaOptions defaults = arena_options_from_env();
  CHECK(defaults.chunk_bytes == size_t(256) << 20);
  CHECK(defaults.grow == true);
  CHECK(defaults.limit_bytes == 0);
}

TEST_CASE("memory: activations of a phase go to the phase arena, state to the persistent one") {
  Fresh fresh;
  const Stats persistent0 = persistent_stats(cpu);
  const Stats phase0 = phase_stats(cpu);

  void* outside = allocate(cpu, 1000);  // no phase open: persistent
  CHECK(persistent_stats(cpu).live == persistent0.live + 1024);
  {
    PhaseScope phase("G_main");
    CHECK(current_phase() == "G_main");
    void* act = allocate(cpu, 1000);                      // activation: phase
    void* ws = allocate(cpu, 0, Kind::workspace);         // workspace: phase
    void* grad = allocate(cpu, 3000, Kind::grad);         // gradients outlive phases
    void* moment = allocate(cpu, 10, Kind::optimizer_state);
    CHECK(phase_stats(cpu).live == 1024 + 256);
    CHECK(persistent_stats(cpu).live == persistent0.live + 1024 + 3072 + 256);
    CHECK(stats(cpu).live == 1024 + 1024 + 256 + 3072 + 256);
    CHECK(stats(cpu).num_allocs == persistent0.num_allocs + phase0.num_allocs + 5);
    deallocate(cpu, act);
    deallocate(cpu, ws);
    phase.close();
    CHECK(current_phase().empty());
    deallocate(cpu, grad);  // persistent blocks alive at the end of a phase are not leaks
    deallocate(cpu, moment);
  }
  deallocate(cpu, outside);
  CHECK(stats(cpu).live == 0);
  CHECK(stats(cpu).num_frees == persistent0.num_frees + phase0.num_frees + 5);
  CHECK(stats(cpu).peak >= 5632);
  reset_peak(cpu);
  CHECK(stats(cpu).peak == 0);
}

TEST_CASE("memory: deallocate rejects pointers it did not hand out") {
  Fresh fresh;
  int local = 0;
  CHECK(contains(error_of([&] { deallocate(cpu, &local); }), "was not allocated by the engine"));
  void* p = allocate(cpu, 64);
  CHECK_THROWS_AS(deallocate(Device::cuda(0), p), Error);  // wrong device
  deallocate(cpu, p);
  CHECK_THROWS_AS(deallocate(cpu, p), Error);  // double free
  deallocate(cpu, nullptr);                    // like free(nullptr): nothing happens
  CHECK(stats(cpu).live == 0);
}

TEST_CASE("memory: two identical phases get identical addresses") {
  Fresh fresh;
  void* param = allocate(cpu, 5000, Kind::param);
  auto run_phase = [] {
    std::vector<void*> addresses;
    PhaseScope phase("D_main");
    void* a = allocate(cpu, 1000);
    void* b = allocate(cpu, 5000);
    deallocate(cpu, a);
    void* c = allocate(cpu, 300);  // best fit: the 1 KiB hole a left
    void* d = allocate(cpu, 2000);
    addresses = {a, b, c, d};
    deallocate(cpu, b);
    void* g = allocate(cpu, 4 * KiB, Kind::grad);  // persistent, alive across phases
    deallocate(cpu, d);
    deallocate(cpu, c);
    phase.close();
    deallocate(cpu, g);
    return addresses;
  };
  std::vector<void*> first = run_phase();
  const int64_t reserved = phase_stats(cpu).reserved;
  std::vector<void*> second = run_phase();
  CHECK(first == second);
  CHECK(first[2] == first[0]);
  CHECK(phase_stats(cpu).reserved == reserved);  // no new chunk for the second phase
  CHECK(phase_stats(cpu).live == 0);
  deallocate(cpu, param);
}

TEST_CASE("memory: PhaseScope::close throws on a leak and names the owner") {
  Fresh fresh;
  Profiler::enable(true);
  void* leaked = nullptr;
  PhaseScope phase("D_r1");
  {
    ModuleScope d("D");
    ModuleScope block("b8");
    OpScope op("leaky_conv");
    leaked = allocate(cpu, 2000);
    annotate(leaked, "[2,250]", "f32");
  }
  void* freed = allocate(cpu, 100);
  deallocate(cpu, freed);
  std::string message = error_of([&] { phase.close(); });
  CHECK(contains(message, "PhaseScope D_r1 on cpu: 1 allocation(s) (2.0 KiB)"));
  CHECK(contains(message, "| 2048 | 2.0 KiB | activation | leaky_conv | D.b8 | fwd | D_r1 | "
                          "[2,250] | f32 |"));
  CHECK(current_phase().empty());  // the phase is closed even though it threw
  deallocate(cpu, leaked);         // the leaked block can still be freed afterwards
  CHECK(phase_stats(cpu).live == 0);
}

TEST_CASE("memory: a leaking PhaseScope destructor reports on stderr instead of throwing") {
  Fresh fresh;
  std::ostringstream captured;
  std::streambuf* old = std::cerr.rdbuf(captured.rdbuf());
  void* leaked = nullptr;
  {
    PhaseScope phase("G_ema");
    leaked = allocate(cpu, 10);
  }
  std::cerr.rdbuf(old);
  CHECK(contains(captured.str(), "PhaseScope G_ema on cpu: 1 allocation(s) (256 B)"));
  deallocate(cpu, leaked);
}

TEST_CASE("memory: out of memory with growth off names the live set") {
  Fresh fresh;
  const ArenaOptions saved = arena_options(cpu);
  configure(cpu, options_with(64 * KiB, /*grow=*/false));
  empty_cache(cpu);  // drop the old chunks so the new size applies
  Profiler::enable(true);

  void* a = nullptr;
  {
    ModuleScope g("G");
    OpScope op("big_op");
    a = allocate(cpu, 40 * KiB);
    annotate(a, "[10,1024]", "f32");
  }
  std::string message = error_of([] {
    OpScope op("second_op");
    allocate(cpu, 40 * KiB);
  });
  CHECK(contains(message, "out of memory on cpu: cannot allocate 40.0 KiB (40960 bytes) of "
                          "activation in the persistent region (op second_op"));
  CHECK(contains(message, "Live set on cpu: 40.0 KiB in 1 allocation(s)"));
  CHECK(contains(message,
                 "| 40960 | 40.0 KiB | activation | big_op | G | fwd | - | [10,1024] | f32 |"));
  CHECK(persistent_stats(cpu).reserved == 64 * KiB);
  // The failure is marked in the trace.
  CHECK(contains(Profiler::chrome_trace_json(), "\"out of memory cpu\""));

  deallocate(cpu, a);
  configure(cpu, saved);
  empty_cache(cpu);
  CHECK(stats(cpu).reserved == 0);
}

TEST_CASE("memory: a second thread allocates safely and outside the training phase") {
  Fresh fresh;
  PhaseScope phase("G_main");
  const int64_t persistent_before = persistent_stats(cpu).live;
  std::vector<void*> loader_blocks;
  std::thread loader([&] {
    for (int i = 0; i < 100; ++i) loader_blocks.push_back(allocate(cpu, 1000));
  });
  loader.join();
  // The loader thread has no phase open, so its activations are persistent.
  CHECK(persistent_stats(cpu).live == persistent_before + 100 * 1024);
  CHECK(phase_stats(cpu).live == 0);
  for (void* p : loader_blocks) deallocate(cpu, p);  // freed from another thread: fine

  // Both threads hammer the allocator at once.
  auto churn = [] {
    std::vector<void*> blocks;
    for (int i = 0; i < 2000; ++i) {
      blocks.push_back(allocate(cpu, size_t(i % 7) * 300, Kind::buffer));
      if (i % 3 == 2) {
        deallocate(cpu, blocks.front());
        blocks.erase(blocks.begin());
      }
    }
    for (void* p : blocks) deallocate(cpu, p);
  };
  const Stats before = stats(cpu);
  std::thread other(churn);
  churn();
  other.join();
  CHECK(stats(cpu).live == before.live);
  CHECK(stats(cpu).num_allocs == before.num_allocs + 4000);
  CHECK(stats(cpu).num_frees == before.num_frees + 4000);
  phase.close();
}

// ---------------------------------------------------------------- profiler

TEST_CASE("profiler: nested op calls, exact allocated / freed / retained / transient") {
  Fresh fresh;
  Profiler::enable(true);
  void* before = allocate(cpu, 512);  // alive before the op, freed inside it
  void* result = nullptr;
  {
    OpScope outer("outer", "[4,4]");
    void* a = allocate(cpu, 1000);  // 1024, a temporary of outer
    {
      OpScope inner("inner");
      void* workspace = allocate(cpu, 4096, Kind::workspace);
      void* out = allocate(cpu, 300);  // 512, inner's output
      deallocate(cpu, workspace);
      result = out;
    }
    deallocate(cpu, a);
    deallocate(cpu, before);
  }
  std::vector<OpRecord> records = Profiler::records();
  REQUIRE(records.size() == 2);
  const OpRecord& outer = records[0];
  const OpRecord& inner = records[1];
  CHECK(outer.op == "outer");
  CHECK(outer.shapes == "[4,4]");
  CHECK(inner.parent == outer.id);
  CHECK(outer.parent == 0);

  // inner: +4096 +512 -4096 -> high-water 4608 above entry, 512 left.
  CHECK(inner.allocated == 4608);
  CHECK(inner.freed == 4096);
  CHECK(inner.retained == 512);
  CHECK(inner.transient == 4096);
  // outer includes inner: +1024 (+4096 +512 -4096) -1024 -512 -> high-water 5632.
  CHECK(outer.allocated == 1024 + 4608);
  CHECK(outer.freed == 4096 + 1024 + 512);
  CHECK(outer.retained == 512);
  CHECK(outer.transient == 5632 - 512);
  CHECK(outer.device == cpu);
  // The peak (6144 bytes) came with inner's second allocation. at_peak is not inclusive: each
  // block counts for the innermost call that made it; `before` belongs to no call.
  CHECK(Profiler::peak_bytes(cpu) == 512 + 1024 + 4096 + 512);
  CHECK(inner.at_peak == 4096 + 512);
  CHECK(outer.at_peak == 1024);
  CHECK(inner.start_us >= outer.start_us);
  CHECK(inner.end_us <= outer.end_us);
  deallocate(cpu, result);
}

TEST_CASE("profiler: a call that frees its input before allocating has no transient bytes") {
  Fresh fresh;
  Profiler::enable(true);
  void* input = allocate(cpu, 1024);
  void* out = nullptr;
  {
    OpScope op("inplace_like");
    deallocate(cpu, input);
    out = allocate(cpu, 1024);
  }
  const OpRecord r = Profiler::records().at(0);
  CHECK(r.allocated == 1024);
  CHECK(r.freed == 1024);
  CHECK(r.retained == 1024);
  CHECK(r.transient == 0);  // live bytes never rose above the entry level
  deallocate(cpu, out);
}

TEST_CASE("profiler: a disabled profiler records nothing") {
  Fresh fresh;
  void* p = nullptr;
  {
    OpScope op("invisible");
    p = allocate(cpu, 100);
  }
  CHECK(Profiler::records().empty());
  CHECK(Profiler::peak_bytes(cpu) == 0);
  deallocate(cpu, p);
}

TEST_CASE("profiler: pass, module and phase of each op call") {
  Fresh fresh;
  Profiler::enable(true);
  {
    PhaseScope phase("D_r1");
    ModuleScope d("D");
    {
      ModuleScope b("b16");
      CHECK(current_module_path() == "D.b16");
      OpScope op("conv2d");
    }
    CHECK(current_module_path() == "D");
    {
      PassScope bwd(next_backward_pass(current_pass()));
      OpScope op("conv2d_backward");
      {
        PassScope bwd2(next_backward_pass(current_pass()));
        OpScope op2("conv2d_backward_backward");
      }
      CHECK(current_pass() == Pass::bwd);
    }
    CHECK(current_pass() == Pass::fwd);
    {
      PassScope optim(Pass::optim);
      OpScope op("adamw");
    }
  }
  { OpScope op("after"); }
  std::vector<OpRecord> records = Profiler::records();
  REQUIRE(records.size() == 5);
  CHECK(records[0].pass == Pass::fwd);
  CHECK(records[0].module == "D.b16");
  CHECK(records[0].phase == "D_r1");
  CHECK(records[1].pass == Pass::bwd);
  CHECK(records[1].module == "D");
  CHECK(records[2].pass == Pass::bwd2);
  CHECK(records[2].parent == records[1].id);
  CHECK(records[3].pass == Pass::optim);
  CHECK(records[4].phase.empty());
  CHECK(records[4].module.empty());
}

TEST_CASE("profiler: saved tensors") {
  Fresh fresh;
  Profiler::enable(true);
  void* x = nullptr;
  {
    OpScope op("conv2d");
    x = allocate(cpu, 1000);
    annotate(x, "[250]", "f32");
    mark_saved(x, 1000, "Conv2dBackward");  // counted as the 1024 bytes the block holds
  }
  const OpRecord r = Profiler::records().at(0);
  CHECK(r.saved == 1024);
  std::vector<LiveEntry> live = Profiler::live_set_at_peak();
  REQUIRE(live.size() == 1);
  CHECK(live[0].saved_by == "Conv2dBackward");
  CHECK(contains(Profiler::live_set_markdown(), "saved by Conv2dBackward"));
  deallocate(cpu, x);
}

TEST_CASE("profiler: the live set at the peak") {
  Fresh fresh;
  Profiler::enable(true);
  void* a = nullptr;
  void* b = nullptr;
  void* c = nullptr;
  {
    OpScope op("A");
    a = allocate(cpu, 1024);
  }
  {
    ModuleScope g("G");
    OpScope op("B");
    b = allocate(cpu, 2048, Kind::param);  // live 3072: the peak
  }
  deallocate(cpu, a);  // alive at the peak, freed after it: still in the snapshot
  {
    OpScope op("C");
    c = allocate(cpu, 512);  // live 2560: below the peak, not in the snapshot
  }
  CHECK(Profiler::peak_bytes(cpu) == 3072);
  auto check_snapshot = [] {
    std::vector<LiveEntry> live = Profiler::live_set_at_peak();
    REQUIRE(live.size() == 2);
    CHECK(live[0].op == "B");  // largest first
    CHECK(live[0].bytes == 2048);
    CHECK(live[0].module == "G");
    CHECK(live[0].kind == Kind::param);
    CHECK(live[1].op == "A");
    CHECK(live[1].bytes == 1024);
    CHECK(live[1].device == cpu);
  };
  check_snapshot();
  std::vector<OpRecord> records = Profiler::records();
  CHECK(find_record(records, "A").at_peak == 1024);
  CHECK(find_record(records, "B").at_peak == 2048);
  CHECK(find_record(records, "C").at_peak == 0);

  // Stopping the profiler freezes the snapshot: later frees do not change it.
  Profiler::enable(false);
  deallocate(cpu, b);
  check_snapshot();

  // A new, higher peak replaces it.
  Profiler::enable(true);
  void* d = nullptr;
  {
    OpScope op("D");
    d = allocate(cpu, 8192);  // live 512 + 8192
  }
  CHECK(Profiler::peak_bytes(cpu) == 8704);
  std::vector<LiveEntry> live = Profiler::live_set_at_peak();
  REQUIRE(live.size() == 2);
  CHECK(live[0].op == "D");
  CHECK(live[1].op == "C");
  deallocate(cpu, c);
  deallocate(cpu, d);

  // reset() forgets the records and restarts the peak from what is alive now (nothing).
  Profiler::reset();
  CHECK(Profiler::records().empty());
  CHECK(Profiler::peak_bytes(cpu) == 0);
  CHECK(Profiler::live_set_at_peak().empty());
}

TEST_CASE("profiler: exports sorted by contribution to the peak") {
  Fresh fresh;
  Profiler::enable(true);
  {
    OpScope op("temp");  // 4 KiB that is gone long before the peak
    deallocate(cpu, allocate(cpu, 4096));
  }
  void* x = nullptr;
  void* y1 = nullptr;
  void* y2 = nullptr;
  {
    OpScope op("big", "[2048]");
    x = allocate(cpu, 8192);
  }
  {
    OpScope op("small");
    y1 = allocate(cpu, 1000);
  }
  {
    OpScope op("small");
    y2 = allocate(cpu, 1024);  // the peak: 8192 + 1024 + 1024
  }
  CHECK(Profiler::peak_bytes(cpu) == 10240);

  // CSV: a header, then one row per (op, module, pass), by bytes alive at the peak.
  std::istringstream csv(Profiler::table_csv());
  std::vector<std::string> lines;
  for (std::string line; std::getline(csv, line);) lines.push_back(line);
  REQUIRE(lines.size() == 4);
  CHECK(lines[0] ==
        "op,module,pass,calls,at_peak_bytes,allocated_bytes,freed_bytes,retained_bytes,"
        "transient_max_bytes,saved_bytes,time_us,phase");
  CHECK(lines[1].rfind("big,,fwd,1,8192,8192,0,8192,0,0,", 0) == 0);
  CHECK(lines[2].rfind("small,,fwd,2,2048,2048,0,2048,0,0,", 0) == 0);
  CHECK(lines[3].rfind("temp,,fwd,1,0,4096,4096,0,4096,0,", 0) == 0);

  std::string calls = Profiler::calls_csv();
  CHECK(contains(calls, ",big,,fwd,,cpu,[2048],8192,0,8192,0,0,8192,"));

  std::string md = Profiler::table_markdown();
  CHECK(contains(md, "Peak on cpu: 10.0 KiB (10240 bytes)."));
  CHECK(contains(md, "| big | - | fwd | 1 | 8.0 KiB | 8.0 KiB | 0 B | 8.0 KiB | 0 B | 0 B |"));
  CHECK(md.find("| big |") < md.find("| small |"));
  CHECK(md.find("| small |") < md.find("| temp |"));
  CHECK(contains(Profiler::table_markdown(1), "2 more row(s)"));

  std::string live = Profiler::live_set_markdown();
  CHECK(contains(live, "## cpu: peak 10.0 KiB (10240 bytes)"));
  CHECK(contains(live, "| 8192 | 8.0 KiB | activation | big |"));

  // Chrome trace: X per call, C counters for live and reserved, i at the peak.
  nlohmann::json trace = nlohmann::json::parse(Profiler::chrome_trace_json());
  int x_events = 0, c_events = 0, i_events = 0;
  for (const auto& e : trace["traceEvents"]) {
    std::string ph = e["ph"];
    if (ph == "X") {
      ++x_events;
      if (e["name"] == "big") {
        CHECK(e["args"]["allocated"] == 8192);
        CHECK(e["args"]["retained"] == 8192);
        CHECK(e["args"]["at_peak"] == 8192);
        CHECK(e["args"]["shapes"] == "[2048]");
        CHECK(e["args"]["pass"] == "fwd");
      }
    } else if (ph == "C") {
      ++c_events;
      CHECK(e["args"].contains("live"));
      CHECK(e["args"].contains("reserved"));
    } else if (ph == "i") {
      ++i_events;
      CHECK(e["name"] == "peak cpu");
      CHECK(e["args"]["bytes"] == 10240);
    }
  }
  CHECK(x_events == 4);
  CHECK(c_events == 5);  // 4 allocations and 1 free
  CHECK(i_events == 1);

  std::string summary = Profiler::step_summary(3);
  CHECK(summary.rfind("step 3 | peak 10.00 KiB (fwd 10.00) | reserved ", 0) == 0);
  CHECK(contains(summary, "| top: big 8.00 KiB"));

  std::filesystem::path dir =
      std::filesystem::temp_directory_path() / "engine_test_memory" / "profile";
  std::filesystem::remove_all(dir.parent_path());
  Profiler::write_all(dir.string());
  for (const char* name : {"table.md", "table.csv", "calls.csv", "live_set.md", "trace.json"})
    CHECK(std::filesystem::file_size(dir / name) > 0);
  std::ifstream written(dir / "table.csv");
  std::string header;
  std::getline(written, header);
  CHECK(header == lines[0]);
  std::filesystem::remove_all(dir.parent_path());

  deallocate(cpu, x);
  deallocate(cpu, y1);
  deallocate(cpu, y2);
}

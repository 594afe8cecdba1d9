// arena.h: the allocator behind both memory regions (DESIGN.md section 5).
//
// An Arena hands out blocks carved from a few large chunks that it reserves from the system
// (host memory or cudaMalloc) through a RawAllocator. Why not call malloc / cudaMalloc per
// tensor? cudaMalloc synchronises the device and costs microseconds to milliseconds, and a GAN
// step makes thousands of allocations; carving from chunks is a few map operations.
//
// The policy, kept deliberately simple so that it is easy to reason about:
//   - every block is a multiple of kAlignment (256 bytes) and starts on a 256-byte boundary;
//     zero-byte requests get a 256-byte block, so every allocation has a unique address;
//   - best fit: a request takes the smallest free block that is large enough (ties: lowest
//     address), and the block is split, the remainder staying free;
//   - the free list is ordered by address, and a freed block is merged (coalesced) with a free
//     left and right neighbour inside the same chunk. So when everything is freed, each chunk
//     is again one single free block: fragmentation cannot outlive the moment the arena empties,
//     and the same sequence of requests gets the same addresses again (what makes a phase
//     arena repeat its addresses step after step);
//   - when no free block fits, the arena reserves one more chunk of max(chunk_bytes, request)
//     bytes, unless growth is off or a reservation limit would be exceeded; then the request
//     fails (try_allocate returns nullptr, allocate throws with the table of live blocks).
//
// An Arena is not thread-safe: memory.cpp serialises all calls with one mutex.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tensor/memory/memory.h"

namespace engine::memory {

// Bytes reserved from the system by a group of arenas that share one limit (the persistent and
// phase regions of a device do, so ENGINE_ARENA_LIMIT_MB caps the device, not each region).
struct SharedReservation {
  size_t reserved = 0;
};

// Round a request up to a whole number of kAlignment units; zero becomes one unit.
size_t round_up_to_alignment(size_t bytes);

class Arena {
 public:
  // A contiguous range of addresses: a chunk, a free block or a used block.
  struct Block {
    uintptr_t address = 0;
    size_t bytes = 0;
    bool operator==(const Block&) const = default;
  };

  // `shared` (optional) is the reservation counter of the arena's group; limit_bytes in the
  // options is checked against it. Without it the arena counts only its own chunks.
  Arena(std::string name, RawAllocator raw, ArenaOptions options,
        SharedReservation* shared = nullptr);
  ~Arena();  // returns every chunk to the system, even if blocks are still in use
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // A block of round_up_to_alignment(bytes) bytes, or nullptr when the arena is full and
  // cannot grow (growth off, limit reached, or the raw allocator returned nullptr).
  void* try_allocate(size_t bytes);
  // Same, but throws engine::Error listing the live blocks when the arena is full.
  void* allocate(size_t bytes);
  // Frees a block returned by this arena; throws engine::Error for any other pointer.
  void deallocate(void* ptr);

  bool owns(const void* ptr) const;           // is ptr the start of a used block?
  size_t block_size(const void* ptr) const;   // aligned size of a used block (0 if unknown)

  // New options apply to future chunk reservations; existing chunks are kept.
  void set_options(const ArenaOptions& options) { options_ = options; }
  const ArenaOptions& options() const { return options_; }

  // Returns every chunk to the system. Only allowed when nothing is allocated (throws otherwise):
  // the way to shrink a device's footprint or to restart with new options.
  void release_chunks();

  // True when every chunk is exactly one free block: the state an arena must be in once
  // everything has been freed (coalescing guarantees it; PhaseScope checks it).
  bool is_pristine() const;

  const Stats& stats() const { return stats_; }
  void reset_peak() { stats_.peak = stats_.live; }
  const std::string& name() const { return name_; }

  // Inspection, in address order (tests, error messages, docs).
  std::vector<Block> chunks() const;
  std::vector<Block> free_blocks() const;
  std::vector<Block> used_blocks() const;
  size_t largest_free_block() const;

  // "arena 'cpu phase': live 1.0 KiB, reserved 64.0 KiB in 1 chunk(s), largest free 63.0 KiB"
  std::string describe() const;

 private:
  bool grow(size_t rounded);  // reserve one more chunk able to hold `rounded` bytes
  void insert_free(uintptr_t address, size_t bytes);
  void erase_free(std::map<uintptr_t, size_t>::iterator it);
  // The chunk that contains `address` (an iterator into chunks_).
  std::map<uintptr_t, size_t>::const_iterator chunk_of(uintptr_t address) const;
  size_t group_reserved() const { return shared_ ? shared_->reserved : size_t(stats_.reserved); }

  std::string name_;
  RawAllocator raw_;
  ArenaOptions options_;
  SharedReservation* shared_ = nullptr;

  std::map<uintptr_t, size_t> chunks_;                  // base address -> bytes
  std::map<uintptr_t, size_t> free_by_address_;        // the address-ordered free list
  std::set<std::pair<size_t, uintptr_t>> free_by_size_; // same blocks, for best fit
  std::unordered_map<uintptr_t, size_t> used_;          // address -> bytes of used blocks
  Stats stats_;
};

}  // namespace engine::memory

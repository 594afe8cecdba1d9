// arena.cpp: best fit over an address-ordered, coalescing free list (see arena.h for the policy).
//
// Data structures: the free blocks are kept twice, in `free_by_address_` (address -> size: finds
// the neighbours of a freed block in O(log n), which is what coalescing needs) and in
// `free_by_size_` ((size, address) pairs: lower_bound({n, 0}) is the best fit in O(log n), ties
// broken by the lowest address). Both always hold exactly the same blocks.
#include "tensor/memory/arena.h"

#include <algorithm>

#include <fmt/format.h>

#include "tensor/error.h"

namespace engine::memory {

size_t round_up_to_alignment(size_t bytes) {
  if (bytes == 0) return kAlignment;  // a zero-byte tensor still gets a unique address
  return (bytes + kAlignment - 1) / kAlignment * kAlignment;
}

Arena::Arena(std::string name, RawAllocator raw, ArenaOptions options, SharedReservation* shared)
    : name_(std::move(name)), raw_(raw), options_(options), shared_(shared) {
  ENGINE_CHECK(raw_.reserve && raw_.release, "arena '{}': raw allocator is missing", name_);
}

Arena::~Arena() {
  for (const auto& [base, bytes] : chunks_) raw_.release(reinterpret_cast<void*>(base), bytes);
  if (shared_) shared_->reserved -= size_t(stats_.reserved);
}

void Arena::insert_free(uintptr_t address, size_t bytes) {
  free_by_address_.emplace(address, bytes);
  free_by_size_.emplace(bytes, address);
}

void Arena::erase_free(std::map<uintptr_t, size_t>::iterator it) {
  free_by_size_.erase({it->second, it->first});
  free_by_address_.erase(it);
}

std::map<uintptr_t, size_t>::const_iterator Arena::chunk_of(uintptr_t address) const {
  // The chunk with the greatest base <= address.
  auto it = chunks_.upper_bound(address);
  if (it == chunks_.begin()) return chunks_.end();
  --it;
  return address < it->first + it->second ? it : chunks_.end();
}

bool Arena::grow(size_t rounded) {
  if (!chunks_.empty() && !options_.grow) return false;  // the first chunk is always allowed
  size_t chunk = std::max(round_up_to_alignment(options_.chunk_bytes), rounded);
  if (options_.limit_bytes != 0) {
    // Near the limit, take what is left rather than a full chunk, as long as the request fits.
    size_t left = options_.limit_bytes > group_reserved() ? options_.limit_bytes - group_reserved()
                                                          : 0;
    left = left / kAlignment * kAlignment;
    if (chunk > left) chunk = left;
    if (chunk < rounded) return false;
  }
  void* base = raw_.reserve(chunk);
  if (base == nullptr) return false;
  auto address = reinterpret_cast<uintptr_t>(base);
  ENGINE_CHECK(address % kAlignment == 0,
               "arena '{}': raw allocator returned {} which is not {}-byte aligned", name_, base,
               kAlignment);
  chunks_.emplace(address, chunk);
  insert_free(address, chunk);
  stats_.reserved += int64_t(chunk);
  if (shared_) shared_->reserved += chunk;
  return true;
}

void* Arena::try_allocate(size_t bytes) {
  size_t rounded = round_up_to_alignment(bytes);
  auto fit = free_by_size_.lower_bound({rounded, 0});
  if (fit == free_by_size_.end()) {
    if (!grow(rounded)) return nullptr;
    fit = free_by_size_.lower_bound({rounded, 0});
  }
  auto [block_bytes, address] = *fit;
  erase_free(free_by_address_.find(address));
  // Split: the request takes the low end, the remainder stays free.
  if (block_bytes > rounded) insert_free(address + rounded, block_bytes - rounded);
  used_.emplace(address, rounded);

  stats_.live += int64_t(rounded);
  stats_.peak = std::max(stats_.peak, stats_.live);
  stats_.num_allocs += 1;
  return reinterpret_cast<void*>(address);
}

void* Arena::allocate(size_t bytes) {
  void* ptr = try_allocate(bytes);
  if (ptr != nullptr) return ptr;
  std::string table = "| address | bytes |\n|---|---|\n";
  for (const Block& b : used_blocks()) table += fmt::format("| {:#x} | {} |\n", b.address, b.bytes);
  throw Error(fmt::format("arena '{}': cannot allocate {} ({} bytes): {}\nlive blocks:\n{}", name_,
                          format_bytes(int64_t(round_up_to_alignment(bytes))),
                          round_up_to_alignment(bytes), describe(), table));
}

void Arena::deallocate(void* ptr) {
  auto address = reinterpret_cast<uintptr_t>(ptr);
  auto used = used_.find(address);
  ENGINE_CHECK(used != used_.end(), "arena '{}': deallocate of {} which it did not allocate", name_,
               ptr);
  size_t bytes = used->second;
  used_.erase(used);
  stats_.live -= int64_t(bytes);
  stats_.num_frees += 1;

  // Coalesce with the free neighbours, but never across a chunk boundary: two chunks that the
  // system happened to place next to each other are still released separately.
  auto chunk = chunk_of(address);
  uintptr_t chunk_begin = chunk->first, chunk_end = chunk->first + chunk->second;
  uintptr_t begin = address, end = address + bytes;

  auto right = free_by_address_.find(end);
  if (right != free_by_address_.end() && end < chunk_end) {
    end += right->second;
    erase_free(right);
  }
  auto left = free_by_address_.lower_bound(begin);
  if (left != free_by_address_.begin()) {
    --left;
    if (left->first >= chunk_begin && left->first + left->second == begin) {
      begin = left->first;
      erase_free(left);
    }
  }
  insert_free(begin, end - begin);
}

bool Arena::owns(const void* ptr) const {
  return used_.count(reinterpret_cast<uintptr_t>(ptr)) != 0;
}

size_t Arena::block_size(const void* ptr) const {
  auto it = used_.find(reinterpret_cast<uintptr_t>(ptr));
  return it == used_.end() ? 0 : it->second;
}

void Arena::release_chunks() {
  ENGINE_CHECK(used_.empty(), "arena '{}': cannot release its chunks while {} block(s) are in use",
               name_, used_.size());
  for (const auto& [base, bytes] : chunks_) raw_.release(reinterpret_cast<void*>(base), bytes);
  if (shared_) shared_->reserved -= size_t(stats_.reserved);
  chunks_.clear();
  free_by_address_.clear();
  free_by_size_.clear();
  stats_.reserved = 0;
}

bool Arena::is_pristine() const {
  if (!used_.empty() || free_by_address_.size() != chunks_.size()) return false;
  // Both maps are address-ordered: pair them up.
  auto chunk = chunks_.begin();
  for (const auto& [address, bytes] : free_by_address_) {
    if (address != chunk->first || bytes != chunk->second) return false;
    ++chunk;
  }
  return true;
}

std::vector<Arena::Block> Arena::chunks() const {
  std::vector<Block> out;
  for (const auto& [address, bytes] : chunks_) out.push_back({address, bytes});
  return out;
}

std::vector<Arena::Block> Arena::free_blocks() const {
  std::vector<Block> out;
  for (const auto& [address, bytes] : free_by_address_) out.push_back({address, bytes});
  return out;
}

std::vector<Arena::Block> Arena::used_blocks() const {
  std::vector<Block> out;
  for (const auto& [address, bytes] : used_) out.push_back({address, bytes});
  std::sort(out.begin(), out.end(),
            [](const Block& a, const Block& b) { return a.address < b.address; });
  return out;
}

size_t Arena::largest_free_block() const {
  return free_by_size_.empty() ? 0 : free_by_size_.rbegin()->first;
}

std::string Arena::describe() const {
  std::string limit = options_.limit_bytes ? format_bytes(int64_t(options_.limit_bytes)) : "none";
  return fmt::format(
      "arena '{}': live {} in {} block(s), reserved {} in {} chunk(s), largest free block {}, "
      "chunk size {}, grow {}, limit {}",
      name_, format_bytes(stats_.live), used_.size(), format_bytes(stats_.reserved),
      chunks_.size(), format_bytes(int64_t(largest_free_block())),
      format_bytes(int64_t(options_.chunk_bytes)), options_.grow ? "on" : "off", limit);
}

}  // namespace engine::memory

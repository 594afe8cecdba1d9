// data_parallel.h: data parallelism over a ParameterStore's flat buffers (DESIGN.md section 10;
// docs/distributed-notes.md section 3).
//
//   start:       broadcast_parameters()    rank 0's flat parameters (and buffers) to every rank
//   every phase: allreduce_gradients()     flat gradient buffer summed over ranks in buckets
//                                           (reverse registration order), divided by the world size
//   checkpoint:  check_consistency()       ranks agree on the parameters (a checksum allgather);
//                                           a mismatch is an engine::Error naming the first
//                                           differing parameter
//   w_avg etc.:  average_buffer(t)          per-rank state that must agree is averaged
// With LocalComm every call is a no-op, so the trainer always goes through this class.
// Expert-parallel parameters (experts sharded over an EP group) are excluded from the plain
// allreduce; dist/expert_parallel.h registers them with shard_range() so that they are reduced
// over the expert-data-parallel group only (and still divided by the full world size).
//
// Buckets: the plan is made once (and again after shard_range): walking the parameters in
// reverse registration order (the order backward produces their gradients), adjacent parameters
// with the same reducer are merged while the bucket stays within bucket_bytes; a parameter larger
// than that is a bucket of its own. Buckets are contiguous ranges of the flat gradient buffer, so
// each is reduced in place without packing. Every rank makes the same plan (it depends only on
// the module tree), so the collectives match in number, order and size.
//
// Deterministic mode (set_deterministic(true), or AURORA_DETERMINISTIC_REDUCE=1): each bucket is
// allgathered and the rank copies are summed in rank order as a balanced pairwise tree
// ((g0 + g1) + (g2 + g3)) instead of MPI_Allreduce, whose summation order depends on the rank
// count and the algorithm. With end_micro_batch() after each micro-batch, a rank's own gradient is
// the same pairwise tree over its micro-batches, so for power-of-two micro-batch and rank counts
// the whole sum is one fixed tree over the global micro-batches in global order: the reduced
// gradient is bit-identical for every rank count (docs/distributed.md, "Rank-count invariance").
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "dist/comm.h"
#include "nn/module.h"

namespace engine::dist {

class DataParallel {
 public:
  DataParallel(Comm& comm, nn::ParameterStore& store, nn::Module& root, int64_t bucket_bytes = 16 << 20);
  void broadcast_parameters();
  void allreduce_gradients();
  void check_consistency();
  void average_buffer(Tensor& t);
  Comm& comm() { return comm_; }

  // ---- Additions to the first contract (all optional) ----
  void set_deterministic(bool on) { deterministic_ = on; }
  bool deterministic() const { return deterministic_; }
  // Deterministic mode: call after each micro-batch's backward (the last one included). The
  // gradient buffer is moved into a pairwise-tree accumulator and zeroed; allreduce_gradients()
  // takes the tree's sum. A no-op otherwise (gradients simply accumulate in the flat buffer).
  void end_micro_batch();
  // Parameters inside the flat range [offset, offset + numel) are reduced over `group` (summed,
  // then divided by the WORLD size: distributed-notes.md section 2.4) and checked for consistency
  // within `group` only. group == nullptr: not reduced and not checked (experts this rank does
  // not own; their gradient is zeroed). Ranges are whole parameters. Rebuilds the bucket plan.
  void shard_range(int64_t offset, int64_t numel, Comm* group);
  // The plan, for tests and logs: buckets in the order they are reduced.
  struct Bucket {
    int64_t offset = 0, numel = 0;
    Comm* group = nullptr;        // the communicator that reduces it
    std::string first, last;      // first and last parameter (registration order)
  };
  const std::vector<Bucket>& buckets() const { return buckets_; }

 private:
  struct Rule {
    int64_t offset, numel;
    Comm* group;
  };
  const Rule* rule_for(int64_t offset, int64_t numel) const;
  void plan();
  void reduce(Tensor& t, Comm& group);  // sum over `group`, in place (ordered in deterministic mode)

  Comm& comm_;
  nn::ParameterStore& store_;
  nn::Module& root_;
  int64_t bucket_bytes_;
  bool deterministic_ = false;
  std::vector<Rule> rules_;
  std::vector<Bucket> buckets_;
  std::vector<std::pair<int, Tensor>> tree_;  // (level, partial sum) of the micro-batch tree
};

}  // namespace engine::dist

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
// allreduce; dist/expert_parallel.h reduces them over the expert-data-parallel group.
#pragma once
#include <cstdint>

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

 private:
  Comm& comm_;
  nn::ParameterStore& store_;
  nn::Module& root_;
  int64_t bucket_bytes_;
};

}  // namespace engine::dist

// comm.h: the communicator every distributed feature goes through (DESIGN.md section 10;
// docs/distributed-notes.md).
//
// Implementations: LocalComm (one process: every collective is the identity; the default),
// MpiComm (host memory, OpenMPI; dist/mpi_comm.h) and NcclComm (device memory; dist/nccl_comm.h).
// Collectives take contiguous tensors on the communicator's device and work in place where that
// makes sense. Every rank must call every collective in the same order (also a rank with nothing
// to send: it passes empty counts).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace engine::dist {

enum class ReduceOp { sum, max, min };

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;  // "local", "mpi", "nccl"

  virtual void allreduce(Tensor& t, ReduceOp op = ReduceOp::sum) = 0;  // in place
  virtual void broadcast(Tensor& t, int root = 0) = 0;                  // in place
  // out = cat over ranks (rank order) of `in` along dim 0; all ranks pass the same shape.
  virtual Tensor allgather(const Tensor& in) = 0;
  // Rows of `in` ([N, ...], contiguous) are sent in rank order: send_counts[r] rows to rank r;
  // returns the received rows ([sum recv_counts, ...]) in rank order.
  virtual Tensor alltoallv(const Tensor& in, const std::vector<int64_t>& send_counts,
                           const std::vector<int64_t>& recv_counts) = 0;
  virtual void barrier() = 0;
  // End every rank of the job after printing `message` (MPI_Abort for MPI). Never returns.
  [[noreturn]] virtual void abort(const std::string& message, int exit_code = 1) = 0;

  bool is_root() const { return rank() == 0; }
};

// One process.
std::unique_ptr<Comm> make_local_comm();

// The communicator of this process: MpiComm when started by mpirun (OMPI_COMM_WORLD_SIZE is set)
// and the build has MPI, else LocalComm.
std::unique_ptr<Comm> init_from_environment(int* argc, char*** argv);

}  // namespace engine::dist

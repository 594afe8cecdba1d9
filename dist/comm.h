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

  // A sub-communicator of the ranks that pass the same `color`, ordered by `key` (then by rank):
  // MPI_Comm_split. Every rank of this communicator must call it. The expert-parallel groups
  // (dist/expert_parallel.h) are made this way. The default serves one-rank communicators.
  virtual std::unique_ptr<Comm> split(int color, int key);

  // Count exchange for alltoallv: rank r passes send[p] for every peer p and gets recv[p] = what
  // peer p passed for r. Built on alltoallv of one i64 per peer (every rank joins, also with zeros).
  std::vector<int64_t> exchange_counts(const std::vector<int64_t>& send);
};

// One process.
std::unique_ptr<Comm> make_local_comm();

// The communicator of this process: MpiComm when started by mpirun (OMPI_COMM_WORLD_SIZE or
// PMI_SIZE/PMIX_RANK is set) and the build has MPI, else LocalComm. AURORA_COMM=local forces
// LocalComm, AURORA_COMM=mpi forces MpiComm (a singleton MPI job without mpirun). Collectives of
// an MpiComm are watched by a timeout (AURORA_COLLECTIVE_TIMEOUT_S, dist/watchdog.h). With
// several ranks on CUDA the trainer wraps it in a HostStagedComm (dist/host_staged_comm.h), which
// stages device tensors through host memory; NcclComm (dist/nccl_comm.h, bootstrapped by MPI) is
// not used by the trainer yet.
std::unique_ptr<Comm> init_from_environment(int* argc, char*** argv);

}  // namespace engine::dist

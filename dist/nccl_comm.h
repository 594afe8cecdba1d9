// nccl_comm.h: NcclComm, the communicator over NCCL on device memory (DESIGN.md section 10;
// docs/distributed-notes.md sections 0, 2.2 and 5; docs/distributed.md).
//
// One rank per GPU. The NCCL communicator is created from a unique id that rank 0 makes and the
// bootstrap communicator (an MpiComm) broadcasts; the bootstrap also serves abort(), which logs,
// aborts the NCCL communicator and then MPI_Aborts the job.
// Collectives run on the device's compute stream (tensor/cuda/device.h: the engine's one stream
// per device), so they are ordered with the kernels that produce and consume their buffers and
// with the arena's reuse of freed blocks; they return before the GPU has finished (allgather and
// alltoallv return tensors that later kernels read in stream order). alltoallv is grouped
// ncclSend/ncclRecv (NCCL has no alltoallv); count vectors live on the host.
// Two ranks on one GPU are refused by NCCL ("Duplicate GPU detected"): on a one-GPU machine run
// NCCL with -np 1 and test multi-rank logic with MpiComm.
// Built only with the CUDA backend and NCCL (ENGINE_WITH_CUDA and ENGINE_WITH_NCCL); otherwise
// make_nccl_comm is an engine::Error saying so.
#pragma once
#include <memory>

#include "dist/comm.h"
#include "tensor/device.h"

namespace engine::dist {

bool nccl_available();

// Collective over `bootstrap` (every rank calls it). `device` is this rank's GPU (usually
// cuda(local rank)); `bootstrap` must outlive the returned communicator.
std::unique_ptr<Comm> make_nccl_comm(Comm& bootstrap, Device device);

}  // namespace engine::dist

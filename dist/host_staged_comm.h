// host_staged_comm.h: a communicator for device tensors over a host communicator (DESIGN.md
// section 10; docs/distributed.md "GPU ranks").
//
// Debian's OpenMPI is not CUDA-aware (dist/mpi_comm.h): an MpiComm refuses device tensors. The
// trainer on CUDA with more than one rank therefore wraps its MpiComm in a HostStagedComm: a
// collective on a CUDA tensor copies it to the host (Tensor::to), runs the wrapped collective on
// the host copy, and copies the result back onto the tensor's device. In-place collectives
// (allreduce, broadcast) write back into the same device tensor, views included; allgather and
// alltoallv return a tensor on the input's device. Host tensors go straight to the wrapped
// communicator. The reduction itself is the wrapped communicator's, on the same values, so the
// result has the same bits as the CPU path (the copies are exact).
//
// Cost: two PCIe transfers per collective (device -> host -> device) on top of the host
// collective, and the device stream is synchronised by the device -> host copy. NcclComm
// (dist/nccl_comm.h) moves device memory directly and is the fast path on real multi-GPU
// machines; this one needs nothing but MPI and works with any number of ranks per GPU (also the
// emulated device, one per process).
#pragma once
#include <memory>

#include "dist/comm.h"

namespace engine::dist {

// A communicator over `inner` that accepts tensors on any device. `inner` must outlive it.
// split() returns a HostStagedComm that owns the wrapped split.
std::unique_ptr<Comm> make_host_staged_comm(Comm& inner);
// The same, owning `inner`.
std::unique_ptr<Comm> make_host_staged_comm(std::unique_ptr<Comm> inner);

}  // namespace engine::dist

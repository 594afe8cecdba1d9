// mpi_comm.h: MpiComm, the communicator over MPI on host memory (DESIGN.md section 10;
// docs/distributed-notes.md sections 0 and 4; docs/distributed.md).
//
// The CPU backend of data and expert parallelism, the test backend (mpirun --oversubscribe on a
// laptop), and the bootstrap of NcclComm (the NCCL unique id travels by MpiComm::broadcast).
// Debian's OpenMPI is not CUDA-aware: every tensor given to an MpiComm must live on the host; a
// device tensor is an engine::Error, never a pointer handed to MPI.
//
// Failure behaviour (issue 6):
//   - MPI errors are returned, not fatal: they become engine::Error naming the collective and
//     MPI's error string, so the caller can log and abort() the job;
//   - abort(message) prints the message on stderr and calls MPI_Abort: every rank ends;
//   - a watchdog (dist/watchdog.h) ends the job when a collective stays open longer than
//     AURORA_COLLECTIVE_TIMEOUT_S (default 600 s), naming the rank, the collective and the time.
// The mpi.h header stays inside mpi_comm.cpp, so code above dist/ does not depend on MPI.
#pragma once
#include <memory>

#include "dist/comm.h"

namespace engine::dist {

// Whether this build has MPI (ENGINE_WITH_MPI).
bool mpi_available();

// Initialise MPI (MPI_Init_thread, once per process) and return the world communicator. The
// returned object finalises MPI when destroyed; sub-communicators (split) must be destroyed
// first. `timeout_s` < 0 reads AURORA_COLLECTIVE_TIMEOUT_S (default 600); 0 disables the watchdog.
// Without ENGINE_WITH_MPI this is an engine::Error.
std::unique_ptr<Comm> make_mpi_comm(int* argc, char*** argv, double timeout_s = -1);

}  // namespace engine::dist

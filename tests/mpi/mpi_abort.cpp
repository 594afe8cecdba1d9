// mpi_abort.cpp: a failing rank ends the whole job quickly with a clear message (issue 6).
// Not a self-checking program: ctest runs it under mpirun and checks the job's output for the
// message (PASS_REGULAR_EXPRESSION) within a short TIMEOUT (tests/mpi/CMakeLists.txt).
//   mpi_abort throw : the last rank throws an engine::Error (bad input on one rank) while the
//                     others wait in an allreduce; the top-level handler, written as the aurora
//                     CLI writes it, calls Comm::abort, which logs and MPI_Aborts every rank.
//   mpi_abort hang  : the last rank stops calling collectives (stuck, or took another branch);
//                     the others sit in an allreduce until the watchdog (AURORA_COLLECTIVE_TIMEOUT_S)
//                     reports rank, collective and seconds, and aborts the job.
// Without the abort the job would hang until ctest's TIMEOUT and the test would fail.
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "dist/mpi_comm.h"
#include "tensor/error.h"
#include "tensor/ops.h"

using namespace engine;

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "throw";
  auto comm = dist::make_mpi_comm(&argc, &argv);
  const int last = comm->size() - 1;
  try {
    Tensor x = ones({16});
    comm->allreduce(x);  // a healthy first step on every rank
    if (comm->rank() == last) {
      if (mode == "throw") ENGINE_CHECK(false, "mpi_abort: deliberate failure on rank {} (bad input)", last);
      std::this_thread::sleep_for(std::chrono::seconds(120));  // "hang": never reaches the collective
    }
    comm->allreduce(x);  // the other ranks wait here for the failed one
    std::printf("rank %d: the job was not ended\n", comm->rank());
  } catch (const std::exception& e) {
    comm->abort(std::string("aurora: error: [rank ") + std::to_string(comm->rank()) + "] " + e.what(), 1);
  }
  return 0;
}

// comm.cpp: LocalComm, the one-process communicator (dist/comm.h), and the environment switch.
#include "dist/comm.h"

#include <cstdio>
#include <cstdlib>

#include "tensor/ops.h"

namespace engine::dist {

namespace {

class LocalComm final : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "local"; }
  void allreduce(Tensor&, ReduceOp) override {}
  void broadcast(Tensor&, int root) override {
    ENGINE_CHECK(root == 0, "LocalComm::broadcast: root {} does not exist (1 rank)", root);
  }
  Tensor allgather(const Tensor& in) override { return in.contiguous(); }
  Tensor alltoallv(const Tensor& in, const std::vector<int64_t>& send_counts,
                   const std::vector<int64_t>& recv_counts) override {
    ENGINE_CHECK(send_counts.size() == 1 && recv_counts.size() == 1 && send_counts[0] == recv_counts[0] &&
                     send_counts[0] == (in.dim() ? in.size(0) : 0),
                 "LocalComm::alltoallv: with 1 rank the send and receive counts must both be the row count");
    return in.contiguous();
  }
  void barrier() override {}
  [[noreturn]] void abort(const std::string& message, int exit_code) override {
    std::fprintf(stderr, "%s\n", message.c_str());
    std::fflush(stderr);
    std::_Exit(exit_code);
  }
};

}  // namespace

std::unique_ptr<Comm> make_local_comm() { return std::make_unique<LocalComm>(); }

}  // namespace engine::dist

// Replaced by the MPI-aware version once dist/mpi_comm.cpp lands.
namespace engine::dist {
std::unique_ptr<Comm> init_from_environment(int*, char***) { return make_local_comm(); }
}  // namespace engine::dist

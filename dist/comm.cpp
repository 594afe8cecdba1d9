// comm.cpp: LocalComm, the one-process communicator (dist/comm.h), the Comm helpers (split for
// one rank, exchange_counts) and the environment switch (init_from_environment).
#include "dist/comm.h"

#include <cstdio>
#include <cstdlib>

#include "dist/mpi_comm.h"
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

std::unique_ptr<Comm> Comm::split(int color, int key) {
  (void)color;
  (void)key;
  ENGINE_CHECK(size() == 1, "Comm::split: the '{}' communicator of {} ranks does not implement split", name(), size());
  return make_local_comm();
}

std::vector<int64_t> Comm::exchange_counts(const std::vector<int64_t>& send) {
  const int n = size();
  ENGINE_CHECK(int(send.size()) == n, "Comm::exchange_counts: {} counts for {} ranks", send.size(), n);
  if (n == 1) return send;
  const Tensor t = from_vector_i64(send, {int64_t(n)});
  const Tensor r = alltoallv(t, std::vector<int64_t>(size_t(n), 1), std::vector<int64_t>(size_t(n), 1));
  const int64_t* p = r.data<int64_t>();
  return std::vector<int64_t>(p, p + n);
}

namespace {
bool env_set(const char* name) {
  const char* v = std::getenv(name);
  return v && *v;
}
}  // namespace

std::unique_ptr<Comm> init_from_environment(int* argc, char*** argv) {
  const char* forced = std::getenv("AURORA_COMM");
  const std::string mode = forced ? forced : "";
  ENGINE_CHECK(mode.empty() || mode == "local" || mode == "mpi",
               "AURORA_COMM='{}': expected 'local' or 'mpi'", mode);
  if (mode == "local") return make_local_comm();
  const bool under_launcher = env_set("OMPI_COMM_WORLD_SIZE") || env_set("PMI_SIZE") || env_set("PMIX_RANK");
  if (mode == "mpi" || under_launcher) {
    ENGINE_CHECK(mpi_available(),
                 "init_from_environment: started by mpirun (or AURORA_COMM=mpi) but this build has no MPI; "
                 "install libopenmpi-dev and reconfigure");
    return make_mpi_comm(argc, argv);
  }
  return make_local_comm();
}

}  // namespace engine::dist

// mpi_comm.cpp: MpiComm (dist/mpi_comm.h).
//
// Large buffers: MPI counts are `int`. allreduce and broadcast split a buffer into chunks of at
// most 2^30 elements; allgather and alltoallv count rows through a contiguous derived datatype of
// one row, so only the row count (never the byte count) has to fit an int.
#include "dist/mpi_comm.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "dist/watchdog.h"
#include "tensor/error.h"

#ifdef ENGINE_WITH_MPI
#include <mpi.h>
#endif

namespace engine::dist {

#ifndef ENGINE_WITH_MPI

bool mpi_available() { return false; }
std::unique_ptr<Comm> make_mpi_comm(int*, char***, double) {
  ENGINE_CHECK(false, "make_mpi_comm: this build has no MPI (configure found no MPI implementation; "
                      "install libopenmpi-dev and reconfigure)");
}

#else

bool mpi_available() { return true; }

namespace {

constexpr int64_t kMaxChunk = int64_t(1) << 30;

std::string mpi_error_string(int code) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, buf, &len);
  return std::string(buf, size_t(len));
}

#define MPI_CALL(what, call)                                                                   \
  do {                                                                                         \
    const int mpi_rc_ = (call);                                                                \
    ENGINE_CHECK(mpi_rc_ == MPI_SUCCESS, "MpiComm::{} on '{}' (rank {}): MPI error {}: {}", what, \
                 name_, rank_, mpi_rc_, mpi_error_string(mpi_rc_));                            \
  } while (0)

MPI_Datatype mpi_type(DType t, const char* op) {
  switch (t) {
    case DType::f32: return MPI_FLOAT;
    case DType::f64: return MPI_DOUBLE;
    case DType::i64: return MPI_INT64_T;
    case DType::i32: return MPI_INT32_T;
    case DType::u8:
    case DType::boolean: return MPI_UINT8_T;
    case DType::bf16:
    case DType::f16: return MPI_UINT16_T;  // moved as bits; reductions reject them below
  }
  ENGINE_CHECK(false, "MpiComm::{}: unsupported dtype {}", op, dtype_name(t));
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return MPI_SUM;
    case ReduceOp::max: return MPI_MAX;
    case ReduceOp::min: return MPI_MIN;
  }
  return MPI_SUM;
}

void check_host_contiguous(const Tensor& t, const char* op) {
  ENGINE_CHECK(t.defined(), "MpiComm::{}: undefined tensor", op);
  ENGINE_CHECK(t.device().is_cpu(),
               "MpiComm::{}: tensor on {} but MPI carries host memory only (this OpenMPI is not CUDA-aware; use "
               "NcclComm for device tensors or copy to the host)",
               op, t.device().str());
  ENGINE_CHECK(t.is_contiguous(), "MpiComm::{}: tensor {} must be contiguous", op, t.sizes().str());
}

// State shared by the world communicator and its splits: the watchdog and whether we own MPI.
struct MpiProcess {
  std::unique_ptr<CollectiveWatchdog> watchdog;
  bool finalize = false;
  ~MpiProcess() {
    watchdog.reset();  // stop the thread before MPI goes away
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalize && !finalized) MPI_Finalize();
  }
};

class MpiComm final : public Comm {
 public:
  MpiComm(MPI_Comm comm, bool owned, std::shared_ptr<MpiProcess> process, std::string name)
      : comm_(comm), owned_(owned), process_(std::move(process)), name_(std::move(name)) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  }
  ~MpiComm() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owned_ && !finalized) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "mpi"; }

  void allreduce(Tensor& t, ReduceOp op) override {
    check_host_contiguous(t, "allreduce");
    ENGINE_CHECK(t.dtype() != DType::bf16 && t.dtype() != DType::f16,
                 "MpiComm::allreduce: {} cannot be reduced by MPI; reduce an f32 copy", dtype_name(t.dtype()));
    const MPI_Datatype type = mpi_type(t.dtype(), "allreduce");
    auto* base = static_cast<char*>(t.raw_data());
    const int64_t n = t.numel();
    CollectiveWatchdog::Scope scope(watchdog(), "allreduce", name_.c_str(), int64_t(t.nbytes()));
    for (int64_t off = 0; off < n || (off == 0 && n == 0); off += kMaxChunk) {
      const int count = int(std::min(kMaxChunk, n - off));
      MPI_CALL("allreduce", MPI_Allreduce(MPI_IN_PLACE, base + off * int64_t(dtype_size(t.dtype())), count, type,
                                          mpi_op(op), comm_));
      if (n == 0) break;
    }
  }

  void broadcast(Tensor& t, int root) override {
    check_host_contiguous(t, "broadcast");
    ENGINE_CHECK(root >= 0 && root < size_, "MpiComm::broadcast: root {} outside [0, {})", root, size_);
    const MPI_Datatype type = mpi_type(t.dtype(), "broadcast");
    auto* base = static_cast<char*>(t.raw_data());
    const int64_t n = t.numel();
    CollectiveWatchdog::Scope scope(watchdog(), "broadcast", name_.c_str(), int64_t(t.nbytes()));
    for (int64_t off = 0; off < n || (off == 0 && n == 0); off += kMaxChunk) {
      const int count = int(std::min(kMaxChunk, n - off));
      MPI_CALL("broadcast", MPI_Bcast(base + off * int64_t(dtype_size(t.dtype())), count, type, root, comm_));
      if (n == 0) break;
    }
  }

  Tensor allgather(const Tensor& in_) override {
    const Tensor in = in_.defined() ? in_.contiguous() : in_;
    check_host_contiguous(in, "allgather");
    // Rows are elements for a 0-d tensor (out is [size]).
    Dims out_shape = in.dim() == 0 ? Dims{size_} : in.sizes();
    const int64_t rows = in.dim() == 0 ? 1 : in.size(0);
    out_shape[0] = rows * size_;
    Tensor out = empty(out_shape, TensorOptions{in.dtype(), in.device()});
    const int64_t row_elems = rows == 0 ? 0 : in.numel() / rows;
    CollectiveWatchdog::Scope scope(watchdog(), "allgather", name_.c_str(), int64_t(in.nbytes()));
    RowType rt(in.dtype(), row_elems, "allgather");
    ENGINE_CHECK(rows <= INT32_MAX, "MpiComm::allgather: {} rows exceed MPI's int count", rows);
    MPI_CALL("allgather", MPI_Allgather(in.raw_data(), rt.count(rows), rt.type, out.raw_data(), rt.count(rows),
                                        rt.type, comm_));
    return out;
  }

  Tensor alltoallv(const Tensor& in_, const std::vector<int64_t>& send_counts,
                   const std::vector<int64_t>& recv_counts) override {
    const Tensor in = in_.defined() ? in_.contiguous() : in_;
    check_host_contiguous(in, "alltoallv");
    ENGINE_CHECK(in.dim() >= 1, "MpiComm::alltoallv: expected rows [N, ...], got a 0-d tensor");
    ENGINE_CHECK(int(send_counts.size()) == size_ && int(recv_counts.size()) == size_,
                 "MpiComm::alltoallv: {} send and {} receive counts for {} ranks", send_counts.size(),
                 recv_counts.size(), size_);
    const size_t np = static_cast<size_t>(size_);
    std::vector<int> sc(np), sd(np), rc(np), rd(np);
    int64_t soff = 0, roff = 0;
    for (int p = 0; p < size_; ++p) {
      ENGINE_CHECK(send_counts[size_t(p)] >= 0 && recv_counts[size_t(p)] >= 0,
                   "MpiComm::alltoallv: negative count for rank {}", p);
      ENGINE_CHECK(soff + send_counts[size_t(p)] <= INT32_MAX && roff + recv_counts[size_t(p)] <= INT32_MAX,
                   "MpiComm::alltoallv: row offsets exceed MPI's int range");
      sc[size_t(p)] = int(send_counts[size_t(p)]);
      sd[size_t(p)] = int(soff);
      rc[size_t(p)] = int(recv_counts[size_t(p)]);
      rd[size_t(p)] = int(roff);
      soff += send_counts[size_t(p)];
      roff += recv_counts[size_t(p)];
    }
    ENGINE_CHECK(soff == in.size(0), "MpiComm::alltoallv: send counts sum to {} but the input has {} rows", soff,
                 in.size(0));
    Dims out_shape = in.sizes();
    out_shape[0] = roff;
    Tensor out = empty(out_shape, TensorOptions{in.dtype(), in.device()});
    const int64_t row_elems = in.size(0) > 0 ? in.numel() / in.size(0) : out.numel() / std::max<int64_t>(roff, 1);
    RowType rt(in.dtype(), row_elems, "alltoallv");
    CollectiveWatchdog::Scope scope(watchdog(), "alltoallv", name_.c_str(), int64_t(in.nbytes()));
    // A zero-row tensor may have no storage; MPI still needs a valid pointer.
    static char dummy[16];
    void* sbuf = in.numel() ? in.raw_data() : dummy;
    void* rbuf = out.numel() ? out.raw_data() : dummy;
    if (rt.scale != 1) {  // zero-width rows: counts are 0 whatever the row count
      for (auto* v : {&sc, &rc}) for (int& c : *v) c = 0;
    }
    MPI_CALL("alltoallv", MPI_Alltoallv(sbuf, sc.data(), sd.data(), rt.type, rbuf, rc.data(), rd.data(), rt.type,
                                        comm_));
    return out;
  }

  void barrier() override {
    CollectiveWatchdog::Scope scope(watchdog(), "barrier", name_.c_str(), 0);
    MPI_CALL("barrier", MPI_Barrier(comm_));
  }

  [[noreturn]] void abort(const std::string& message, int exit_code) override {
    std::fprintf(stderr, "%s\n", message.c_str());
    std::fflush(stderr);
    std::fflush(stdout);
    MPI_Abort(MPI_COMM_WORLD, exit_code == 0 ? 1 : exit_code);
    std::_Exit(exit_code == 0 ? 1 : exit_code);  // MPI_Abort does not return; be sure
  }

  std::unique_ptr<Comm> split(int color, int key) override {
    MPI_Comm sub = MPI_COMM_NULL;
    {
      CollectiveWatchdog::Scope scope(watchdog(), "split", name_.c_str(), 0);
      MPI_CALL("split", MPI_Comm_split(comm_, color, key, &sub));
    }
    return std::make_unique<MpiComm>(sub, true, process_, name_ + "/" + std::to_string(color));
  }

 private:
  // One row as a contiguous derived datatype, so counts are rows.
  struct RowType {
    MPI_Datatype type = MPI_DATATYPE_NULL;
    bool derived = false;
    int scale = 1;  // 0 when rows have no elements
    RowType(DType dt, int64_t row_elems, const char* op) {
      const MPI_Datatype base = mpi_type(dt, op);
      if (row_elems <= 0) {
        type = base;
        scale = 0;
        return;
      }
      ENGINE_CHECK(row_elems <= INT32_MAX, "MpiComm::{}: rows of {} elements exceed MPI's int count", op, row_elems);
      if (row_elems == 1) {
        type = base;
        return;
      }
      MPI_Type_contiguous(int(row_elems), base, &type);
      MPI_Type_commit(&type);
      derived = true;
    }
    ~RowType() {
      if (derived) MPI_Type_free(&type);
    }
    int count(int64_t rows) const { return scale ? int(rows) : 0; }
  };

  CollectiveWatchdog* watchdog() const { return process_->watchdog.get(); }

  MPI_Comm comm_;
  bool owned_;
  std::shared_ptr<MpiProcess> process_;
  std::string name_;
  int rank_ = 0, size_ = 1;
};

}  // namespace

std::unique_ptr<Comm> make_mpi_comm(int* argc, char*** argv, double timeout_s) {
  auto process = std::make_shared<MpiProcess>();
  int initialized = 0;
  MPI_Initialized(&initialized);
  int provided = MPI_THREAD_SINGLE;
  if (!initialized) {
    // THREAD_MULTIPLE so that the watchdog thread may call MPI_Abort while the main thread sits
    // in a collective; collectives themselves stay on one thread.
    const int rc = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
    ENGINE_CHECK(rc == MPI_SUCCESS, "make_mpi_comm: MPI_Init_thread failed: {}", mpi_error_string(rc));
    process->finalize = true;
  } else {
    MPI_Query_thread(&provided);
  }
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const double timeout = timeout_s < 0 ? collective_timeout_from_env() : timeout_s;
  const bool can_abort_from_thread = provided >= MPI_THREAD_MULTIPLE;
  process->watchdog = std::make_unique<CollectiveWatchdog>(rank, timeout, [can_abort_from_thread](const std::string& m) {
    std::fprintf(stderr, "%s\n", m.c_str());
    std::fflush(stderr);
    // Without THREAD_MULTIPLE, MPI may not be called from this thread: a non-zero exit without
    // MPI_Finalize makes mpirun end the other ranks just the same.
    if (can_abort_from_thread) MPI_Abort(MPI_COMM_WORLD, 3);
    std::_Exit(3);
  });
  // World is not freed (MPI_COMM_WORLD is predefined); this object owns the process state.
  return std::make_unique<MpiComm>(MPI_COMM_WORLD, false, std::move(process), "world");
}

#endif  // ENGINE_WITH_MPI

}  // namespace engine::dist

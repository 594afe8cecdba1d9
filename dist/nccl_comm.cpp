// nccl_comm.cpp: NcclComm (dist/nccl_comm.h). Compiled to a stub without CUDA and NCCL.
#include "dist/nccl_comm.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "tensor/error.h"

#if defined(ENGINE_WITH_CUDA) && defined(ENGINE_WITH_NCCL)
#include <nccl.h>

#include "tensor/cuda/device.h"
#endif

namespace engine::dist {

#if !(defined(ENGINE_WITH_CUDA) && defined(ENGINE_WITH_NCCL))

bool nccl_available() { return false; }
std::unique_ptr<Comm> make_nccl_comm(Comm&, Device device) {
  ENGINE_CHECK(false, "make_nccl_comm({}): this build has no NCCL (it needs the CUDA backend and nccl.h/libnccl "
                      "beside the toolkit); use MpiComm with host tensors",
               device.str());
}

#else

bool nccl_available() { return true; }

namespace {

#define NCCL_CALL(what, call)                                                                    \
  do {                                                                                           \
    const ncclResult_t nccl_rc_ = (call);                                                        \
    ENGINE_CHECK(nccl_rc_ == ncclSuccess, "NcclComm::{} (rank {} of {}, {}): NCCL error {}: {}", \
                 what, rank_, size_, device_.str(), int(nccl_rc_), ncclGetErrorString(nccl_rc_)); \
  } while (0)

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::f32: return ncclFloat32;
    case DType::f64: return ncclFloat64;
    case DType::bf16: return ncclBfloat16;
    case DType::f16: return ncclFloat16;
    case DType::i32: return ncclInt32;
    case DType::i64: return ncclInt64;
    case DType::u8:
    case DType::boolean: return ncclUint8;
  }
  return ncclUint8;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return ncclSum;
    case ReduceOp::max: return ncclMax;
    case ReduceOp::min: return ncclMin;
  }
  return ncclSum;
}

class NcclComm final : public Comm {
 public:
  NcclComm(ncclComm_t comm, Comm& bootstrap, Device device) : comm_(comm), bootstrap_(bootstrap), device_(device) {
    ncclCommUserRank(comm_, &rank_);
    ncclCommCount(comm_, &size_);
  }
  ~NcclComm() override {
    if (comm_) ncclCommDestroy(comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "nccl"; }

  void allreduce(Tensor& t, ReduceOp op) override {
    check(t, "allreduce");
    cuda::DeviceGuard guard(device_);
    NCCL_CALL("allreduce", ncclAllReduce(t.raw_data(), t.raw_data(), size_t(t.numel()), nccl_type(t.dtype()),
                                         nccl_op(op), comm_, stream()));
  }

  void broadcast(Tensor& t, int root) override {
    check(t, "broadcast");
    ENGINE_CHECK(root >= 0 && root < size_, "NcclComm::broadcast: root {} outside [0, {})", root, size_);
    cuda::DeviceGuard guard(device_);
    NCCL_CALL("broadcast", ncclBroadcast(t.raw_data(), t.raw_data(), size_t(t.numel()), nccl_type(t.dtype()), root,
                                         comm_, stream()));
  }

  Tensor allgather(const Tensor& in_) override {
    const Tensor in = in_.contiguous();
    check(in, "allgather");
    Dims shape = in.dim() == 0 ? Dims{size_} : in.sizes();
    if (in.dim() > 0) shape[0] = in.size(0) * size_;
    Tensor out = empty(shape, TensorOptions{in.dtype(), in.device()});
    cuda::DeviceGuard guard(device_);
    NCCL_CALL("allgather", ncclAllGather(in.raw_data(), out.raw_data(), size_t(in.numel()), nccl_type(in.dtype()),
                                         comm_, stream()));
    return out;
  }

  Tensor alltoallv(const Tensor& in_, const std::vector<int64_t>& send_counts,
                   const std::vector<int64_t>& recv_counts) override {
    const Tensor in = in_.contiguous();
    check(in, "alltoallv");
    ENGINE_CHECK(in.dim() >= 1, "NcclComm::alltoallv: expected rows [N, ...], got a 0-d tensor");
    ENGINE_CHECK(int(send_counts.size()) == size_ && int(recv_counts.size()) == size_,
                 "NcclComm::alltoallv: {} send and {} receive counts for {} ranks", send_counts.size(),
                 recv_counts.size(), size_);
    int64_t sent = 0, received = 0;
    for (int p = 0; p < size_; ++p) {
      ENGINE_CHECK(send_counts[size_t(p)] >= 0 && recv_counts[size_t(p)] >= 0,
                   "NcclComm::alltoallv: negative count for rank {}", p);
      sent += send_counts[size_t(p)];
      received += recv_counts[size_t(p)];
    }
    ENGINE_CHECK(sent == in.size(0), "NcclComm::alltoallv: send counts sum to {} but the input has {} rows", sent,
                 in.size(0));
    Dims shape = in.sizes();
    shape[0] = received;
    Tensor out = empty(shape, TensorOptions{in.dtype(), in.device()});
    int64_t row = 1;
    for (int d = 1; d < in.dim(); ++d) row *= in.size(d);
    const size_t row_bytes = size_t(row) * dtype_size(in.dtype());
    const auto* sbase = static_cast<const char*>(in.raw_data());
    auto* rbase = static_cast<char*>(out.raw_data());
    cuda::DeviceGuard guard(device_);
    // Grouped point-to-point: the all-to-all pattern of the NCCL user guide. Zero counts post
    // nothing for that peer, but every rank still enters and leaves the group.
    NCCL_CALL("alltoallv", ncclGroupStart());
    int64_t soff = 0, roff = 0;
    for (int p = 0; p < size_; ++p) {
      const int64_t sc = send_counts[size_t(p)], rc = recv_counts[size_t(p)];
      if (sc > 0)
        NCCL_CALL("alltoallv", ncclSend(sbase + size_t(soff) * row_bytes, size_t(sc) * row_bytes, ncclUint8, p, comm_,
                                        stream()));
      if (rc > 0)
        NCCL_CALL("alltoallv", ncclRecv(rbase + size_t(roff) * row_bytes, size_t(rc) * row_bytes, ncclUint8, p, comm_,
                                        stream()));
      soff += sc;
      roff += rc;
    }
    NCCL_CALL("alltoallv", ncclGroupEnd());
    return out;
  }

  void barrier() override {
    Tensor one = zeros({1}, TensorOptions{DType::f32, device_});
    allreduce(one, ReduceOp::sum);
    cuda::synchronize(device_);
  }

  [[noreturn]] void abort(const std::string& message, int exit_code) override {
    std::fprintf(stderr, "%s\n", message.c_str());
    std::fflush(stderr);
    if (comm_) ncclCommAbort(comm_);  // unblock kernels waiting on peers
    comm_ = nullptr;
    bootstrap_.abort(message, exit_code);
    std::_Exit(exit_code == 0 ? 1 : exit_code);  // not reached: the bootstrap's abort ends the job
  }

  std::unique_ptr<Comm> split(int color, int key) override {
    ncclComm_t sub = nullptr;
    cuda::DeviceGuard guard(device_);
    NCCL_CALL("split", ncclCommSplit(comm_, color, key, &sub, nullptr));
    ENGINE_CHECK(sub != nullptr, "NcclComm::split: rank {} got no communicator for colour {}", rank_, color);
    return std::make_unique<NcclComm>(sub, bootstrap_, device_);
  }

 private:
  void check(const Tensor& t, const char* op) const {
    ENGINE_CHECK(t.defined(), "NcclComm::{}: undefined tensor", op);
    ENGINE_CHECK(t.device() == device_, "NcclComm::{}: tensor on {} but this communicator serves {}", op,
                 t.device().str(), device_.str());
    ENGINE_CHECK(t.is_contiguous(), "NcclComm::{}: tensor {} must be contiguous", op, t.sizes().str());
  }
  cudaStream_t stream() const { return cuda::compute_stream(device_); }

  ncclComm_t comm_;
  Comm& bootstrap_;
  Device device_;
  int rank_ = 0, size_ = 1;
};

}  // namespace

std::unique_ptr<Comm> make_nccl_comm(Comm& bootstrap, Device device) {
  cuda::check_device(device, "make_nccl_comm");
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  if (bootstrap.rank() == 0) {
    const ncclResult_t rc = ncclGetUniqueId(&id);
    ENGINE_CHECK(rc == ncclSuccess, "make_nccl_comm: ncclGetUniqueId failed: {}", ncclGetErrorString(rc));
  }
  // The id travels as bytes over the bootstrap (host memory).
  Tensor bytes = empty({int64_t(sizeof(id))}, TensorOptions{DType::u8});
  std::memcpy(bytes.raw_data(), &id, sizeof(id));
  bootstrap.broadcast(bytes, 0);
  std::memcpy(&id, bytes.raw_data(), sizeof(id));
  cuda::DeviceGuard guard(device);
  ncclComm_t comm = nullptr;
  const ncclResult_t rc = ncclCommInitRank(&comm, bootstrap.size(), id, bootstrap.rank());
  ENGINE_CHECK(rc == ncclSuccess, "make_nccl_comm: ncclCommInitRank (rank {} of {}, {}) failed: {}", bootstrap.rank(),
               bootstrap.size(), device.str(), ncclGetErrorString(rc));
  return std::make_unique<NcclComm>(comm, bootstrap, device);
}

#endif

}  // namespace engine::dist

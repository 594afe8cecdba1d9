// host_staged_comm.cpp: HostStagedComm (dist/host_staged_comm.h): device tensors staged through
// host copies around the collectives of a host communicator (MpiComm).
#include "dist/host_staged_comm.h"

#include <cstdlib>
#include <string>
#include <utility>

#include "autograd/grad_mode.h"
#include "tensor/backend.h"
#include "tensor/error.h"
#include "tensor/memory/profiler.h"
#include "tensor/ops.h"

namespace engine::dist {

namespace {

// A contiguous host copy of a device tensor. Empty tensors get a fresh host tensor of the same
// shape (there are no bytes to move; every rank still joins the collective).
Tensor to_host(const Tensor& t) {
  if (t.numel() == 0) return empty(t.sizes(), opts(t.dtype(), Device::cpu()));
  return t.to(Device::cpu());  // waits for the kernels that produced t (the copy syncs the stream)
}

// A host result moved onto `device`.
Tensor to_device(const Tensor& host, Device device) {
  if (host.numel() == 0) return empty(host.sizes(), opts(host.dtype(), device));
  return host.to(device);
}

// Writes the host result of an in-place collective back into the device tensor `dst` (a view
// too): one host -> device copy straight into a contiguous destination, else through a device
// temporary and the strided device copy.
void write_back(const Tensor& dst, const Tensor& host, const char* op) {
  ENGINE_CHECK(host.sizes() == dst.sizes() && host.dtype() == dst.dtype(),
               "HostStagedComm::{}: the wrapped communicator returned {} {} for a {} {} tensor", op,
               dtype_name(host.dtype()), host.sizes().str(), dtype_name(dst.dtype()), dst.sizes().str());
  if (dst.numel() == 0) return;
  if (dst.is_contiguous()) {
    backend::copy_bytes(dst.raw_data(), dst.device(), host.raw_data(), Device::cpu(), dst.nbytes(), op);
  } else {
    copy_(dst, host.to(dst.device()));
  }
}

class HostStagedComm final : public Comm {
 public:
  HostStagedComm(Comm& inner, std::unique_ptr<Comm> owned) : owned_(std::move(owned)), inner_(inner) {}

  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  std::string name() const override { return inner_.name() + "+host-staged"; }

  void allreduce(Tensor& t, ReduceOp op) override {
    if (on_host(t)) return inner_.allreduce(t, op);
    memory::OpScope scope("HostStagedComm::allreduce");  // the staging copies, in memory profiles
    autograd::NoGradGuard no_grad;
    Tensor h = to_host(t);
    inner_.allreduce(h, op);
    write_back(t, h, "allreduce");
  }

  void broadcast(Tensor& t, int root) override {
    if (on_host(t)) return inner_.broadcast(t, root);
    memory::OpScope scope("HostStagedComm::broadcast");  // the staging copies, in memory profiles
    autograd::NoGradGuard no_grad;
    // Only the root's values travel: the other ranks receive into an uninitialised host buffer.
    Tensor h = rank() == root ? to_host(t) : empty(t.sizes(), opts(t.dtype(), Device::cpu()));
    inner_.broadcast(h, root);
    write_back(t, h, "broadcast");
  }

  Tensor allgather(const Tensor& in) override {
    if (on_host(in)) return inner_.allgather(in);
    memory::OpScope scope("HostStagedComm::allgather");  // the staging copies, in memory profiles
    autograd::NoGradGuard no_grad;
    return to_device(inner_.allgather(to_host(in)), in.device());
  }

  Tensor alltoallv(const Tensor& in, const std::vector<int64_t>& send_counts,
                   const std::vector<int64_t>& recv_counts) override {
    if (on_host(in)) return inner_.alltoallv(in, send_counts, recv_counts);
    memory::OpScope scope("HostStagedComm::alltoallv");  // the staging copies, in memory profiles
    autograd::NoGradGuard no_grad;
    return to_device(inner_.alltoallv(to_host(in), send_counts, recv_counts), in.device());
  }

  void barrier() override { inner_.barrier(); }
  [[noreturn]] void abort(const std::string& message, int exit_code) override {
    inner_.abort(message, exit_code);
    std::abort();  // not reached: the wrapped abort ends the process (g++ does not see its [[noreturn]])
  }

  std::unique_ptr<Comm> split(int color, int key) override { return make_host_staged_comm(inner_.split(color, key)); }

 private:
  // Host (or undefined: the wrapped communicator reports it) tensors need no staging.
  static bool on_host(const Tensor& t) { return !t.defined() || t.device().is_cpu(); }

  std::unique_ptr<Comm> owned_;  // set when this communicator owns inner_ (splits)
  Comm& inner_;
};

}  // namespace

std::unique_ptr<Comm> make_host_staged_comm(Comm& inner) { return std::make_unique<HostStagedComm>(inner, nullptr); }

std::unique_ptr<Comm> make_host_staged_comm(std::unique_ptr<Comm> inner) {
  ENGINE_CHECK(inner != nullptr, "make_host_staged_comm: null communicator");
  Comm& ref = *inner;
  return std::make_unique<HostStagedComm>(ref, std::move(inner));
}

}  // namespace engine::dist

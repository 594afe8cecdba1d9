// mpi_nccl_comm.cpp: the Comm conformance checks of mpi_comm.cpp for NcclComm on device tensors
// (label gpu). Registered at np = 1 only: NCCL refuses two ranks on one GPU, and CI machines
// have at most one (docs/distributed-notes.md section 0). Rank r uses GPU r % device_count. Skips
// with a message (exit 0) when the build has no NCCL or no GPU is present.
#include <cstdio>
#include <vector>

#include "dist/nccl_comm.h"
#include "mpi_test.h"
#include "tensor/ops.h"
#ifdef ENGINE_WITH_CUDA
#include "tensor/cuda/device.h"
#endif

using namespace engine;
using mpi_test::Context;

namespace {

double value(int r, int64_t i) { return double(r + 1) * 1000.0 + double(i); }

Device my_gpu(int rank) {
#ifdef ENGINE_WITH_CUDA
  return Device::cuda(rank % cuda::device_count());
#else
  (void)rank;
  return Device::cpu();
#endif
}

bool have_gpu() {
#ifdef ENGINE_WITH_CUDA
  return dist::nccl_available() && cuda::is_available();
#else
  return false;
#endif
}

Tensor rank_tensor(int r, int64_t n, DType dt, Device d) {
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = value(r, i);
  Tensor t = from_vector(v, {n}, TensorOptions{DType::f64});
  if (dt != DType::f64) t = to_dtype(t, dt);
  return t.to(d);
}

void test_collectives(Context& t) {
  if (!have_gpu()) {
    if (t.comm.is_root()) std::printf("mpi_nccl_comm: skipped (no NCCL in this build or no GPU)\n");
    return;
  }
  const Device gpu = my_gpu(t.comm.rank());
  auto nccl = dist::make_nccl_comm(t.comm, gpu);
  const int R = nccl->size(), me = nccl->rank();
  MT_CHECK(t, R == t.comm.size() && me == t.comm.rank() && nccl->name() == "nccl");
  for (DType dt : {DType::f32, DType::f64, DType::i64}) {
    Tensor x = rank_tensor(me, 33, dt, gpu);
    nccl->allreduce(x);
    const std::vector<double> got = x.to(Device::cpu()).to_vector();
    for (int64_t i = 0; i < 33; ++i) {
      double want = 0;
      for (int r = 0; r < R; ++r) want += value(r, i);
      MT_CHECK(t, got[size_t(i)] == want, "allreduce {} element {}", dtype_name(dt), i);
    }
    Tensor b = rank_tensor(me, 5, dt, gpu);
    nccl->broadcast(b, 0);
    MT_CHECK(t, b.to(Device::cpu()).to_vector() == rank_tensor(0, 5, dt, Device::cpu()).to_vector());
    const Tensor g = nccl->allgather(reshape(rank_tensor(me, 6, dt, gpu), {2, 3})).to(Device::cpu());
    for (int r = 0; r < R; ++r)
      for (int64_t i = 0; i < 6; ++i) MT_CHECK(t, g.to_vector()[size_t(r * 6 + i)] == value(r, i));
    // alltoallv: rank s sends (s + d) % 3 rows of value (s, d, k) to rank d.
    std::vector<int64_t> send(static_cast<size_t>(R)), recv(static_cast<size_t>(R));
    std::vector<double> rows;
    for (int d = 0; d < R; ++d) {
      send[size_t(d)] = (me + d) % 3;
      recv[size_t(d)] = (d + me) % 3;
      for (int64_t k = 0; k < send[size_t(d)]; ++k) rows.insert(rows.end(), {double(me), double(d), double(k)});
    }
    Tensor in = from_vector(rows, {int64_t(rows.size()) / 3, 3}, TensorOptions{DType::f64});
    if (dt != DType::f64) in = to_dtype(in, dt);
    const std::vector<double> out = nccl->alltoallv(in.to(gpu), send, recv).to(Device::cpu()).to_vector();
    size_t row = 0;
    for (int s = 0; s < R; ++s)
      for (int64_t k = 0; k < recv[size_t(s)]; ++k, ++row)
        MT_CHECK(t, out[row * 3] == s && out[row * 3 + 1] == me && out[row * 3 + 2] == double(k), "alltoallv row {}",
                 row);
  }
  nccl->barrier();
}

}  // namespace

int main(int argc, char** argv) { return mpi_test::run(argc, argv, {{"nccl_collectives", test_collectives}}); }

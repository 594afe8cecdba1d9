// data_parallel.cpp: dist/data_parallel.h. This first version reduces the whole flat buffer at
// once; the bucketed version (reverse registration order) replaces it with MpiComm.
#include "dist/data_parallel.h"

#include "tensor/ops.h"

namespace engine::dist {

DataParallel::DataParallel(Comm& comm, nn::ParameterStore& store, nn::Module& root, int64_t bucket_bytes)
    : comm_(comm), store_(store), root_(root), bucket_bytes_(bucket_bytes) {}

void DataParallel::broadcast_parameters() {
  if (comm_.size() == 1) return;
  Tensor p = store_.flat_params();
  comm_.broadcast(p, 0);
  for (auto& [name, b] : root_.named_buffers()) comm_.broadcast(b->value, 0);
}

void DataParallel::allreduce_gradients() {
  if (comm_.size() == 1) return;
  Tensor g = store_.flat_grads();
  comm_.allreduce(g);
  mul_(g, 1.0 / comm_.size());
}

void DataParallel::check_consistency() {}

void DataParallel::average_buffer(Tensor& t) {
  if (comm_.size() == 1) return;
  comm_.allreduce(t);
  mul_(t, 1.0 / comm_.size());
}

}  // namespace engine::dist

// ops_index_pending.cpp: placeholders for index_add and index_select until tensor/ops_index.cpp
// lands (the index family branch deletes this file). They throw instead of computing anything.
#include "tensor/ops.h"

namespace engine {

Tensor index_add(const Tensor&, int64_t, const Tensor&, const Tensor&) {
  throw Error("index_add: not available yet (tensor/ops_index.cpp pending)");
}
Tensor index_select(const Tensor&, int64_t, const Tensor&) {
  throw Error("index_select: not available yet (tensor/ops_index.cpp pending)");
}

}  // namespace engine

// node.cpp: Nodes, saved tensors, AccumulateGrad, and recording a Node for an op.
#include "autograd/node.h"

#include <atomic>

#include "autograd/grad_mode.h"
#include "tensor/memory/profiler.h"
#include "tensor/ops.h"
#include "tensor/precision.h"

namespace engine::autograd {

namespace {
std::atomic<uint64_t> next_sequence_nr{1};
thread_local bool grad_mode = true;
}  // namespace

bool grad_enabled() { return grad_mode; }
void set_grad_enabled(bool on) { grad_mode = on; }

// ---- SavedTensor -----------------------------------------------------------------------------

namespace {
// Whether save() stores `t` as a bf16 copy (Note [bf16 saved activations]).
bool should_pack(const Tensor& t, SaveMode mode) {
  return mode == SaveMode::packable && saved_activation_dtype() == DType::bf16 && t.dtype() == DType::f32 &&
         t.storage()->kind == memory::Kind::activation && t.numel() >= kPackMinElements;
}
}  // namespace

SavedTensor::SavedTensor(const Tensor& t, const Node* owner, SaveMode mode) {
  if (!t.defined()) {
    was_undefined_ = true;
    return;
  }
  version_ = t.storage()->version;
  requires_grad_ = t.requires_grad();
  if (should_pack(t, mode)) {
    // A snapshot: later in-place writes to the original cannot reach it, so no version check.
    NoGradGuard no_grad;
    packed_ = true;
    data_ = to_dtype(t.detach(), DType::bf16);
    return;
  }
  if (t.grad_fn() && t.grad_fn().get() == owner) {
    // Note [saved outputs]: keep the data, drop the strong reference to our own Node.
    is_output_ = true;
    data_ = t.detach();
    weak_grad_fn_ = t.grad_fn();
    output_nr_ = t.output_nr();
  } else {
    data_ = t;
  }
}

Tensor SavedTensor::unpack(const Node& owner) const {
  if (was_undefined_) return Tensor();
  ENGINE_CHECK(data_.defined(),
               "autograd: the saved tensors of {} were already freed; call backward/grad with "
               "retain_graph=true to go through the graph twice",
               owner.name());
  if (packed_) {
    ENGINE_CHECK(!(requires_grad_ && grad_enabled()),
                 "autograd: {} saved a bf16 copy of its input (SavedActivationScope(bf16)), which has no graph; "
                 "a double backward (create_graph=true) through it needs the phase to run without the scope "
                 "(Note [bf16 saved activations])",
                 owner.name());
    NoGradGuard no_grad;
    return to_dtype(data_, DType::f32);
  }
  const uint64_t now = data_.storage()->version;
  ENGINE_CHECK(now == version_,
               "autograd: a tensor saved by {} was modified in place by {} (version {} now, {} when saved); "
               "its backward would use wrong values",
               owner.name(), data_.storage()->last_writer.empty() ? "an in-place op" : data_.storage()->last_writer,
               now, version_);
  if (!is_output_) return data_;
  Tensor t = data_.detach();
  if (requires_grad_) {
    t.impl()->grad_fn = weak_grad_fn_.lock();
    t.impl()->output_nr = output_nr_;
  }
  return t;
}

// ---- Node ------------------------------------------------------------------------------------

Node::Node(std::string name)
    : name_(std::move(name)),
      sequence_nr_(next_sequence_nr++),
      pass_(memory::current_pass()),
      module_(memory::current_module_path()) {}

size_t Node::save(const Tensor& t, SaveMode mode) {
  saved_.emplace_back(t, this, mode);
  const Tensor& kept = saved_.back().storage_tensor();
  if (kept.defined() && memory::Profiler::enabled())
    memory::mark_saved(kept.storage()->data, kept.storage()->nbytes, name_);
  return saved_.size() - 1;
}

Tensor Node::saved(size_t i) const {
  ENGINE_CHECK(i < saved_.size(), "autograd: {} has no saved tensor #{}", name_, i);
  return saved_[i].unpack(*this);
}

void Node::release_saved() {
  for (auto& s : saved_) s.reset();
}

TensorList Node::apply(const TensorList& grad_outputs) {
  ENGINE_CHECK(backward_fn != nullptr, "autograd: {} has no backward formula", name_);
  ENGINE_CHECK(!(once_differentiable && grad_enabled()),
               "autograd: {} is differentiable only once; its backward cannot be recorded for a double "
               "backward (create_graph=true)",
               name_);
  return backward_fn(*this, grad_outputs);
}

// ---- AccumulateGrad --------------------------------------------------------------------------

AccumulateGrad::AccumulateGrad(const Tensor& leaf_tensor) : Node("AccumulateGrad"), leaf(leaf_tensor.impl_ptr()) {
  outputs.push_back({leaf_tensor.sizes(), leaf_tensor.dtype(), leaf_tensor.device()});
}

TensorList AccumulateGrad::apply(const TensorList& grad_outputs) {
  auto impl = leaf.lock();
  if (!impl) return {};
  Tensor leaf_tensor(impl);
  const Tensor& g = grad_outputs[0];
  Tensor current = leaf_tensor.grad();
  if (grad_enabled()) {
    // create_graph: keep .grad differentiable (a new tensor, never written in place).
    leaf_tensor.set_grad(current.defined() ? add(current, g) : g);
  } else if (!current.defined()) {
    // Own a fresh buffer: g may share storage with other gradients (add's backward returns
    // the same tensor for both inputs), and later accumulation writes .grad in place.
    // Gradients of leaves live in the persistent region (Kind::grad): they outlive the phase.
    Tensor owned = empty(g.sizes(), {g.dtype(), g.device(), memory::Kind::grad});
    copy_(owned, g);
    leaf_tensor.set_grad(owned);
  } else {
    NoGradGuard no_grad;
    add_(current, g);
  }
  return {};
}

// ---- Recording -------------------------------------------------------------------------------

Edge gradient_edge(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return {};
  if (t.grad_fn()) return {t.grad_fn(), t.output_nr()};
  TensorImpl* impl = t.impl();
  std::shared_ptr<Node> acc = impl->grad_accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(t);
    impl->grad_accumulator = acc;
  }
  return {acc, 0};
}

std::shared_ptr<Node> record(const char* name, const TensorList& inputs, const TensorList& outputs) {
  if (!grad_enabled()) return nullptr;
  bool any = false;
  for (const Tensor& t : inputs) any = any || (t.defined() && t.requires_grad());
  if (!any) return nullptr;
  auto node = std::make_shared<Node>(name);
  node->next_edges.reserve(inputs.size());
  for (const Tensor& t : inputs) node->next_edges.push_back(gradient_edge(t));
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Tensor& out = outputs[i];
    node->outputs.push_back({out.sizes(), out.dtype(), out.device()});
    out.impl()->grad_fn = node;
    out.impl()->output_nr = uint32_t(i);
  }
  return node;
}

}  // namespace engine::autograd

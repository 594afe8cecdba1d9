// module.cpp: parameter registration, traversal, and the flat parameter / gradient buffers.
#include "nn/module.h"

#include "autograd/grad_mode.h"
#include "tensor/ops.h"

namespace engine::nn {

namespace {
void check_name(const std::string& name, const std::string& type) {
  ENGINE_CHECK(!name.empty() && name.find('.') == std::string::npos,
               "{}: invalid member name '{}' (non-empty, no dots)", type, name);
}
}  // namespace

Parameter& Module::register_parameter(const std::string& name, const Dims& shape, Init init, double lr_mul,
                                      bool weight_decay) {
  check_name(name, type_name_);
  for (const auto& p : params_) ENGINE_CHECK(p->name != name, "{}: parameter '{}' registered twice", type_name_, name);
  auto p = std::make_unique<Parameter>();
  p->name = name;
  p->shape = shape;
  p->init = init;
  p->lr_mul = lr_mul;
  p->weight_decay = weight_decay;
  params_.push_back(std::move(p));
  return *params_.back();
}

Buffer& Module::register_buffer(const std::string& name, const Dims& shape, Init init) {
  check_name(name, type_name_);
  auto b = std::make_unique<Buffer>();
  b->name = name;
  b->shape = shape;
  b->init = init;
  buffers_.push_back(std::move(b));
  return *buffers_.back();
}

void Module::add_child(const std::string& name, std::unique_ptr<Module> m) {
  check_name(name, type_name_);
  for (const auto& c : children_) ENGINE_CHECK(c.first != name, "{}: child '{}' registered twice", type_name_, name);
  children_.emplace_back(name, std::move(m));
}

std::vector<std::pair<std::string, Parameter*>> Module::named_parameters(const std::string& prefix) {
  std::vector<std::pair<std::string, Parameter*>> out;
  for (auto& p : params_) out.emplace_back(prefix + p->name, p.get());
  for (auto& [name, child] : children_) {
    auto sub = child->named_parameters(prefix + name + ".");
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

std::vector<std::pair<std::string, Buffer*>> Module::named_buffers(const std::string& prefix) {
  std::vector<std::pair<std::string, Buffer*>> out;
  for (auto& b : buffers_) out.emplace_back(prefix + b->name, b.get());
  for (auto& [name, child] : children_) {
    auto sub = child->named_buffers(prefix + name + ".");
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

std::vector<std::pair<std::string, Module*>> Module::named_children() {
  std::vector<std::pair<std::string, Module*>> out;
  for (auto& [name, child] : children_) out.emplace_back(name, child.get());
  return out;
}

Module* Module::child(const std::string& name) {
  for (auto& [n, c] : children_)
    if (n == name) return c.get();
  return nullptr;
}

int64_t Module::num_parameters() {
  int64_t n = 0;
  for (auto& [name, p] : named_parameters()) n += p->shape.product();
  return n;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

// ---- ParameterStore --------------------------------------------------------------------------

namespace {
// Initialise `t` (a view of elements [offset, offset + numel) of a stream) from `init`.
// Note [counter-based RNG]: element j of the flat buffer uses counter j, so a parameter's initial
// value depends only on (seed, its offset), not on materialisation order or rank.
void initialise(const Tensor& t, const Init& init, uint64_t seed, int64_t offset) {
  autograd::NoGradGuard no_grad;
  if (init.kind == Init::Kind::constant) {
    fill_(t, init.mean_or_value);
    return;
  }
  Generator gen(seed, uint64_t(offset));
  if (init.kind == Init::Kind::custom) {
    // A custom initialiser builds its values on the host (small buffers: Fourier features);
    // copy_ does not cross devices, so bring them to t's device first.
    const Tensor v = init.fn(t.sizes(), gen);
    copy_(t, v.device() == t.device() ? v : v.to(t.device()));
    return;
  }
  // Drawn on t's own device: the Philox bodies are shared, so a CUDA store starts from the
  // same values as a CPU one (docs/cuda.md "Random numbers").
  Tensor draw = randn(t.sizes(), gen, opts(t.dtype(), t.device()));
  copy_(t, add(mul(draw, init.std), init.mean_or_value));
}
}  // namespace

void ParameterStore::materialize(Module& root, uint64_t seed, TensorOptions options) {
  ENGINE_CHECK(!flat_params_.defined(), "ParameterStore: already materialized");
  params_ = root.named_parameters();
  int64_t total = 0;
  for (auto& [name, p] : params_) {
    p->offset = total;
    total += p->shape.product();
  }
  TensorOptions po = options, go = options;
  po.kind = memory::Kind::param;
  go.kind = memory::Kind::grad;
  flat_params_ = empty({total}, po);
  flat_grads_ = zeros({total}, go);
  for (auto& [name, p] : params_) {
    Tensor v = make_view(flat_params_, p->shape, contiguous_strides(p->shape), p->offset);
    initialise(v, p->init, seed, p->offset);
    v.set_name(name);
    v.requires_grad_(true);
    v.set_grad(make_view(flat_grads_, p->shape, contiguous_strides(p->shape), p->offset));
    p->value = v;
  }
  // Buffers: separate allocations, seeded after the parameters' stream.
  int64_t stream = total;
  for (auto& [name, b] : root.named_buffers()) {
    TensorOptions bo = options;
    bo.kind = memory::Kind::buffer;
    b->value = empty(b->shape, bo);
    initialise(b->value, b->init, seed, stream);
    b->value.set_name(name);
    stream += b->shape.product();
  }
}

Parameter* ParameterStore::find(const std::string& name) const {
  for (auto& [n, p] : params_)
    if (n == name) return p;
  return nullptr;
}

void ParameterStore::zero_grad() {
  autograd::NoGradGuard no_grad;
  if (flat_grads_.defined()) zero_(flat_grads_);
}

}  // namespace engine::nn

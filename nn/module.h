// module.h: Module, the unit the model is built from (DESIGN.md sections 2 and 5).
//
// A Module registers, in its constructor, named parameters and buffers (shapes and initialisers
// only) and named child modules. Nothing is allocated then: that is the "meta" construction mode,
// which is how the 1.17 B-parameter paper64 generator is counted without 4.7 GB of weights.
//
// ParameterStore::materialize(root) then lays every parameter of the tree out in ONE flat,
// contiguous buffer in registration order (persistent region, Kind::param), and the gradients in a
// second flat buffer of the same layout (Kind::grad). Each parameter is a view of the first, its
// .grad() a view of the second. This gives:
//   - one memset for zero_grad, one fused AdamW loop over the flat buffers;
//   - contiguous buckets for the data-parallel allreduce;
//   - checkpoints as flat buffers plus an index (name -> offset, shape).
// Names follow PyTorch's state_dict convention ("synthesis.b16.attn0.block1.moe.experts.3.w1.weight").
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace engine::nn {

// How a parameter or buffer is initialised: value = normal(0,1) * std + mean, or a constant,
// drawn from a counter-based stream keyed by the parameter's global index, so initial weights do
// not depend on the order in which modules are materialised on different ranks.
struct Init {
  enum class Kind { normal, constant, custom } kind = Kind::constant;
  double mean_or_value = 0.0;
  double std = 0.0;
  // custom: fn(shape, gen) returns the initial values (any float dtype; converted), where `gen` is
  // the counter-based stream at this tensor's offset, so draws stay independent of order and rank.
  // For buffers whose distribution is not normal (StyleGAN3's Fourier frequencies and phases).
  std::function<Tensor(const Dims&, Generator&)> fn;
  static Init normal(double std = 1.0, double mean = 0.0) { return {Kind::normal, mean, std, {}}; }
  static Init constant(double value) { return {Kind::constant, value, 0.0, {}}; }
  static Init zeros() { return constant(0.0); }
  static Init ones() { return constant(1.0); }
  static Init custom(std::function<Tensor(const Dims&, Generator&)> f) { return {Kind::custom, 0.0, 0.0, std::move(f)}; }
};

struct Parameter {
  std::string name;        // local name ("weight")
  Dims shape;
  Init init;
  double lr_mul = 1.0;     // per-parameter learning-rate multiplier (equalized lr: Note [equalized lr])
  bool weight_decay = true;
  Tensor value;            // a view of the flat parameter buffer, after materialize()
  int64_t offset = -1;     // element offset in the flat buffer
};

struct Buffer {
  std::string name;
  Dims shape;
  Init init;
  Tensor value;
};

class Module {
 public:
  explicit Module(std::string type_name) : type_name_(std::move(type_name)) {}
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  const std::string& type_name() const { return type_name_; }

  // Registration (call from constructors). The returned reference stays valid for the module's
  // lifetime; its `value` is defined after ParameterStore::materialize.
  Parameter& register_parameter(const std::string& name, const Dims& shape, Init init, double lr_mul = 1.0,
                                bool weight_decay = true);
  Buffer& register_buffer(const std::string& name, const Dims& shape, Init init);
  template <typename M, typename... Args>
  M& register_module(const std::string& name, Args&&... args) {
    auto m = std::make_unique<M>(std::forward<Args>(args)...);
    M& ref = *m;
    add_child(name, std::move(m));
    return ref;
  }

  // Traversal in registration order (own parameters first, then children depth-first).
  std::vector<std::pair<std::string, Parameter*>> named_parameters(const std::string& prefix = "");
  std::vector<std::pair<std::string, Buffer*>> named_buffers(const std::string& prefix = "");
  std::vector<std::pair<std::string, Module*>> named_children();
  Module* child(const std::string& name);
  int64_t num_parameters();  // works in meta mode (no allocation needed)

  void train(bool on = true);
  void eval() { train(false); }
  bool training() const { return training_; }

 private:
  void add_child(const std::string& name, std::unique_ptr<Module> m);

  std::string type_name_;
  bool training_ = true;
  // std::unique_ptr keeps references handed out by register_* stable while the vectors grow.
  std::vector<std::unique_ptr<Parameter>> params_;
  std::vector<std::unique_ptr<Buffer>> buffers_;
  std::vector<std::pair<std::string, std::unique_ptr<Module>>> children_;
};

// The flat buffers of one module tree on one device.
class ParameterStore {
 public:
  // Allocate the flat buffers, make every parameter a leaf view that requires grad (with its
  // .grad() a view of the gradient buffer, zeroed), initialise parameters and buffers from
  // `seed`. Buffers are allocated individually (Kind::buffer); they are not trained.
  // options.device places everything (flat buffers, views, buffers) on that device, e.g.
  // Device::cuda(0); the initial values are the same on every device (counter-based draws).
  void materialize(Module& root, uint64_t seed, TensorOptions options = {});

  const Tensor& flat_params() const { return flat_params_; }
  const Tensor& flat_grads() const { return flat_grads_; }
  int64_t numel() const { return flat_params_.defined() ? flat_params_.numel() : 0; }
  const std::vector<std::pair<std::string, Parameter*>>& parameters() const { return params_; }
  Parameter* find(const std::string& name) const;

  void zero_grad();
  // The device of the flat buffers (CPU before materialize).
  Device device() const { return flat_params_.defined() ? flat_params_.device() : Device::cpu(); }

 private:
  Tensor flat_params_, flat_grads_;
  std::vector<std::pair<std::string, Parameter*>> params_;
};

}  // namespace engine::nn

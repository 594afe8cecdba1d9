// node.h: one recorded op in the autograd graph (DESIGN.md section 7).
//
// A Node is created by an op whose inputs require grad. It knows
//   - next_edges: for each differentiable input of the op, where that input's gradient goes
//     (the Node that produced the input and which of its outputs it was, or the AccumulateGrad
//     node of a leaf; an empty edge when the input does not require grad);
//   - saved tensors, with the storage version at the time they were saved;
//   - backward_fn: maps the gradients of the op's outputs to the gradients of its inputs.
//     It is written with differentiable ops (autograd/formulas.cpp), so running it with
//     create_graph records new Nodes: that is double backward.
//
// Note [saved tensor versions]: in-place writes bump a storage version. A saved tensor whose
// storage changed since it was saved is stale; unpacking it raises an error naming the Node that
// saved it and the op that wrote it.
//
// Note [saved outputs]: a Node that saves one of its own outputs (exp saves exp(x)) must not keep
// itself alive through that tensor (a cycle). The output is stored without grad_fn plus a weak
// pointer to the Node, and reassembled when unpacked.
//
// Note [bf16 saved activations]: most of a training step's peak memory is the activations that
// Nodes save between forward and backward. While SavedActivationScope(bf16) is active
// (tensor/precision.h; the trainer's bf16 precision for G_main and D_main), save() stores an f32
// activation of at least kPackMinElements elements as a bf16 copy (round to nearest even) and
// unpack() widens it back to f32: half the bytes, a relative error of at most 2^-9 per element in
// the backward formula that reads it. The f32 original is freed as soon as the forward stops using
// it. Not packed: parameters, gradients and other persistent tensors (Storage kind other than
// activation), small tensors (statistics, styles, losses), non-f32 tensors (the bf16 GEMM inputs
// are already bf16; integer indices), and what a formula saves with SaveMode::exact: values that
// are compared for equality (max/min), softmax/logsumexp/cross-entropy inputs and outputs, norm
// inputs and statistics, attention operands and deform_conv2d offsets (spec: softmax and norm
// statistics in f32).
// A packed tensor is a detached snapshot: it has no graph, so using it in a double backward would
// silently drop the second-order terms. unpack() refuses that (create_graph while the original
// required grad) with an error; R1's phase runs without the scope.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensor/memory/memory.h"
#include "tensor/tensor.h"

namespace engine::autograd {

class Node;

struct Edge {
  std::shared_ptr<Node> node;  // null: no gradient flows to this input
  uint32_t input_nr = 0;       // which gradient input of `node` (= output_nr of the forward op)
  bool valid() const { return node != nullptr; }
};

// Metadata of one forward output, used to make zero gradients for outputs that got none.
struct OutputMeta {
  Dims sizes;
  DType dtype = DType::f32;
  Device device;
};

// How a formula wants a tensor kept (Note [bf16 saved activations]).
enum class SaveMode : uint8_t {
  packable,  // may be stored as a bf16 copy under SavedActivationScope(bf16)
  exact,     // always kept as it is
};

// f32 activations below this many elements are never packed: the copy would cost more than it saves.
constexpr int64_t kPackMinElements = 4096;

class SavedTensor {
 public:
  SavedTensor() = default;
  SavedTensor(const Tensor& t, const Node* owner, SaveMode mode = SaveMode::packable);
  Tensor unpack(const Node& owner) const;
  void reset() { data_ = Tensor(); }
  bool defined() const { return data_.defined() || was_undefined_; }
  bool packed() const { return packed_; }
  // The tensor that holds the saved bytes (the bf16 copy when packed), for the profiler.
  const Tensor& storage_tensor() const { return data_; }

 private:
  Tensor data_;                       // same storage and geometry; grad_fn cleared if is_output_
  uint64_t version_ = 0;
  bool is_output_ = false;            // Note [saved outputs]
  std::weak_ptr<Node> weak_grad_fn_;
  uint32_t output_nr_ = 0;
  bool requires_grad_ = false;
  bool was_undefined_ = false;
  bool packed_ = false;               // Note [bf16 saved activations]: data_ is a bf16 snapshot
};

using BackwardFn = std::function<TensorList(Node& node, const TensorList& grad_outputs)>;

class Node : public std::enable_shared_from_this<Node> {
 public:
  explicit Node(std::string name);
  virtual ~Node() = default;

  const std::string& name() const { return name_; }
  uint64_t sequence_nr() const { return sequence_nr_; }
  memory::Pass pass() const { return pass_; }          // pass during which it was recorded
  const std::string& module() const { return module_; }  // module path when recorded

  std::vector<Edge> next_edges;
  std::vector<OutputMeta> outputs;
  BackwardFn backward_fn;
  // Set for ops whose backward is not itself differentiable: running that backward with
  // create_graph raises an error naming the op.
  bool once_differentiable = false;

  // Save a tensor for backward (returns its index for saved()). SaveMode::exact keeps it as it is
  // even under SavedActivationScope(bf16) (Note [bf16 saved activations]).
  size_t save(const Tensor& t, SaveMode mode = SaveMode::packable);
  Tensor saved(size_t i) const;
  void release_saved();
  // Whether input i gets a gradient: its edge is valid and, while the engine runs this node's
  // backward, the input lies on a path to a requested target (pruning: grad(sum D(x), {x}) asks
  // a conv for its input gradient only, so it computes no weight gradient; Note [R1 double
  // backward]).
  bool needs_input_grad(size_t i) const {
    return i < next_edges.size() && next_edges[i].valid() && (input_pruned.empty() || !input_pruned[i]);
  }
  // Set by the engine around apply(): 1 for inputs whose gradient nothing requested needs.
  std::vector<uint8_t> input_pruned;
  size_t num_inputs() const { return outputs.size(); }

  // Run the backward of this node (the engine calls this; AccumulateGrad overrides it).
  virtual TensorList apply(const TensorList& grad_outputs);

 private:
  std::string name_;
  uint64_t sequence_nr_;
  memory::Pass pass_;
  std::string module_;
  std::vector<SavedTensor> saved_;
};

// The sink of a leaf tensor's gradient in backward(): adds into leaf.grad.
class AccumulateGrad : public Node {
 public:
  explicit AccumulateGrad(const Tensor& leaf);
  TensorList apply(const TensorList& grad_outputs) override;
  std::weak_ptr<TensorImpl> leaf;
};

// Where the gradient of `t` goes: (grad_fn, output_nr) or the leaf's AccumulateGrad node.
Edge gradient_edge(const Tensor& t);

// Record a Node for an op with differentiable `inputs` and `outputs`. Returns null (and records
// nothing) when grad mode is off or no input requires grad. Otherwise sets grad_fn/output_nr on
// each output. The caller then saves what it needs and sets backward_fn.
// Used only by autograd/formulas.cpp.
std::shared_ptr<Node> record(const char* name, const TensorList& inputs, const TensorList& outputs);

}  // namespace engine::autograd

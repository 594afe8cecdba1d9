// engine.cpp: the reverse-mode engine (DESIGN.md section 7).
//
// Algorithm, for roots (outputs with their gradients) and targets (the requested inputs, or every
// AccumulateGrad node for backward()):
//   1. Walk the graph from the roots. A node is *needed* when it is a target or one of its next
//      edges leads to a needed node (pruning: nothing off a root-to-target path ever runs).
//   2. Count, for each needed node, how many edges from needed nodes point at it.
//   3. Run needed nodes when all their incoming gradients have arrived, newest first (highest
//      sequence number), summing gradients that arrive at the same input.
// Each node runs under PassScope(next_backward_pass(node.pass)): nodes recorded in the forward pass
// run as "bwd", nodes recorded by a create_graph backward run as "bwd2" (double backward), so the
// profiler separates the three passes of an R1 step.
#include "autograd/engine.h"

#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "tensor/memory/profiler.h"
#include "tensor/ops.h"

namespace engine::autograd {

namespace {

struct NodeState {
  int dependencies = 0;
  bool needed = false;
  TensorList inputs;  // summed incoming gradients, one slot per forward output
};

struct ByNewest {
  bool operator()(const Node* a, const Node* b) const { return a->sequence_nr() < b->sequence_nr(); }
};

Tensor make_zero_grad(const OutputMeta& m) { return zeros(m.sizes, opts(m.dtype, m.device)); }

void accumulate(Tensor& slot, const Tensor& g) {
  if (!g.defined()) return;
  slot = slot.defined() ? add(slot, g) : g;
}

// Runs the graph; `captures` maps (node, input slot) to an index in `captured`.
struct Run {
  std::unordered_map<Node*, NodeState> state;
  std::unordered_map<Node*, std::vector<std::pair<uint32_t, size_t>>> captures;
  std::unordered_set<Node*> targets;
  TensorList captured;
  bool accumulate_into_leaves = false;
  bool keep_graph = false;
  bool create_graph = false;

  // Step 1: mark needed nodes with an iterative post-order DFS.
  void mark_needed(const std::vector<Node*>& roots) {
    std::unordered_set<Node*> visited;
    std::vector<std::pair<Node*, size_t>> stack;
    for (Node* r : roots) {
      if (visited.insert(r).second) stack.push_back({r, 0});
      while (!stack.empty()) {
        auto& [node, next] = stack.back();
        if (next < node->next_edges.size()) {
          Node* child = node->next_edges[next++].node.get();
          if (child && visited.insert(child).second) stack.push_back({child, 0});
          continue;
        }
        NodeState& s = state[node];
        s.needed = targets.count(node) > 0;
        for (const Edge& e : node->next_edges)
          if (e.node && state[e.node.get()].needed) s.needed = true;
        stack.pop_back();
      }
    }
    // Step 2: dependency counts among needed nodes.
    for (auto& [node, s] : state) {
      if (!s.needed) continue;
      for (const Edge& e : node->next_edges)
        if (e.node && state[e.node.get()].needed) state[e.node.get()].dependencies++;
    }
  }

  void execute(const std::vector<std::pair<Edge, Tensor>>& roots) {
    std::priority_queue<Node*, std::vector<Node*>, ByNewest> ready;
    std::unordered_set<Node*> queued;
    for (const auto& [edge, g] : roots) {
      NodeState& s = state[edge.node.get()];
      if (!s.needed) continue;
      if (s.inputs.size() < edge.node->outputs.size()) s.inputs.resize(edge.node->outputs.size());
      accumulate(s.inputs[edge.input_nr], g);
    }
    for (const auto& [edge, g] : roots) {
      Node* n = edge.node.get();
      if (state[n].needed && state[n].dependencies == 0 && queued.insert(n).second) ready.push(n);
    }
    GradModeGuard mode(create_graph);
    while (!ready.empty()) {
      Node* node = ready.top();
      ready.pop();
      NodeState& s = state[node];
      s.inputs.resize(node->outputs.size());
      // Capture gradients requested by grad() at this node's inputs.
      auto cap = captures.find(node);
      if (cap != captures.end())
        for (auto [slot, index] : cap->second) {
          Tensor g = s.inputs[slot].defined() ? s.inputs[slot] : make_zero_grad(node->outputs[slot]);
          captured[index] = captured[index].defined() ? add(captured[index], g) : g;
        }
      const bool is_leaf_sink = dynamic_cast<AccumulateGrad*>(node) != nullptr;
      if (is_leaf_sink && !accumulate_into_leaves) {
        s.inputs.clear();
        continue;
      }
      bool any_child_needed = is_leaf_sink;
      for (const Edge& e : node->next_edges)
        if (e.node && state[e.node.get()].needed) any_child_needed = true;
      if (!any_child_needed) {
        s.inputs.clear();
        continue;
      }
      // Everything this node causes (its formula, and summing its results into the inputs of
      // the next nodes) belongs to the pass that runs its backward.
      memory::PassScope pass(memory::next_backward_pass(node->pass()));
      std::optional<memory::ModuleScope> module;
      if (!node->module().empty()) module.emplace(node->module());
      TensorList grads_in = std::move(s.inputs);
      bool any_defined = false;
      for (const Tensor& g : grads_in) any_defined = any_defined || g.defined();
      TensorList grads_out;
      if (any_defined) {
        for (size_t i = 0; i < grads_in.size(); ++i)
          if (!grads_in[i].defined()) grads_in[i] = make_zero_grad(node->outputs[i]);
        // Tell the formula which inputs were pruned, so it skips their gradients.
        node->input_pruned.assign(node->next_edges.size(), 0);
        for (size_t i = 0; i < node->next_edges.size(); ++i) {
          const Edge& e = node->next_edges[i];
          node->input_pruned[i] = e.node && !state[e.node.get()].needed;
        }
        struct ClearMask {
          Node* n;
          ~ClearMask() { n->input_pruned.clear(); }
        } clear_mask{node};
        grads_out = node->apply(grads_in);
      }
      grads_in.clear();
      if (!keep_graph) node->release_saved();
      ENGINE_CHECK(grads_out.empty() || grads_out.size() == node->next_edges.size(),
                   "autograd: {} returned {} gradients for {} inputs", node->name(), grads_out.size(),
                   node->next_edges.size());
      for (size_t i = 0; i < node->next_edges.size(); ++i) {
        const Edge& e = node->next_edges[i];
        if (!e.node) continue;
        NodeState& cs = state[e.node.get()];
        if (!cs.needed) continue;
        if (i < grads_out.size() && grads_out[i].defined()) {
          const Tensor& g = grads_out[i];
          const OutputMeta& m = e.node->outputs[e.input_nr];
          ENGINE_CHECK(g.sizes() == m.sizes, "autograd: {} produced a gradient of shape {} for an input of shape {}",
                       node->name(), g.sizes().str(), m.sizes.str());
          if (cs.inputs.size() < e.node->outputs.size()) cs.inputs.resize(e.node->outputs.size());
          accumulate(cs.inputs[e.input_nr], g);
        }
        if (--cs.dependencies == 0 && queued.insert(e.node.get()).second) ready.push(e.node.get());
      }
    }
  }
};

std::vector<std::pair<Edge, Tensor>> make_roots(const TensorList& outputs, const TensorList& grad_outputs) {
  ENGINE_CHECK(grad_outputs.empty() || grad_outputs.size() == outputs.size(),
               "autograd: {} grad_outputs for {} outputs", grad_outputs.size(), outputs.size());
  std::vector<std::pair<Edge, Tensor>> roots;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Tensor& out = outputs[i];
    ENGINE_CHECK(out.defined() && out.requires_grad(),
                 "autograd: output #{} does not require grad (nothing upstream of it requires grad, or it was "
                 "computed under NoGradGuard)",
                 i);
    Tensor g = i < grad_outputs.size() ? grad_outputs[i] : Tensor();
    if (!g.defined()) {
      ENGINE_CHECK(out.numel() == 1,
                   "autograd: grad_output can be implicit only for a one-element output, got shape {}",
                   out.sizes().str());
      g = ones_like(out);
    }
    ENGINE_CHECK(g.sizes() == out.sizes(), "autograd: grad_output shape {} does not match output shape {}",
                 g.sizes().str(), out.sizes().str());
    roots.push_back({gradient_edge(out), g});
  }
  return roots;
}

void collect_leaf_sinks(const std::vector<Node*>& roots, std::unordered_set<Node*>& sinks) {
  std::unordered_set<Node*> visited;
  std::vector<Node*> stack(roots.begin(), roots.end());
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    if (!visited.insert(n).second) continue;
    if (dynamic_cast<AccumulateGrad*>(n)) sinks.insert(n);
    for (const Edge& e : n->next_edges)
      if (e.node) stack.push_back(e.node.get());
  }
}

}  // namespace

void backward(const TensorList& outputs, const TensorList& grad_outputs, bool retain_graph, bool create_graph) {
  auto roots = make_roots(outputs, grad_outputs);
  Run run;
  run.accumulate_into_leaves = true;
  run.keep_graph = retain_graph || create_graph;
  run.create_graph = create_graph;
  std::vector<Node*> root_nodes;
  for (auto& r : roots) root_nodes.push_back(r.first.node.get());
  collect_leaf_sinks(root_nodes, run.targets);
  run.mark_needed(root_nodes);
  run.execute(roots);
}

void backward(const Tensor& output, const Tensor& grad_output, bool retain_graph, bool create_graph) {
  backward(TensorList{output}, grad_output.defined() ? TensorList{grad_output} : TensorList{}, retain_graph,
           create_graph);
}

TensorList grad(const TensorList& outputs, const TensorList& inputs, const TensorList& grad_outputs,
                bool create_graph, bool allow_unused, std::optional<bool> retain_graph) {
  auto roots = make_roots(outputs, grad_outputs);
  Run run;
  run.keep_graph = retain_graph.value_or(create_graph);
  run.create_graph = create_graph;
  run.captured.resize(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    ENGINE_CHECK(inputs[i].defined() && inputs[i].requires_grad(), "grad: input #{} does not require grad", i);
    Edge e = gradient_edge(inputs[i]);
    run.targets.insert(e.node.get());
    run.captures[e.node.get()].push_back({e.input_nr, i});
  }
  std::vector<Node*> root_nodes;
  for (auto& r : roots) root_nodes.push_back(r.first.node.get());
  // Keep AccumulateGrad nodes of the inputs alive while we run (they may be weakly held).
  std::vector<std::shared_ptr<Node>> keep;
  for (const Tensor& t : inputs) keep.push_back(gradient_edge(t).node);
  run.mark_needed(root_nodes);
  run.execute(roots);
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!run.captured[i].defined()) {
      ENGINE_CHECK(allow_unused,
                   "grad: input #{} was not used to compute the outputs (pass allow_unused=true to get an "
                   "undefined gradient instead)",
                   i);
    }
  }
  return run.captured;
}

}  // namespace engine::autograd

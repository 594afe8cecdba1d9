// engine.h: running the graph backwards (DESIGN.md section 7).
//
// backward(loss): gradients of `loss` (a scalar, or with explicit grad_output) with respect to
//   every leaf that requires grad, accumulated into leaf.grad().
// grad(outputs, inputs, ...): gradients of `outputs` with respect to `inputs` only, returned and
//   not accumulated. The engine prunes the graph to the nodes that lie on a path from an output
//   to an input, so e.g. R1's grad(sum(D(x)), {x}) computes no weight gradients at all
//   (Note [R1 double backward]).
// With create_graph the backward formulas record a new graph (double backward).
#pragma once
#include <optional>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "tensor/tensor.h"

namespace engine::autograd {

void backward(const Tensor& output, const Tensor& grad_output = Tensor(), bool retain_graph = false,
              bool create_graph = false);
void backward(const TensorList& outputs, const TensorList& grad_outputs, bool retain_graph = false,
              bool create_graph = false);

// retain_graph defaults to create_graph (as in PyTorch).
TensorList grad(const TensorList& outputs, const TensorList& inputs, const TensorList& grad_outputs = {},
                bool create_graph = false, bool allow_unused = false, std::optional<bool> retain_graph = {});

}  // namespace engine::autograd

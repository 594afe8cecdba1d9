// gradcheck.h: numerical checks of backward formulas (DESIGN.md section 8).
//
// gradcheck(f, inputs): compares the analytical vector-Jacobian product v^T J (one backward pass)
// with central differences (f(x + eps e_i) - f(x - eps e_i)) . v / (2 eps) for every element i of
// every floating input that requires grad, for two random vectors v. Inputs should be f64.
// gradgradcheck(f, inputs): the same check applied to the function
//   (inputs, v) -> sum_i <grad(f, input_i, v, create_graph), u_i>
// for random u_i, which exercises every double-backward formula that R1 relies on.
// Both return an empty string on success, otherwise a description of the worst mismatch.
#pragma once
#include <functional>
#include <string>

#include "tensor/tensor.h"

namespace engine::autograd {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-5;
  double rtol = 1e-3;
  uint64_t seed = 1234;
};

using TestFunction = std::function<Tensor(const TensorList&)>;

std::string gradcheck(const TestFunction& f, const TensorList& inputs, const GradcheckOptions& o = {});
std::string gradgradcheck(const TestFunction& f, const TensorList& inputs, const GradcheckOptions& o = {});

}  // namespace engine::autograd

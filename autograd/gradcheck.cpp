// gradcheck.cpp: central differences against backward, and against double backward.
#include "autograd/gradcheck.h"

#include <cmath>

#include "autograd/engine.h"
#include "tensor/ops.h"

namespace engine::autograd {

namespace {

double dot(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = a.to_vector(), y = b.to_vector();
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += x[i] * y[i];
  return s;
}

// Element i of a tensor (logical order) as a pointer into its f64 storage.
double* element(const Tensor& t, int64_t i) {
  int64_t off = 0, rem = i;
  for (int d = t.dim() - 1; d >= 0; --d) {
    off += (rem % t.sizes()[d]) * t.strides()[d];
    rem /= t.sizes()[d];
  }
  return t.data<double>() + off;
}

}  // namespace

std::string gradcheck(const TestFunction& f, const TensorList& inputs, const GradcheckOptions& o) {
  for (const Tensor& x : inputs)
    if (x.defined() && x.requires_grad() && x.dtype() != DType::f64)
      return "gradcheck: inputs that require grad must be f64";
  Generator gen(o.seed);
  std::string worst;
  double worst_excess = 0;
  for (int trial = 0; trial < 2; ++trial) {
    Tensor out = f(inputs);
    Tensor v = randn(out.sizes(), gen, opts(DType::f64));
    TensorList wrt;
    std::vector<size_t> which;
    for (size_t k = 0; k < inputs.size(); ++k)
      if (inputs[k].defined() && inputs[k].requires_grad()) {
        wrt.push_back(inputs[k]);
        which.push_back(k);
      }
    TensorList analytic = grad({out}, wrt, {v}, false, /*allow_unused=*/true);
    for (size_t w = 0; w < wrt.size(); ++w) {
      const Tensor& x = wrt[w];
      std::vector<double> a = analytic[w].defined() ? analytic[w].to_vector() : std::vector<double>(size_t(x.numel()));
      for (int64_t i = 0; i < x.numel(); ++i) {
        double* p = element(x, i);
        const double saved = *p;
        double plus, minus;
        {
          NoGradGuard no_grad;
          *p = saved + o.eps;
          plus = dot(f(inputs), v);
          *p = saved - o.eps;
          minus = dot(f(inputs), v);
          *p = saved;
        }
        const double numeric = (plus - minus) / (2 * o.eps);
        const double diff = std::abs(numeric - a[size_t(i)]);
        const double allowed = o.atol + o.rtol * std::abs(numeric);
        if (!(diff <= allowed) && diff - allowed >= worst_excess) {
          worst_excess = std::isnan(diff) ? 1e300 : diff - allowed;
          worst = fmt::format("input #{} element {}: analytical {:.10g} vs numerical {:.10g} (trial {})", which[w], i,
                              a[size_t(i)], numeric, trial);
        }
      }
    }
  }
  return worst;
}

std::string gradgradcheck(const TestFunction& f, const TensorList& inputs, const GradcheckOptions& o) {
  Generator gen(o.seed + 17);
  Tensor probe = f(inputs);
  Tensor v = randn(probe.sizes(), gen, opts(DType::f64)).requires_grad_(true);
  TensorList us;
  for (const Tensor& x : inputs)
    us.push_back(x.defined() && x.requires_grad() ? randn(x.sizes(), gen, opts(DType::f64)) : Tensor());
  TensorList extended = inputs;
  extended.push_back(v);
  return gradcheck(
      [&](const TensorList& xs) -> Tensor {
        TensorList ins(xs.begin(), xs.end() - 1);
        const Tensor& vv = xs.back();
        const bool differentiable = grad_enabled();
        GradModeGuard on(true);
        Tensor out = f(ins);
        TensorList wrt;
        std::vector<size_t> which;
        for (size_t k = 0; k < ins.size(); ++k)
          if (ins[k].defined() && ins[k].requires_grad()) {
            wrt.push_back(ins[k]);
            which.push_back(k);
          }
        TensorList gs = grad({out}, wrt, {vv}, /*create_graph=*/differentiable, /*allow_unused=*/true);
        GradModeGuard mode(differentiable);
        Tensor total = zeros({}, opts(DType::f64));
        for (size_t w = 0; w < wrt.size(); ++w)
          if (gs[w].defined()) total = add(total, sum(mul(gs[w], us[which[w]])));
        return total;
      },
      extended, o);
}

}  // namespace engine::autograd

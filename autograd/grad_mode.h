// grad_mode.h: whether ops record autograd Nodes on this thread.
//
// Off inside NoGradGuard (optimizer steps, EMA, init) and inside the backward pass unless
// create_graph is set, which is what makes double backward possible: with create_graph the
// backward formulas (themselves made of differentiable ops) record a new graph.
#pragma once

namespace engine::autograd {

bool grad_enabled();
void set_grad_enabled(bool on);

class NoGradGuard {
 public:
  NoGradGuard() : previous_(grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(previous_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

class GradModeGuard {
 public:
  explicit GradModeGuard(bool on) : previous_(grad_enabled()) { set_grad_enabled(on); }
  ~GradModeGuard() { set_grad_enabled(previous_); }
  GradModeGuard(const GradModeGuard&) = delete;
  GradModeGuard& operator=(const GradModeGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace engine::autograd

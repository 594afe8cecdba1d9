// losses.cpp: the adversarial losses of nn/losses.h, written with differentiable ops only.
#include "nn/losses.h"

#include <string>

#include "autograd/engine.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace engine::nn {

namespace {

void check_logits(const Tensor& l, const char* op) {
  ENGINE_CHECK(l.defined(), "{}: undefined logits", op);
  ENGINE_CHECK(l.numel() > 0, "{}: empty logits {}", op, l.sizes().str());
}

// Sum over a list of predictions of a per-prediction loss; the list must not be empty (an empty
// list would be a silent zero loss, almost surely a wiring bug).
template <class F>
Tensor sum_over(const TensorList& xs, const char* op, F&& per) {
  ENGINE_CHECK(!xs.empty(), "{}: empty list of predictions", op);
  Tensor total;
  for (const Tensor& x : xs) {
    Tensor l = per(x);
    total = total.defined() ? add(total, l) : l;
  }
  return total;
}

void check_same_length(const TensorList& a, const TensorList& b, const char* op, const char* na, const char* nb) {
  ENGINE_CHECK(a.size() == b.size(), "{}: {} has {} predictions but {} has {} (they must pair up head by head)", op,
               na, a.size(), nb, b.size());
}

}  // namespace

Tensor d_loss_real(const Tensor& logits) {
  check_logits(logits, "d_loss_real");
  return mean(softplus(neg(logits)));
}

Tensor d_loss_fake(const Tensor& logits) {
  check_logits(logits, "d_loss_fake");
  return mean(softplus(logits));
}

Tensor g_loss(const Tensor& logits_fake) {
  check_logits(logits_fake, "g_loss");
  return mean(softplus(neg(logits_fake)));
}

Tensor d_loss_real(const TensorList& logits) {
  return sum_over(logits, "d_loss_real", [](const Tensor& l) { return d_loss_real(l); });
}

Tensor d_loss_fake(const TensorList& logits) {
  return sum_over(logits, "d_loss_fake", [](const Tensor& l) { return d_loss_fake(l); });
}

Tensor g_loss(const TensorList& logits_fake) {
  return sum_over(logits_fake, "g_loss", [](const Tensor& l) { return g_loss(l); });
}

Tensor d_loss(const TensorList& logits_real, const TensorList& logits_fake) {
  check_same_length(logits_real, logits_fake, "d_loss", "logits_real", "logits_fake");
  return add(d_loss_real(logits_real), d_loss_fake(logits_fake));
}

Tensor roll_batch(const Tensor& t, int64_t shift) {
  ENGINE_CHECK(t.defined() && t.dim() >= 1, "roll_batch: expected a tensor with a batch dimension");
  const int64_t b = t.size(0);
  ENGINE_CHECK(b >= 1, "roll_batch: empty batch {}", t.sizes().str());
  const int64_t s = ((shift % b) + b) % b;  // C++ % keeps the sign of the dividend
  if (s == 0) return t;
  // out[i] = t[(i - s) mod B]: the last s rows come first.
  return cat({narrow(t, 0, b - s, s), narrow(t, 0, 0, b - s)}, 0);
}

Tensor d_match_loss(const TensorList& logits_real_mismatched, const TensorList& logits_fake_mismatched) {
  check_same_length(logits_real_mismatched, logits_fake_mismatched, "d_match_loss", "logits_real_mismatched",
                    "logits_fake_mismatched");
  // Both mismatched pairs are negatives for D, hence the "fake" form for both.
  return add(sum_over(logits_real_mismatched, "d_match_loss", [](const Tensor& l) { return d_loss_fake(l); }),
             sum_over(logits_fake_mismatched, "d_match_loss", [](const Tensor& l) { return d_loss_fake(l); }));
}

Tensor g_match_loss(const TensorList& logits_fake_mismatched) {
  // Same sign as D's term (see the header): G wants its image rejected under the wrong caption.
  return sum_over(logits_fake_mismatched, "g_match_loss", [](const Tensor& l) { return d_loss_fake(l); });
}

// Note [R1 double backward] (DESIGN.md section 7): grad() is pruned to `inputs`, so this first
// pass computes no weight gradients; create_graph records the formulas so backward(r1) reaches
// the weights.
Tensor r1_penalty(const TensorList& outputs, const TensorList& inputs, double gamma) {
  ENGINE_CHECK(!outputs.empty(), "r1_penalty: empty list of outputs");
  ENGINE_CHECK(!inputs.empty(), "r1_penalty: empty list of inputs");
  int64_t batch = -1;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    ENGINE_CHECK(x.defined() && x.dim() >= 1, "r1_penalty: input {} is undefined or has no batch dimension", i);
    ENGINE_CHECK(x.requires_grad(), "r1_penalty: input {} {} does not require grad", i, x.sizes().str());
    if (batch < 0) batch = x.size(0);
    ENGINE_CHECK(x.size(0) == batch, "r1_penalty: input {} has batch {} but input 0 has batch {}", i, x.size(0),
                 batch);
  }
  ENGINE_CHECK(batch > 0, "r1_penalty: empty batch");
  // sum of all outputs: one scalar, so one backward pass covers every prediction.
  Tensor total = sum_over(outputs, "r1_penalty", [](const Tensor& o) { return sum(o); });
  TensorList g = autograd::grad({total}, inputs, {}, /*create_graph=*/true, /*allow_unused=*/true);
  Tensor per_sample;  // [B]: sum over every input of the per-sample squared gradient norm
  for (size_t i = 0; i < g.size(); ++i) {
    ENGINE_CHECK(g[i].defined(), "r1_penalty: input {} {} is not reached from the outputs", i,
                 inputs[i].sizes().str());
    Tensor sq = sum(reshape(square(g[i]), {batch, -1}), {1});
    per_sample = per_sample.defined() ? add(per_sample, sq) : sq;
  }
  return mul(mean(per_sample), gamma / 2);
}

}  // namespace engine::nn

// ops_l2_attention.cpp: l2_attention_fused, Aurora's L2-distance attention as one op (math:
// Note [L2 attention logits], nn/attention.cpp; kernels: tensor/cpu/l2_attention.h), and its
// backward primitive.
//
// Why fused: the unfused form (GEMM, clamp, sqrt, neg, softmax, GEMM) keeps three Tq x Tk tensors
// per layer for backward (clamp's input, sqrt's output, softmax's output). At 32x32 px with 4
// images and 2 heads each one is 32 MiB, and they dominate the generator's peak memory. The fused
// forward keeps only its output and the per-row log-sum-exp lse [B, H, Tq]; the backward recomputes
// the attention matrix a block of rows at a time (as FlashAttention does, Dao et al. 2022).
// The discriminator's squared-distance logits (L2AttnForm::sq_distance, kernels/l2_attention.h) run
// through the same kernels. Backward formula: autograd/formulas/l2_attention.cpp.
// On CUDA (tensor/cuda/l2_attention.cu):
// one thread per query row with an online softmax forward, per-query and per-key kernels backward.
#include "autograd/formulas/l2_attention.h"
#include "autograd/grad_mode.h"
#include "tensor/cpu/l2_attention.h"
#if ENGINE_WITH_CUDA
#include "tensor/cuda/l2_attention.h"
#endif
#include "tensor/dispatch.h"
#include "tensor/op_helpers.h"
#include "tensor/ops.h"
#include "tensor/ops_l2_attention.h"

namespace engine {

namespace {

cpu::L2AttnGeom check_l2_attention(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, double eps,
                                   L2AttnForm form) {
  ENGINE_CHECK(q.defined() && k.defined() && v.defined(), "{}: undefined q, k or v", op);
  check_floating(op, q);
  check_same(op, q, k);
  check_same(op, q, v);
  ENGINE_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
               "{}: expected q [B, Tq, heads, d], k [B, Tk, heads, d], v [B, Tk, heads, dv], got shapes {}, {}, {}",
               op, q.sizes().str(), k.sizes().str(), v.sizes().str());
  ENGINE_CHECK(q.size(0) == k.size(0) && q.size(2) == k.size(2) && q.size(3) == k.size(3),
               "{}: q {} and k {} differ in batch, heads or head dim", op, q.sizes().str(), k.sizes().str());
  ENGINE_CHECK(v.size(0) == k.size(0) && v.size(1) == k.size(1) && v.size(2) == k.size(2),
               "{}: v {} does not match k {} in batch, tokens or heads", op, v.sizes().str(), k.sizes().str());
  ENGINE_CHECK(q.size(1) > 0 && k.size(1) > 0 && q.size(3) > 0 && v.size(3) > 0,
               "{}: empty tokens or head dim (q {}, k {}, v {})", op, q.sizes().str(), k.sizes().str(),
               v.sizes().str());
  ENGINE_CHECK(form == L2AttnForm::sq_distance || form == L2AttnForm::distance, "{}: unknown logit form {}", op,
               int(form));
  ENGINE_CHECK(form == L2AttnForm::sq_distance || eps > 0,
               "{}: eps must be positive (Note [L2 attention logits]), got {}", op, eps);
  cpu::L2AttnGeom g;
  g.B = q.size(0), g.Tq = q.size(1), g.Tk = k.size(1), g.H = q.size(2), g.d = q.size(3), g.dv = v.size(3);
  for (int i = 0; i < 4; ++i) g.qs[i] = q.stride(i), g.ks[i] = k.stride(i), g.vs[i] = v.stride(i);
  g.eps = form == L2AttnForm::distance ? eps : 0.0;
  g.form = form;
  return g;
}

}  // namespace

Tensor l2_attention_fused(const Tensor& q, const Tensor& k, const Tensor& v, double eps, L2AttnForm form) {
  ENGINE_OP("l2_attention_fused", q, k, v);
  const cpu::L2AttnGeom g = check_l2_attention("l2_attention_fused", q, k, v, eps, form);
  const TensorOptions o = opts(q.dtype(), q.device());
  Tensor out = empty({g.B, g.Tq, g.H * g.dv}, o);
  Tensor lse = empty({g.B, g.H, g.Tq}, o);
  if (use_cuda("l2_attention_fused", q)) {
#if ENGINE_WITH_CUDA
    cuda::l2_attention_forward(g, q, k, v, out, lse);
#endif
  } else dispatch_floating(q.dtype(), "l2_attention_fused", [&](auto zero) {
    using T = decltype(zero);
    cpu::l2_attention_forward<T>(g, q.data<T>(), k.data<T>(), v.data<T>(), out.data<T>(), lse.data<T>());
  });
  autograd::formulas::l2_attention_fused(q, k, v, out, lse, g.eps, form);
  return out;
}

L2AttentionGrads l2_attention_fused_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
                                             const Tensor& out, const Tensor& lse, double eps,
                                             const std::array<bool, 3>& needed, L2AttnForm form) {
  ENGINE_OP("l2_attention_fused_backward", grad_out, q, k, v);
  autograd::NoGradGuard no_grad;  // a primitive without a backward: it records nothing
  const char* op = "l2_attention_fused_backward";
  const cpu::L2AttnGeom g = check_l2_attention(op, q, k, v, eps, form);
  const Dims out_shape{g.B, g.Tq, g.H * g.dv};
  ENGINE_CHECK(grad_out.defined() && grad_out.sizes() == out_shape, "{}: grad_out has shape {}, expected {}", op,
               grad_out.defined() ? grad_out.sizes().str() : std::string("undefined"), out_shape.str());
  ENGINE_CHECK(out.defined() && out.sizes() == out_shape, "{}: out has shape {}, expected {}", op,
               out.defined() ? out.sizes().str() : std::string("undefined"), out_shape.str());
  ENGINE_CHECK(lse.defined() && lse.sizes() == Dims({g.B, g.H, g.Tq}), "{}: lse has shape {}, expected [{},{},{}]", op,
               lse.defined() ? lse.sizes().str() : std::string("undefined"), g.B, g.H, g.Tq);
  check_same(op, q, grad_out);
  check_same(op, q, out);
  check_same(op, q, lse);
  const Tensor go = contiguous(grad_out), oc = contiguous(out), lc = contiguous(lse);
  const TensorOptions o = opts(q.dtype(), q.device());
  L2AttentionGrads r;
  if (needed[0]) r.q = empty(q.sizes(), o);
  if (needed[1]) r.k = empty(k.sizes(), o);
  if (needed[2]) r.v = empty(v.sizes(), o);
  if (!needed[0] && !needed[1] && !needed[2]) return r;
  if (use_cuda(op, q)) {
#if ENGINE_WITH_CUDA
    cuda::l2_attention_backward(g, go, q, k, v, oc, lc, r.q, r.k, r.v);
#endif
    return r;
  }
  dispatch_floating(q.dtype(), op, [&](auto zero) {
    using T = decltype(zero);
    auto ptr = [](const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; };
    cpu::l2_attention_backward<T>(g, go.data<T>(), q.data<T>(), k.data<T>(), v.data<T>(), oc.data<T>(), lc.data<T>(),
                                  ptr(r.q), ptr(r.k), ptr(r.v));
  });
  return r;
}

}  // namespace engine

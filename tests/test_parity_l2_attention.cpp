// PyTorch parity of the fused L2 attention op l2_attention_fused (tensor/ops_l2_attention.h) in
// both logit forms, against tests/parity/ref_l2_attention.py (the definitions with plain torch
// ops; the sq_distance reference uses the full squared distance, which the op reduces to
// (2 q.k - |k|^2) / sqrt(d)):
//   * forward, first gradients and double backward through the create_graph path (parity.h's
//     scheme: grad with create_graph=true, then the gradients of S = sum <grad, u>);
//   * the first-order gradients of the fused kernels (create_graph=false, the path training
//     runs) against the same recorded gradients;
// untied and tied (q = k one tensor, as nn/disc_attention.cpp calls it), f32 and f64, Tq over
// two 64-row blocks. Tolerances: parity.h's defaults (f32 rtol 1e-4 / atol 1e-5, f64 1e-9 /
// 1e-11); the f32 logits round differently (no row constant in ours), within them.
#include "tensor/ops_l2_attention.h"
#include "tests/parity/parity.h"

using namespace engine;

namespace {

parity::Reference& ref() {
  static parity::Reference r("ref_l2_attention.py");
  return r;
}

// The op in the reference's calling convention: inputs (q, k, v) or, tied, (x, v).
parity::CaseFn op(L2AttnForm form, bool tied) {
  return [form, tied](const TensorList& in) {
    const Tensor& q = in[0];
    const Tensor& k = tied ? in[0] : in[1];
    const Tensor& v = tied ? in[1] : in[2];
    return TensorList{l2_attention_fused(q, k, v, 1e-6, form)};
  };
}

// First-order gradients through the fused backward kernels (no create_graph) against the
// reference's grad/i.
void check_first_order(const std::string& name, L2AttnForm form, bool tied) {
  INFO("first-order (fused kernels) case " << name);
  const std::string p = name + "/";
  TensorList in;
  for (size_t i = 0; ref().has(p + "in/" + std::to_string(i)); ++i)
    in.push_back(clone(ref().at(p + "in/" + std::to_string(i))).requires_grad_(true));
  const Tensor out = op(form, tied)(in)[0];
  const TensorList g = autograd::grad({out}, in, {ref().at(p + "go/0")}, /*create_graph=*/false);
  REQUIRE(g.size() == in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    REQUIRE(g[i].defined());
    CHECK_FALSE(g[i].requires_grad());
    const parity::Diff d = parity::compare(g[i], ref().at(p + "grad/" + std::to_string(i)),
                                           parity::default_tol(in[0].dtype()));
    CHECK_MESSAGE(d.ok, name << " grad/" << i << ": " << d.detail);
  }
}

}  // namespace

TEST_CASE("parity l2_attention_fused: sq_distance (the discriminator's form), untied and tied") {
  for (const char* c : {"sq.f32", "sq.f64"}) {
    ref().run(c, op(L2AttnForm::sq_distance, false));
    check_first_order(c, L2AttnForm::sq_distance, false);
  }
  for (const char* c : {"sq.tied.f32", "sq.tied.f64"}) {
    ref().run(c, op(L2AttnForm::sq_distance, true));
    check_first_order(c, L2AttnForm::sq_distance, true);
  }
}

TEST_CASE("parity l2_attention_fused: distance (the generator's form)") {
  for (const char* c : {"dist.f32", "dist.f64"}) {
    ref().run(c, op(L2AttnForm::distance, false));
    check_first_order(c, L2AttnForm::distance, false);
  }
}

TEST_CASE("parity l2_attention_fused: every reference case ran") { ref().check_all_run(); }

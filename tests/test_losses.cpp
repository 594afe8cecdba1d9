// The GAN losses of nn/losses.h (adversarial, matching-aware, R1) against PyTorch
// (tests/parity/ref_losses.py): values and first gradients in f64 and f32, and for r1_penalty the
// gradient w.r.t. the parameters of a tiny two-level discriminator, which is D's double backward
// (Note [R1 double backward]). Plus roll_batch values and the errors for mismatched lists.
// Tolerances: parity.h's defaults (f32 rtol 1e-4 / atol 1e-5, f64 rtol 1e-9 / atol 1e-11); the
// cases are a handful of elements, so nothing wider is needed.
// If /usr/bin/python3 or torch is missing, every parity test FAILS with the script's output.
#include <string>

#include "autograd/engine.h"
#include "nn/losses.h"
#include "tests/parity/parity.h"

using namespace engine;

namespace {

parity::Reference& ref() {
  static parity::Reference r("ref_losses.py");
  return r;
}

const char* const kDtypes[] = {"f64", "f32"};

// The discriminator of ref_losses.py's r1 case: two input levels, three [B] predictions.
TensorList tiny_disc(const Tensor& x0, const Tensor& x1, const Tensor& w0, const Tensor& w1) {
  Tensor h0 = tanh(matmul(x0, transpose(w0, 0, 1)));
  Tensor h1 = tanh(add(matmul(flatten(x1, 1), transpose(w1, 0, 1)), h0));
  return {sum(h0, {1}), sum(h1, {1}), sum(mul(h0, h1), {1})};
}

// Throws an engine::Error whose message contains `needle`.
template <class F>
void check_throws_with(F&& f, const std::string& needle) {
  bool thrown = false;
  try {
    f();
  } catch (const Error& e) {
    thrown = true;
    INFO("message: " << e.what());
    CHECK(std::string(e.what()).find(needle) != std::string::npos);
  }
  CHECK_MESSAGE(thrown, "expected an engine::Error containing '" << needle << "'");
}

Tensor vec(std::initializer_list<double> v) {
  return from_vector(std::vector<double>(v), {int64_t(v.size())}, opts(DType::f64));
}

}  // namespace

TEST_CASE("non-saturating logistic losses match PyTorch (single tensor, f64 and f32)") {
  for (const char* dt : kDtypes) {
    ref().run(std::string("adv.") + dt, [](const TensorList& in) {
      return TensorList{nn::d_loss_real(in[0]), nn::d_loss_fake(in[0]), nn::g_loss(in[0])};
    });
  }
}

TEST_CASE("multi-scale list losses sum over the predictions (f64 and f32)") {
  for (const char* dt : kDtypes) {
    ref().run(std::string("adv_list.") + dt, [](const TensorList& in) {
      const TensorList real{in[0], in[1], in[2]}, fake{in[3], in[4], in[5]};
      return TensorList{nn::d_loss(real, fake), nn::g_loss(fake), nn::d_loss_real(real), nn::d_loss_fake(fake)};
    });
  }
}

TEST_CASE("matching-aware loss, D and (inferred) G sides (f64 and f32)") {
  for (const char* dt : kDtypes) {
    ref().run(std::string("match.") + dt, [](const TensorList& in) {
      const TensorList real_mm{in[0], in[1]}, fake_mm{in[2], in[3]};
      return TensorList{nn::d_match_loss(real_mm, fake_mm), nn::g_match_loss(fake_mm)};
    });
  }
}

TEST_CASE("roll_batch is torch.roll along dim 0, with its gradient (f64 and f32)") {
  for (const char* dt : kDtypes) {
    ref().run(std::string("roll.") + dt, [](const TensorList& in) {
      return TensorList{nn::roll_batch(in[0], 1), nn::roll_batch(in[0], -2), nn::roll_batch(in[0], 7),
                        nn::roll_batch(in[0], 0), nn::roll_batch(in[0], 5)};
    });
  }
  // By hand, independent of the reference: [0, 1, 2, 3] rolled by 1 is [3, 0, 1, 2].
  const Tensor t = vec({0, 1, 2, 3});
  CHECK(nn::roll_batch(t, 1).to_vector() == std::vector<double>{3, 0, 1, 2});
  CHECK(nn::roll_batch(t, -1).to_vector() == std::vector<double>{1, 2, 3, 0});
  CHECK(nn::roll_batch(t, 6).to_vector() == std::vector<double>{2, 3, 0, 1});
  CHECK(nn::roll_batch(vec({5}), 1).to_vector() == std::vector<double>{5});
  check_throws_with([] { nn::roll_batch(full({}, 1.0, opts(DType::f64)), 1); }, "roll_batch");
}

TEST_CASE("r1_penalty over a two-level input pyramid, including the double backward to W (f64 and f32)") {
  for (const char* dt : kDtypes) {
    ref().run(std::string("r1.") + dt, [](const TensorList& in) {
      const TensorList outs = tiny_disc(in[0], in[1], in[2], in[3]);
      return TensorList{nn::r1_penalty(outs, {in[0], in[1]}, 0.75)};
    });
  }
}

TEST_CASE("r1_penalty accumulates into the weights through backward() (lazy R1 usage)") {
  // Same network as the r1 case, but the way training uses it: backward(r1) into leaf .grad().
  const std::string p = "r1.f64/";
  Tensor x0 = clone(ref().at(p + "in/0")).requires_grad_(true);
  Tensor x1 = clone(ref().at(p + "in/1")).requires_grad_(true);
  Tensor w0 = clone(ref().at(p + "in/2")).requires_grad_(true);
  Tensor w1 = clone(ref().at(p + "in/3")).requires_grad_(true);
  Tensor r1 = nn::r1_penalty(tiny_disc(x0, x1, w0, w1), {x0, x1}, 0.75);
  autograd::backward(r1);
  // ref grad/i was taken with a random grad_output go; divide it out.
  const double go = ref().at(p + "go/0").to_vector().at(0);
  const auto ours = w0.grad().to_vector(), theirs = ref().at(p + "grad/2").to_vector();
  REQUIRE(ours.size() == theirs.size());
  for (size_t i = 0; i < ours.size(); ++i) CHECK(ours[i] == doctest::Approx(theirs[i] / go).epsilon(1e-9));
}

TEST_CASE("every reference case was compared") { ref().check_all_run(); }

TEST_CASE("clear errors for mismatched or empty lists and bad R1 inputs") {
  const Tensor a = vec({0.5, -1.0}), b = vec({2.0, 1.0});
  check_throws_with([&] { nn::d_loss({a, b}, {a}); }, "logits_real has 2 predictions but logits_fake has 1");
  check_throws_with([&] { nn::d_match_loss({a}, {a, b}); }, "d_match_loss");
  check_throws_with([&] { nn::g_loss(TensorList{}); }, "empty list");
  check_throws_with([&] { nn::d_loss_real(TensorList{}); }, "empty list");

  Tensor x0 = clone(vec({1.0, 2.0})).requires_grad_(true);
  Tensor x1 = clone(vec({1.0, 2.0, 3.0})).requires_grad_(true);
  Tensor unused = clone(vec({1.0, 2.0})).requires_grad_(true);
  Tensor nograd = vec({1.0, 2.0});
  check_throws_with([&] { nn::r1_penalty({square(x0)}, {x0, x1}, 1.0); }, "input 1 has batch 3 but input 0 has batch 2");
  check_throws_with([&] { nn::r1_penalty({square(x0)}, {x0, unused}, 1.0); }, "input 1 [2] is not reached");
  check_throws_with([&] { nn::r1_penalty({square(x0)}, {nograd}, 1.0); }, "does not require grad");
  check_throws_with([&] { nn::r1_penalty({}, {x0}, 1.0); }, "empty list of outputs");
  // And a value by hand: D(x) = x^2 per sample, g = 2x, r1 = gamma/2 * mean(4 x^2) = 1/2 * 10 = 5.
  CHECK(nn::r1_penalty({square(x0)}, {x0}, 1.0).item() == doctest::Approx(5.0));
}

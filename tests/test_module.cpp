// nn::Module and ParameterStore: names, meta-mode counting, the flat buffers, initialisation.
#include <doctest/doctest.h>

#include "autograd/engine.h"
#include "nn/module.h"
#include "tensor/ops.h"

using namespace engine;
using namespace engine::nn;

namespace {
struct Leaf : Module {
  Parameter& weight;
  Parameter& bias;
  Leaf(int64_t out, int64_t in)
      : Module("Leaf"),
        weight(register_parameter("weight", {out, in}, Init::normal(1.0))),
        bias(register_parameter("bias", {out}, Init::constant(1.0), 0.01, false)) {}
};
struct Tree : Module {
  Leaf& a;
  Leaf& b;
  Buffer& w_avg;
  Tree() : Module("Tree"), a(register_module<Leaf>("a", 3, 2)), b(register_module<Leaf>("b", 4, 3)),
           w_avg(register_buffer("w_avg", {3}, Init::zeros())) {}
};
}  // namespace

TEST_CASE("names follow the state_dict convention and meta mode counts without allocating") {
  Tree t;
  auto params = t.named_parameters();
  REQUIRE(params.size() == 4);
  CHECK(params[0].first == "a.weight");
  CHECK(params[1].first == "a.bias");
  CHECK(params[2].first == "b.weight");
  CHECK(params[3].first == "b.bias");
  const int64_t live_before = memory::stats(Device::cpu()).live;
  CHECK(t.num_parameters() == 3 * 2 + 3 + 4 * 3 + 4);
  CHECK(memory::stats(Device::cpu()).live == live_before);
  CHECK_FALSE(t.a.weight.value.defined());
  CHECK(t.named_buffers()[0].first == "w_avg");
}

TEST_CASE("materialize lays parameters out in one flat buffer with views for values and grads") {
  Tree t;
  ParameterStore store;
  store.materialize(t, 7);
  CHECK(store.numel() == 25);
  CHECK(t.a.weight.offset == 0);
  CHECK(t.a.bias.offset == 6);
  CHECK(t.b.weight.offset == 9);
  CHECK(t.b.bias.offset == 21);
  CHECK(t.a.weight.value.storage() == store.flat_params().storage());
  CHECK(t.b.bias.value.grad().storage() == store.flat_grads().storage());
  CHECK(t.a.bias.value.to_vector() == std::vector<double>{1, 1, 1});
  CHECK(t.a.bias.lr_mul == 0.01);
  // Element j of the flat buffer is normal_at(seed, j): a's weight equals a fresh draw at offset 0.
  Generator g(7, 0);
  CHECK(t.a.weight.value.to_vector() == randn({3, 2}, g).to_vector());
  Generator g2(7, 9);
  CHECK(t.b.weight.value.to_vector() == randn({4, 3}, g2).to_vector());
  CHECK(t.w_avg.value.to_vector() == std::vector<double>{0, 0, 0});
}

TEST_CASE("backward accumulates into the flat gradient buffer; zero_grad clears it") {
  Tree t;
  ParameterStore store;
  store.materialize(t, 1);
  Tensor x = from_vector({1.0, 2.0}, {2});
  Tensor y = sum(mul(mul(t.a.weight.value, x), 2.0));  // d/dW[i][j] = 2 x[j]
  autograd::backward(y);
  auto g = store.flat_grads().to_vector();
  CHECK(g[0] == doctest::Approx(2.0));
  CHECK(g[1] == doctest::Approx(4.0));
  CHECK(g[4] == doctest::Approx(2.0));
  CHECK(g[6] == 0.0);  // a.bias unused
  autograd::backward(sum(mul(mul(t.a.weight.value, x), 2.0)));
  CHECK(store.flat_grads().to_vector()[1] == doctest::Approx(8.0));
  store.zero_grad();
  for (double v : store.flat_grads().to_vector()) CHECK(v == 0.0);
}

TEST_CASE("bad registrations are reported") {
  struct Bad : Module {
    Bad() : Module("Bad") {
      register_parameter("w", {1}, Init::zeros());
      register_parameter("w", {1}, Init::zeros());
    }
  };
  CHECK_THROWS_WITH_AS(Bad(), doctest::Contains("registered twice"), Error);
  struct Dotted : Module {
    Dotted() : Module("Dotted") { register_parameter("a.b", {1}, Init::zeros()); }
  };
  CHECK_THROWS_WITH_AS(Dotted(), doctest::Contains("invalid member name"), Error);
}

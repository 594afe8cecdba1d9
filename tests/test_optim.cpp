// AdamW and EMA over the flat buffers against torch.optim.AdamW and torch.lerp
// (tests/parity/ref_optim.py), in f64.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <string>

#include "autograd/grad_mode.h"
#include "io/safetensors.h"
#include "nn/adamw.h"
#include "nn/ema.h"
#include "tensor/ops.h"

using namespace engine;
using namespace engine::nn;

namespace {
struct Two : Module {
  Parameter& a;
  Parameter& b;
  Two()
      : Module("Two"),
        a(register_parameter("a", {3, 4}, Init::zeros())),
        b(register_parameter("b", {5}, Init::zeros(), 1.0, /*weight_decay=*/false)) {}
};

void require_close(const Tensor& ours, const Tensor& ref, const char* what) {
  const auto x = ours.to_vector(), y = ref.to_vector();
  REQUIRE(x.size() == y.size());
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::abs(x[i] - y[i]));
  INFO(what << ": max abs error " << worst);
  CHECK(worst < 1e-12);
}
}  // namespace

TEST_CASE("AdamW matches torch.optim.AdamW (betas (0, 0.99), decoupled decay, per-parameter lr scale)") {
  const std::string path = std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") +
                           "/engine_ref_optim_" + std::to_string(::getpid()) + ".safetensors";
  const std::string cmd = std::string(ENGINE_PYTHON) + " " + ENGINE_SOURCE_DIR + "/tests/parity/ref_optim.py " + path;
  REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0,
                  "the reference script failed: " << cmd << " (needs /usr/bin/python3 with python3-torch)");
  auto ref = io::load_safetensors(path);
  std::remove(path.c_str());

  Two model;
  ParameterStore store;
  store.materialize(model, 0, opts(DType::f64));
  {
    autograd::NoGradGuard ng;
    copy_(model.a.value, ref.at("a0"));
    copy_(model.b.value, ref.at("b0"));
  }
  AdamW opt(store, {0.01, 0.0, 0.99, 1e-8, 0.1}, [](const std::string& name) { return name == "b" ? 0.1 : 1.0; });
  for (int step = 0; step < 3; ++step) {
    {
      autograd::NoGradGuard ng;
      copy_(model.a.value.grad(), ref.at("ga" + std::to_string(step)));
      copy_(model.b.value.grad(), ref.at("gb" + std::to_string(step)));
    }
    opt.step();
    require_close(model.a.value, ref.at("a" + std::to_string(step + 1)), "a");
    require_close(model.b.value, ref.at("b" + std::to_string(step + 1)), "b");
  }

  Two ema_model;
  ParameterStore ema_store;
  ema_store.materialize(ema_model, 0, opts(DType::f64));
  {
    autograd::NoGradGuard ng;
    copy_(ema_model.a.value, ref.at("a0"));
  }
  Ema ema(store, ema_store);
  ema.update(0.9);
  require_close(ema_model.a.value, ref.at("ema_a"), "ema");
  CHECK(Ema::beta_for(32, 10000) == doctest::Approx(std::pow(0.5, 32.0 / 10000)));
}

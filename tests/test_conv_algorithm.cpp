// test_conv_algorithm.cpp: the convolution algorithm policy (tensor/conv_algorithm.h) and its
// train config key (aurora/train_config.h train.conv_algorithm), on the CPU.
//
//  1. The policy: default im2col, set/get, RAII scopes nest and restore, per thread (a new
//     thread starts at im2col), names and parsing (a bad name is an error naming the key).
//  2. CPU tensors ignore the policy (the documented choice: the CPU has one convolution): conv2d,
//     conv_transpose2d and conv2d_weight, forward and backward, give bit-identical results under
//     ConvAlgorithmScope(cudnn) and im2col, and no error, in every build.
//  3. Builds without cuDNN (this one unless ENGINE_CUDNN is on): require_cudnn throws a message
//     that says how to build with it.
//  4. train.conv_algorithm: default "im2col", "cudnn" accepted with a CUDA device, an unknown
//     value or "cudnn" on the CPU is an error naming config.train.conv_algorithm; the JSON round
//     trip keeps it; the resolved trainer config of a CUDA device with "cudnn" is refused at start
//     (resolve_train_device) when the build cannot run it.
#include <doctest/doctest.h>

#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "aurora/train_config.h"
#include "aurora/trainer.h"
#include "autograd/engine.h"
#include "tensor/conv_algorithm.h"
#include "tensor/ops.h"

using namespace engine;
using nlohmann::json;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}
bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

Tensor rnd(const Dims& shape, uint64_t seed) {
  Generator gen(seed);
  Tensor t = randn(shape, gen);
  t.requires_grad_(true);
  return t;
}

// The output and every input gradient of f(inputs) (backward with a fixed upstream gradient).
std::vector<std::vector<double>> run(const std::vector<Tensor>& inputs,
                                     const std::function<Tensor(const std::vector<Tensor>&)>& f) {
  const Tensor y = f(inputs);
  Generator gen(77);
  const Tensor up = randn(y.sizes(), gen);
  TensorList wrt(inputs.begin(), inputs.end());
  const TensorList g = autograd::grad({y}, wrt, {up}, false, true, false);
  std::vector<std::vector<double>> out = {y.to_vector()};
  for (const Tensor& t : g) out.push_back(t.defined() ? t.to_vector() : std::vector<double>());
  return out;
}

}  // namespace

TEST_CASE("conv algorithm policy: default, scopes, threads, names") {
  CHECK(conv_algorithm() == ConvAlgorithm::im2col);
  {
    ConvAlgorithmScope a(ConvAlgorithm::cudnn);
    CHECK(conv_algorithm() == ConvAlgorithm::cudnn);
    {
      ConvAlgorithmScope b(ConvAlgorithm::im2col);
      CHECK(conv_algorithm() == ConvAlgorithm::im2col);
    }
    CHECK(conv_algorithm() == ConvAlgorithm::cudnn);
    // Per thread: another thread starts at the default.
    ConvAlgorithm seen = ConvAlgorithm::cudnn;
    std::thread t([&] { seen = conv_algorithm(); });
    t.join();
    CHECK(seen == ConvAlgorithm::im2col);
  }
  CHECK(conv_algorithm() == ConvAlgorithm::im2col);
  set_conv_algorithm(ConvAlgorithm::cudnn);
  CHECK(conv_algorithm() == ConvAlgorithm::cudnn);
  set_conv_algorithm(ConvAlgorithm::im2col);

  CHECK(std::string(conv_algorithm_name(ConvAlgorithm::im2col)) == "im2col");
  CHECK(std::string(conv_algorithm_name(ConvAlgorithm::cudnn)) == "cudnn");
  CHECK(parse_conv_algorithm("im2col", "k") == ConvAlgorithm::im2col);
  CHECK(parse_conv_algorithm("cudnn", "k") == ConvAlgorithm::cudnn);
  for (const char* bad : {"cuDNN", "gemm", ""}) {
    INFO(bad);
    const std::string e = error_of([&] { parse_conv_algorithm(bad, "--conv-algorithm"); });
    CHECK(has(e, "--conv-algorithm: unknown conv algorithm \"" + std::string(bad) + "\""));
    CHECK(has(e, "\"im2col\" or \"cudnn\""));
  }
}

TEST_CASE("conv algorithm policy: CPU tensors ignore it (bit-identical results, forward and backward)") {
  struct Geometry {
    const char* name;
    int64_t n, cin, h, w, cout, k, stride, pad, dil, groups;
  };
  const Geometry geometries[] = {{"3x3 pad 1", 2, 4, 6, 5, 6, 3, 1, 1, 1, 1},
                                 {"3x3 stride 2 groups 2 dilation 2", 2, 4, 9, 8, 6, 3, 2, 2, 2, 2},
                                 {"batch-grouped", 1, 6, 5, 5, 9, 3, 1, 1, 1, 3}};
  for (const Geometry& g : geometries) {
    CAPTURE(g.name);
    Conv2dParams p;
    p.stride_h = p.stride_w = g.stride;
    p.pad_h = p.pad_w = g.pad;
    p.dilation_h = p.dilation_w = g.dil;
    p.groups = g.groups;
    const int64_t ho = (g.h + 2 * g.pad - g.dil * (g.k - 1) - 1) / g.stride + 1;
    const int64_t wo = (g.w + 2 * g.pad - g.dil * (g.k - 1) - 1) / g.stride + 1;
    const std::vector<Tensor> conv_in = {rnd({g.n, g.cin, g.h, g.w}, 1), rnd({g.cout, g.cin / g.groups, g.k, g.k}, 2),
                                         rnd({g.cout}, 3)};
    const std::vector<Tensor> tr_in = {rnd({g.n, g.cout, ho, wo}, 4), conv_in[1], rnd({g.cin}, 5)};
    const std::vector<Tensor> wt_in = {conv_in[0], rnd({g.n, g.cout, ho, wo}, 6)};
    const auto conv = [&](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], p); };
    const auto transpose = [&](const std::vector<Tensor>& in) {
      return conv_transpose2d(in[0], in[1], in[2], p, g.stride - 1, 0);
    };
    const auto weight = [&](const std::vector<Tensor>& in) { return conv2d_weight(in[0], in[1], g.k, g.k, p); };
    const auto conv_ref = run(conv_in, conv), tr_ref = run(tr_in, transpose), wt_ref = run(wt_in, weight);
    ConvAlgorithmScope cudnn(ConvAlgorithm::cudnn);
    CHECK(run(conv_in, conv) == conv_ref);
    CHECK(run(tr_in, transpose) == tr_ref);
    CHECK(run(wt_in, weight) == wt_ref);
  }
}

TEST_CASE("conv algorithm policy: a build without cuDNN says how to get it") {
  if (cudnn_built()) {
    MESSAGE("this build has cuDNN (ENGINE_CUDNN=ON): require_cudnn is a no-op");
    CHECK(error_of([] { require_cudnn("here"); }) == "(no error)");
    return;
  }
  const std::string e = error_of([] { require_cudnn("conv2d"); });
  CHECK(has(e, "conv2d: conv algorithm \"cudnn\""));
  CHECK(has(e, "-DENGINE_CUDNN=ON"));
  CHECK(has(e, "\"im2col\""));
}

TEST_CASE("train config: conv_algorithm key") {
  using aurora::parse_train_config;
  CHECK(parse_train_config(json()).conv_algorithm == "im2col");
  CHECK(parse_train_config(json{{"conv_algorithm", "im2col"}}).conv_algorithm == "im2col");
  CHECK(parse_train_config(json{{"device", "cuda"}, {"conv_algorithm", "cudnn"}}).conv_algorithm == "cudnn");
  CHECK(has(error_of([] { parse_train_config(json{{"device", "cuda"}, {"conv_algorithm", "winograd"}}); }),
            "config.train.conv_algorithm: expected one of im2col, cudnn, got \"winograd\""));
  CHECK(has(error_of([] { parse_train_config(json{{"conv_algorithm", 1}}); }),
            "config.train.conv_algorithm: expected a string"));
  const std::string on_cpu = error_of([] { parse_train_config(json{{"conv_algorithm", "cudnn"}}); });
  CHECK(has(on_cpu, "config.train.conv_algorithm"));
  CHECK(has(on_cpu, "\"im2col\""));
  aurora::TrainConfig c;
  c.device = "cuda:1";
  c.conv_algorithm = "cudnn";
  CHECK(c.to_json().at("conv_algorithm") == "cudnn");
  CHECK(parse_train_config(c.to_json()).to_json() == c.to_json());
  // The trainer's start check: a build that cannot run cuDNN convolutions refuses the config (a
  // CPU-only build already refuses the CUDA device; a CUDA build without cuDNN names the key).
  if (!cudnn_built()) {
    const std::string e = error_of([&] { aurora::resolve_train_device(c, 1); });
    CHECK((has(e, "config.train.conv_algorithm") || has(e, "config.train.device")));
  }
}

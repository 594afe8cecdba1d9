// Tests of max_pool2d / avg_pool2d (tensor/ops_pool.cpp):
//   * PyTorch parity (tests/parity/ref_pool.py) over kernels, strides, paddings, both
//     count_include_pad modes, odd sizes, f32 and f64, and a non-contiguous input;
//   * values computed by hand on a 3x3 example (corner windows of count_include_pad = false);
//   * NaN propagation of max_pool2d; errors: a grad request, bad padding, wrong rank.
// Tolerances: f32 rtol 1e-6 atol 1e-7 (the same sums in a possibly different order), f64 1e-14.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "autograd/grad_mode.h"
#include "io/safetensors.h"
#include "tensor/ops.h"
#include "tests/parity/script_runner.h"

using namespace engine;

namespace {

struct PoolCase {
  bool max;
  Pool2dParams p;
  bool count_include_pad;
};

std::string spec(const PoolCase& c) {
  return std::string(c.max ? "max" : "avg") + "," + std::to_string(c.p.kernel_h) + "," + std::to_string(c.p.kernel_w) +
         "," + std::to_string(c.p.stride_h) + "," + std::to_string(c.p.stride_w) + "," + std::to_string(c.p.pad_h) +
         "," + std::to_string(c.p.pad_w) + "," + (c.count_include_pad ? "1" : "0");
}

void check_close(const Tensor& ours, const Tensor& ref, double rtol, double atol, const std::string& what) {
  REQUIRE_MESSAGE(ours.sizes() == ref.sizes(), what << ": shape " << ours.sizes().str() << " vs " << ref.sizes().str());
  const std::vector<double> a = ours.to_vector(), b = ref.to_vector();
  size_t bad = 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (!(std::fabs(a[i] - b[i]) <= atol + rtol * std::fabs(b[i]))) ++bad;
  CHECK_MESSAGE(bad == 0, what << ": " << bad << " of " << a.size() << " elements differ");
}

void run_parity(DType dtype) {
  const std::vector<PoolCase> cases = {
      {true, Pool2dParams::make(3, 2), false},        // the Inception stem / Mixed_6a / 7a
      {true, Pool2dParams::make(3, 1, 1), false},     // Mixed_7c's pool branch
      {false, Pool2dParams::make(3, 1, 1), false},    // the FID avg-pool branches
      {false, Pool2dParams::make(3, 1, 1), true},
      {false, Pool2dParams::make(2, 2), true},
      {false, Pool2dParams{5, 3, 2, 1, 2, 1}, false},  // rectangular, padded, strided
      {true, Pool2dParams{2, 4, 3, 2, 1, 2}, false},
      {false, Pool2dParams{4, 4, 3, 3, 2, 2}, true},
  };
  Generator g(7);
  // Odd sizes, and a non-contiguous view (a transposed spatial layout).
  const Tensor base = randn({2, 3, 12, 11}, g, opts(dtype));
  const Tensor x = transpose(base, 2, 3);  // [2, 3, 11, 12], strided
  const std::string dir = parity::make_tmpdir("pool");
  std::string all;
  for (const PoolCase& c : cases) all += (all.empty() ? "" : ";") + spec(c);
  io::save_safetensors(dir + "/in.safetensors", {{"x", x}}, {{"cases", all}});
  if (!parity::run_script("ref_pool.py", dir, {})) return;
  const auto ref = io::load_safetensors(dir + "/out.safetensors");
  const double rtol = dtype == DType::f32 ? 1e-6 : 1e-14, atol = dtype == DType::f32 ? 1e-7 : 1e-15;
  for (size_t i = 0; i < cases.size(); ++i) {
    const PoolCase& c = cases[i];
    const Tensor y = c.max ? max_pool2d(x, c.p) : avg_pool2d(x, c.p, c.count_include_pad);
    check_close(y, ref.at(std::to_string(i)), rtol, atol, spec(c));
  }
  std::system(("rm -rf " + dir).c_str());
}

}  // namespace

TEST_CASE("pool: PyTorch parity f32 and f64") {
  run_parity(DType::f32);
  run_parity(DType::f64);
}

TEST_CASE("pool: hand-computed 3x3 example") {
  // x = [[1 2 3] [4 5 6] [7 8 9]]; 3x3 windows, stride 1, padding 1.
  const Tensor x = from_vector({1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 1, 3, 3});
  const std::vector<double> avg_excl = avg_pool2d(x, Pool2dParams::make(3, 1, 1), false).to_vector();
  // Corner (0,0): mean of {1,2,4,5} = 3; edge (0,1): mean of {1..6} = 3.5; centre: 5.
  CHECK(avg_excl[0] == doctest::Approx(3.0));
  CHECK(avg_excl[1] == doctest::Approx(3.5));
  CHECK(avg_excl[4] == doctest::Approx(5.0));
  CHECK(avg_excl[8] == doctest::Approx(7.0));  // {5,6,8,9}
  const std::vector<double> avg_incl = avg_pool2d(x, Pool2dParams::make(3, 1, 1), true).to_vector();
  CHECK(avg_incl[0] == doctest::Approx(12.0 / 9.0));
  const std::vector<double> mx = max_pool2d(x, Pool2dParams::make(3, 1, 1)).to_vector();
  CHECK(mx == std::vector<double>{5, 6, 6, 8, 9, 9, 8, 9, 9});
  // All-negative input: padding must never win the max.
  const std::vector<double> mn = max_pool2d(neg(x), Pool2dParams::make(3, 1, 1)).to_vector();
  CHECK(mn[0] == -1.0);
  CHECK(max_pool2d(x, Pool2dParams::make(3, 2)).to_vector() == std::vector<double>{9});
}

TEST_CASE("pool: max propagates NaN") {
  Tensor x = from_vector({1, NAN, 3, 4}, {1, 1, 2, 2});
  const std::vector<double> y = max_pool2d(x, Pool2dParams::make(2, 2)).to_vector();
  CHECK(std::isnan(y[0]));
}

TEST_CASE("pool: errors") {
  Tensor x = zeros({1, 2, 5, 5});
  CHECK_THROWS_WITH_AS(max_pool2d(x, Pool2dParams::make(3, 1, 2)), doctest::Contains("at most half the kernel"),
                       Error);
  CHECK_THROWS_WITH_AS(avg_pool2d(zeros({2, 5, 5}), Pool2dParams::make(3, 1)), doctest::Contains("4-D"), Error);
  CHECK_THROWS_WITH_AS(avg_pool2d(x, Pool2dParams::make(7, 1)), doctest::Contains("larger than the padded input"),
                       Error);
  Tensor leaf = zeros({1, 2, 5, 5});
  leaf.requires_grad_();
  CHECK_THROWS_WITH_AS(max_pool2d(leaf, Pool2dParams::make(3, 2)), doctest::Contains("max_pool2d: not differentiable"),
                       Error);
  CHECK_THROWS_WITH_AS(avg_pool2d(leaf, Pool2dParams::make(3, 2)), doctest::Contains("avg_pool2d: not differentiable"),
                       Error);
  autograd::NoGradGuard ng;
  CHECK(max_pool2d(leaf, Pool2dParams::make(3, 2)).sizes() == Dims{1, 2, 2, 2});
}

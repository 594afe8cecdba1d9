// model_parity.h: what the model parity tests share (test_parity_generator, test_convert_official,
// test_discriminator; check_close for test_attention, test_moe, test_text_head): temporary files, running a reference script with
// ENGINE_PYTHON (FAILing with the script's output when python3-torch is missing or the script
// fails: parity tests never pass silently), the per-tensor scaled comparison and its summary, and
// the perturbation of constant-initialised parameters.
//
// Scaled comparison (Note [scaled parity tolerance]). An element passes when
//   |ours - ref| <= rtol |ref| + max(atol * max|ref|, floor)
// with max|ref| over the compared tensor: gradients of different tensors of one model differ by
// orders of magnitude, and one fixed atol would either fail the large ones or hide relative errors
// of the small ones. `floor` is an absolute tolerance for tensors that are zero in exact arithmetic
// (both sides then return rounding noise that no relative tolerance can compare).
#pragma once
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include <fmt/format.h>

#include "autograd/engine.h"
#include "nn/module.h"
#include "tensor/ops.h"
#include "tests/parity/parity.h"

namespace model_parity {

using engine::Tensor;

// A fresh path /tmp/<stem>_XXXXXX<tag> (the file itself is not created).
inline std::string temp_path(const std::string& stem, const std::string& tag) {
  std::string tmpl = "/tmp/" + stem + "_XXXXXX";
  const int fd = ::mkstemp(tmpl.data());
  REQUIRE_MESSAGE(fd >= 0, "mkstemp failed for " << tmpl);
  ::close(fd);
  ::unlink(tmpl.c_str());
  return tmpl + tag;
}

// Runs `ENGINE_PYTHON <ENGINE_SOURCE_DIR>/<script> <args>`; REQUIREs exit status 0 and returns
// the script's combined output (stdout + stderr).
inline std::string run_python(const std::string& script, const std::string& args) {
  REQUIRE_MESSAGE(::access(ENGINE_PYTHON, X_OK) == 0,
                  "the Python interpreter ENGINE_PYTHON=" ENGINE_PYTHON " does not exist; install python3-torch (Debian)");
  const std::string log = temp_path("engine_py", ".log");
  const std::string cmd = std::string(ENGINE_PYTHON) + " " + ENGINE_SOURCE_DIR + "/" + script + " " + args;
  const auto t0 = std::chrono::steady_clock::now();
  const int rc = std::system((cmd + " > " + log + " 2>&1").c_str());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::ifstream f(log);
  std::stringstream text;
  text << f.rdbuf();
  ::unlink(log.c_str());
  REQUIRE_MESSAGE(rc == 0, "the script failed (rc " << rc << "): " << cmd << "\nIs python3-torch installed for " ENGINE_PYTHON
                                                   "? Its output:\n"
                                                   << text.str());
  MESSAGE(script << ": " << fmt::format("{:.1f}", secs) << " s");
  return text.str();
}

inline double max_abs(const Tensor& t) {
  double m = 0;
  for (double v : t.to_vector()) m = std::max(m, std::fabs(v));
  return m;
}

// max |a - b| over all elements (same shapes).
inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = a.to_vector(), y = b.to_vector();
  REQUIRE(x.size() == y.size());
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::fabs(x[i] - y[i]));
  return m;
}

// The worst errors over a group of compared tensors.
struct Errors {
  double worst_ratio = 0;     // max over tensors of the worst |diff| / tolerance (<= 1 passes)
  double max_rel_to_max = 0;  // max over tensors of max|diff| / max|ref|
  int tensors = 0;
  std::string worst_what;
};

// The block tests' rule (test_attention, test_moe, test_text_head): an element passes when
// |ours - ref| <= atol + rtol |ref| with the dtype's defaults of tests/parity/parity.h (f32:
// rtol 1e-4, atol 1e-5; f64: 1e-9, 1e-11). Appends "what, max|diff|, max|ref|, worst/allowed" to
// `report`; with `enforce` false the case is only reported. An undefined `ours` counts as zeros.
inline void check_close(const std::string& what, const Tensor& ours_in, const Tensor& ref, engine::DType dt,
                        std::string& report, bool enforce = true) {
  const Tensor ours = ours_in.defined() ? ours_in : engine::zeros(ref.sizes(), engine::opts(ref.dtype()));
  REQUIRE_MESSAGE(ours.sizes() == ref.sizes(), what << ": shape " << ours.sizes().str() << " vs " << ref.sizes().str());
  const parity::Tol tol = parity::default_tol(dt);
  const std::vector<double> a = ours.to_vector(), r = ref.to_vector();
  double worst = 0, worst_abs = 0, max_ref = 0;
  size_t wi = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(a[i] - r[i]);
    const double ratio = std::isnan(d) ? INFINITY : d / (tol.atol + tol.rtol * std::fabs(r[i]));
    if (ratio > worst) worst = ratio, wi = i;
    if (d > worst_abs || std::isnan(d)) worst_abs = d;
    max_ref = std::max(max_ref, std::fabs(r[i]));
  }
  report += fmt::format("\n  {:<52} max|diff| {:.3g}  max|ref| {:.3g}  worst/allowed {:.3f}", what, worst_abs, max_ref, worst);
  if (enforce)
    CHECK_MESSAGE(worst <= 1.0, what << ": element " << wi << " ours " << (a.empty() ? 0 : a[wi]) << " ref "
                                     << (r.empty() ? 0 : r[wi]) << " (worst/allowed " << worst << ")");
}

// Note [scaled parity tolerance] (header comment); records into `e`. An undefined `ours` counts
// as zeros (an undefined gradient).
inline void compare_scaled(const std::string& what, const Tensor& ours, const Tensor& ref, double rtol, double atol,
                           Errors& e, double floor = 0) {
  const Tensor o = ours.defined() ? ours : engine::zeros_like(ref);
  const double mx = std::max(max_abs(ref), 1e-30);
  const parity::Diff d = parity::compare(o, ref, parity::Tol{rtol, std::max(atol * mx, floor)});
  CHECK_MESSAGE(d.ok, what << ": " << d.detail);
  ++e.tensors;
  if (d.worst_ratio > e.worst_ratio) {
    e.worst_ratio = d.worst_ratio;
    e.worst_what = what;
  }
  if (mx > floor) e.max_rel_to_max = std::max(e.max_rel_to_max, d.max_abs / mx);
}

inline std::string summary(const char* label, const Errors& e) {
  return fmt::format("  {:<28} {:4d} tensors, worst max|diff|/max|ref| {:.2e}, worst tolerance ratio {:.3g} ({})\n",
                     label, e.tensors, e.max_rel_to_max, e.worst_ratio, e.worst_what);
}

// Add 0.2 N(0, 1) to every constant-initialised parameter (biases 0, style biases 1, LayerNorm
// 1/0, zero-initialised output projections and MTM transforms), so that a parity run exercises
// generic values and every branch, not the special initial ones.
inline void perturb_constant_params(engine::nn::ParameterStore& store, uint64_t seed, double scale = 0.2) {
  engine::autograd::NoGradGuard no_grad;
  engine::Generator gen(seed);
  for (auto& [name, p] : store.parameters()) {
    if (p->init.kind != engine::nn::Init::Kind::constant) continue;
    engine::add_(p->value, engine::mul(engine::randn(p->shape, gen, engine::opts(p->value.dtype())), scale));
  }
}

}  // namespace model_parity

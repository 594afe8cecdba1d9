// parity.h: the C++ half of the PyTorch parity tests (docs/testing.md).
//
// A test executable (tests/test_parity_<family>.cpp) runs one Python reference script
// (tests/parity/ref_<family>.py, under ENGINE_PYTHON, the interpreter with python3-torch) once,
// loads what it wrote with io/safetensors, and for each recorded case calls `Reference::run(case,
// fn)` with the same op written against tensor/ops.h. run() feeds the recorded inputs to fn and
// compares, with the layout of parity_lib.py:
//   out/j            forward outputs
//   grad/i           first gradients, autograd::grad(outs, inputs, go, create_graph=true)
//   gg/i and ggo/j   double backward: gradients of S = sum_i <grad_i, u_i> with respect to the
//                    inputs and to the grad_outputs go_j
// Element (ours a, reference b) passes when |a - b| <= atol + rtol * |b|. Default tolerances:
//   f32: rtol 1e-4, atol 1e-5   (PyTorch and we both round in f32, with different summation
//                                orders; 1e-4 leaves room for a few hundred accumulated terms)
//   f64: rtol 1e-9, atol 1e-11  (only summation order and libm differences remain)
// A case may widen them, with the reason written next to it.
//
// If the interpreter or torch is missing, or the script fails, every test of the executable FAILS
// with the script's output: parity tests never pass silently.
#pragma once
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "autograd/engine.h"
#include "io/safetensors.h"
#include "tensor/ops.h"

#ifndef ENGINE_PYTHON
#error "ENGINE_PYTHON must be defined (tests/CMakeLists.txt does)"
#endif
#ifndef ENGINE_SOURCE_DIR
#error "ENGINE_SOURCE_DIR must be defined (tests/CMakeLists.txt does)"
#endif

namespace parity {

using engine::DType;
using engine::Tensor;
using engine::TensorList;

struct Tol {
  double rtol = 1e-4;
  double atol = 1e-5;
};

inline Tol default_tol(DType t) { return t == DType::f64 ? Tol{1e-9, 1e-11} : Tol{1e-4, 1e-5}; }

// How far `ours` is from `ref`: the worst element by |a - b| / (atol + rtol |b|) (<= 1 passes).
struct Diff {
  bool ok = true;
  double worst_ratio = 0;  // max |a-b| / (atol + rtol |b|)
  double max_abs = 0;      // max |a-b|
  double max_rel = 0;      // max |a-b| / |b| over |b| > atol
  std::string detail;      // filled when !ok: shapes, or the worst element
};

inline Diff compare(const Tensor& ours, const Tensor& ref, Tol tol) {
  Diff d;
  if (!ours.defined()) {
    d.ok = false;
    d.detail = "ours is undefined";
    return d;
  }
  if (ours.sizes() != ref.sizes()) {
    d.ok = false;
    d.detail = "shape " + ours.sizes().str() + " vs reference " + ref.sizes().str();
    return d;
  }
  if (engine::is_floating(ours.dtype()) != engine::is_floating(ref.dtype()) && engine::is_floating(ref.dtype())) {
    d.ok = false;
    d.detail = std::string("dtype ") + engine::dtype_name(ours.dtype()) + " vs reference " + engine::dtype_name(ref.dtype());
    return d;
  }
  if (engine::is_floating(ours.dtype()) && engine::is_floating(ref.dtype()) && ours.dtype() != ref.dtype()) {
    d.ok = false;
    d.detail = std::string("dtype ") + engine::dtype_name(ours.dtype()) + " vs reference " + engine::dtype_name(ref.dtype());
    return d;
  }
  const std::vector<double> a = ours.to_vector(), b = ref.to_vector();
  size_t worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double err = std::fabs(a[i] - b[i]);
    double ratio;
    if (a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i]))) {
      ratio = 0;  // also equal infinities
    } else if (std::isnan(a[i]) || std::isnan(b[i]) || std::isinf(err)) {
      ratio = INFINITY;
    } else {
      ratio = err / (tol.atol + tol.rtol * std::fabs(b[i]));
    }
    if (ratio > d.worst_ratio) {
      d.worst_ratio = ratio;
      worst = i;
    }
    if (err > d.max_abs) d.max_abs = err;
    if (std::fabs(b[i]) > tol.atol && err / std::fabs(b[i]) > d.max_rel) d.max_rel = err / std::fabs(b[i]);
  }
  if (!(d.worst_ratio <= 1.0)) {
    d.ok = false;
    char buf[256];
    std::snprintf(buf, sizeof buf, "worst element #%zu: ours %.9g, reference %.9g (|diff| %.3g > atol %.1g + rtol %.1g * |ref|); "
                  "max |diff| %.3g",
                  worst, a[worst], b[worst], std::fabs(a[worst] - b[worst]), tol.atol, tol.rtol, d.max_abs);
    d.detail = buf;
  }
  return d;
}

// Print the per-case errors (PARITY_REPORT=1), e.g. to fill the tolerance table in docs/testing.md.
inline bool report_enabled() {
  const char* e = std::getenv("PARITY_REPORT");
  return e && *e && std::string(e) != "0";
}

struct CaseOptions {
  std::optional<Tol> tol;     // forward and first gradients; default_tol(dtype of the first input)
  std::optional<Tol> gg_tol;  // double backward; defaults to `tol`
  bool differentiable = true; // false: forward only (comparisons, argmax, one_hot)
};

using CaseFn = std::function<TensorList(const TensorList&)>;

// The result of running one reference script.
class Reference {
 public:
  explicit Reference(const std::string& script) : script_(script) { load(); }

  // Fails the current doctest test case (REQUIRE) when the script could not produce its file.
  void require_loaded() const { REQUIRE_MESSAGE(error_.empty(), error_); }

  const engine::io::SafetensorsFile& file() const {
    require_loaded();
    return file_;
  }
  const Tensor& at(const std::string& key) const { return file().at(key); }
  bool has(const std::string& key) const { return file().contains(key); }

  // Compare `name` (one recorded case): forward, gradients and double backward.
  void run(const std::string& name, const CaseFn& fn, const CaseOptions& o = {}) {
    require_loaded();
    INFO("parity case " << name << " (reference " << script_ << ")");
    REQUIRE_MESSAGE(cases_.count(name), "the reference file has no case '" << name << "'");
    ran_.insert(name);
    const std::string p = name + "/";
    // Inputs; an input is differentiated when the reference recorded its gradient.
    TensorList inputs;
    std::vector<size_t> diff;
    for (size_t i = 0; has(p + "in/" + std::to_string(i)); ++i) {
      Tensor x = at(p + "in/" + std::to_string(i)).detach();
      if (has(p + "grad/" + std::to_string(i))) {
        x = engine::clone(x).requires_grad_(true);
        diff.push_back(i);
      }
      inputs.push_back(x);
    }
    REQUIRE_MESSAGE(!inputs.empty(), "case '" << name << "' has no inputs");
    const Tol tol = o.tol.value_or(default_tol(inputs[0].dtype()));
    const Tol gg_tol = o.gg_tol.value_or(tol);

    TensorList outs = fn(inputs);
    size_t nout = 0;
    while (has(p + "out/" + std::to_string(nout))) ++nout;
    REQUIRE_MESSAGE(outs.size() == nout, "case '" << name << "': " << outs.size() << " outputs, reference has " << nout);
    for (size_t j = 0; j < nout; ++j) check(name, "out/" + std::to_string(j), outs[j], at(p + "out/" + std::to_string(j)), tol);
    if (!o.differentiable) {
      REQUIRE_MESSAGE(diff.empty(), "case '" << name << "' is forward-only here but the reference has gradients");
      return;
    }
    REQUIRE_MESSAGE(!diff.empty(), "case '" << name << "' has no recorded gradients");

    // First backward, recording a graph (create_graph) for the double backward.
    TensorList float_outs, gos, dins;
    std::vector<size_t> out_idx;
    for (size_t j = 0; j < nout; ++j) {
      const std::string k = p + "go/" + std::to_string(j);
      if (!has(k)) continue;
      float_outs.push_back(outs[j]);
      gos.push_back(engine::clone(at(k)).requires_grad_(true));
      out_idx.push_back(j);
    }
    for (size_t i : diff) dins.push_back(inputs[i]);
    TensorList grads = engine::autograd::grad(float_outs, dins, gos, /*create_graph=*/true, /*allow_unused=*/true);
    REQUIRE(grads.size() == dins.size());
    Tensor s;
    for (size_t k = 0; k < diff.size(); ++k) {
      const std::string idx = std::to_string(diff[k]);
      Tensor g = grads[k].defined() ? grads[k] : engine::zeros_like(dins[k]);
      check(name, "grad/" + idx, g, at(p + "grad/" + idx), tol);
      if (grads[k].defined() && grads[k].requires_grad()) {
        Tensor term = engine::sum(engine::mul(grads[k], at(p + "u/" + idx)));
        s = s.defined() ? engine::add(s, term) : term;
      }
    }
    if (!has(p + "gg/" + std::to_string(diff[0]))) return;  // recorded with double_backward=False

    // Double backward: d S / d(inputs, grad_outputs).
    TensorList wrt = dins;
    wrt.insert(wrt.end(), gos.begin(), gos.end());
    TensorList gg(wrt.size());
    if (s.defined()) gg = engine::autograd::grad({s}, wrt, {}, false, /*allow_unused=*/true);
    for (size_t k = 0; k < diff.size(); ++k) {
      const std::string idx = std::to_string(diff[k]);
      check(name, "gg/" + idx, gg[k].defined() ? gg[k] : engine::zeros_like(dins[k]), at(p + "gg/" + idx), gg_tol);
    }
    for (size_t k = 0; k < gos.size(); ++k) {
      const std::string idx = std::to_string(out_idx[k]);
      Tensor g = gg[dins.size() + k];
      check(name, "ggo/" + idx, g.defined() ? g : engine::zeros_like(gos[k]), at(p + "ggo/" + idx), gg_tol);
    }
  }

  // Every case of the reference file must have been run by the tests (none silently skipped).
  void check_all_run() const {
    require_loaded();
    std::string missing;
    for (const std::string& c : cases_) {
      if (!ran_.count(c)) missing += " " + c;
    }
    CHECK_MESSAGE(missing.empty(), "reference cases never compared:" << missing);
  }

  const std::string& script() const { return script_; }

 private:
  void check(const std::string& name, const std::string& what, const Tensor& ours, const Tensor& ref, Tol tol) {
    const Diff d = compare(ours, ref, tol);
    if (report_enabled()) {
      std::printf("PARITY case=%s key=%s max_abs=%.3g max_rel=%.3g ratio=%.3g %s\n", name.c_str(), what.c_str(), d.max_abs,
                  d.max_rel, d.worst_ratio, d.ok ? "ok" : "FAIL");
    }
    CHECK_MESSAGE(d.ok, name << " " << what << ": " << d.detail);
  }

  void load() {
    char tmpl[] = "/tmp/engine_parity_XXXXXX";
    const int fd = ::mkstemp(tmpl);
    if (fd < 0) {
      error_ = "parity: cannot create a temporary file";
      return;
    }
    ::close(fd);
    const std::string out = tmpl, log = out + ".log";
    const std::string script_path = std::string(ENGINE_SOURCE_DIR) + "/tests/parity/" + script_;
    if (::access(ENGINE_PYTHON, X_OK) != 0) {
      error_ = "parity: the Python interpreter ENGINE_PYTHON=" ENGINE_PYTHON
               " does not exist; install python3 and python3-torch (Debian) or configure with "
               "-DENGINE_PYTHON=/path/to/python-with-torch";
      ::unlink(out.c_str());
      return;
    }
    const std::string cmd = std::string(ENGINE_PYTHON) + " " + script_path + " " + out + " > " + log + " 2>&1";
    const int rc = std::system(cmd.c_str());
    std::ifstream lf(log);
    std::stringstream ls;
    ls << lf.rdbuf();
    ::unlink(log.c_str());
    if (rc != 0) {
      std::string text = ls.str();
      if (text.size() > 4000) text = "..." + text.substr(text.size() - 4000);
      const int status = WIFEXITED(rc) ? WEXITSTATUS(rc) : rc;
      error_ = "parity: the reference script failed (exit status " + std::to_string(status) + "): " + cmd +
               "\nIs python3-torch installed for " ENGINE_PYTHON "? Its output:\n" + text;
      ::unlink(out.c_str());
      return;
    }
    try {
      file_ = engine::io::read_safetensors(out);
      const auto it = file_.metadata.find("cases");
      if (it == file_.metadata.end()) throw engine::Error("the reference file has no 'cases' metadata");
      for (const auto& c : nlohmann::json::parse(it->second)) cases_.insert(c.get<std::string>());
    } catch (const std::exception& e) {
      error_ = std::string("parity: cannot read the reference file of ") + script_ + ": " + e.what();
    }
    ::unlink(out.c_str());
  }

  std::string script_;
  std::string error_;
  engine::io::SafetensorsFile file_;
  std::set<std::string> cases_, ran_;
};

}  // namespace parity

// script_runner.h: running one PyTorch reference script for the model parity tests
// (test_modconv, test_attention, test_text_head, test_moe): a fresh temporary folder for the
// exchanged safetensors files, and the script run once with the case names, FAILing the test with
// the script's output when python3-torch is missing or the script fails (docs/testing.md).
#pragma once
#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#ifndef ENGINE_PYTHON
#error "ENGINE_PYTHON must be defined (tests/CMakeLists.txt does)"
#endif

namespace parity {

// mkdtemp("/tmp/<stem>_XXXXXX").
inline std::string make_tmpdir(const char* stem) {
  std::string tmpl = std::string("/tmp/") + stem + "_XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  const char* d = mkdtemp(buf.data());
  REQUIRE_MESSAGE(d != nullptr, "mkdtemp failed");
  return d;
}

// Runs tests/parity/<script> <dir> <cases...> under ENGINE_PYTHON, its output in <dir>/ref.log.
inline bool run_script(const std::string& script, const std::string& dir, const std::vector<std::string>& cases) {
  std::string cmd = std::string(ENGINE_PYTHON) + " " + ENGINE_SOURCE_DIR + "/tests/parity/" + script + " " + dir;
  for (const auto& c : cases) cmd += " " + c;
  const std::string log = dir + "/ref.log";
  const int rc = std::system((cmd + " > " + log + " 2>&1").c_str());
  if (rc != 0) {
    std::ifstream f(log);
    std::stringstream ss;
    ss << f.rdbuf();
    FAIL("PyTorch reference failed (rc " << rc << "): " << cmd << "\n"
                                         << ss.str() << "\n(needs " ENGINE_PYTHON " with python3-torch)");
    return false;
  }
  return true;
}

}  // namespace parity

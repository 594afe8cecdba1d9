// cli_runner.h: run the built `aurora` executable from a test (tests/test_cli.cpp,
// test_analysis_cli.cpp, test_profile_cli.cpp). AURORA_BINARY is set by tests/CMakeLists.txt.
#pragma once
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace engine::test {

struct CliResult {
  int code = -1;    // exit status (-1: killed by a signal)
  std::string out;  // stdout
  std::string err;  // stderr
};

inline std::string read_text(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// `aurora ARGS`, run in the shell with stdout and stderr captured into files under `dir`.
inline CliResult run_aurora(const std::string& dir, const std::string& args) {
  const std::string out_file = dir + "/stdout.txt", err_file = dir + "/stderr.txt";
  const std::string cmd = std::string(AURORA_BINARY) + " " + args + " > " + out_file + " 2> " + err_file;
  const int status = std::system(cmd.c_str());
  CliResult r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_text(out_file);
  r.err = read_text(err_file);
  return r;
}

// The CLI's error contract: exactly one line, "aurora: error: ...".
inline bool one_error_line(const std::string& s) {
  return s.rfind("aurora: error: ", 0) == 0 && s.find('\n') == s.size() - 1;
}

}  // namespace engine::test

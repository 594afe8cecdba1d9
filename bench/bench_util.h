// bench_util.h: what every bench against PyTorch shares (bench/README.md, DESIGN.md section 13):
// timing with warm-up and a median, the peak bytes of one repetition from the arena, running the
// PyTorch side as a subprocess, and printing the table plus the machine-readable BENCH lines.
#pragma once
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "tensor/error.h"
#include "tensor/memory/memory.h"

namespace engine::bench {

struct Result {
  double time_ms = 0;      // median over the repetitions, after 2 warm-up runs
  int64_t peak_bytes = 0;  // high-water mark of bytes allocated during one more repetition
};

// A fresh path /tmp/<who>_XXXXXX<tag> for a file handed to the PyTorch side.
inline std::string temp_path(const std::string& who, const std::string& tag) {
  std::string tmpl = "/tmp/" + who + "_XXXXXX";
  const int fd = ::mkstemp(tmpl.data());
  ENGINE_CHECK(fd >= 0, "{}: cannot create a temporary file in /tmp", who);
  ::close(fd);
  ::unlink(tmpl.c_str());
  return tmpl + tag;
}

// Files handed to the PyTorch side; removed when the bench ends.
struct TempFiles {
  std::string who;  // the bench's name, for the file names and errors
  std::vector<std::string> paths;
  explicit TempFiles(std::string who_) : who(std::move(who_)) {}
  TempFiles(const TempFiles&) = delete;
  TempFiles& operator=(const TempFiles&) = delete;
  std::string add(const std::string& tag) {
    paths.push_back(temp_path(who, tag));
    return paths.back();
  }
  ~TempFiles() {
    for (const std::string& p : paths) ::unlink(p.c_str());
  }
};

inline Result measure(const std::function<void()>& fn, int reps) {
  for (int i = 0; i < 2; ++i) fn();
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  const int64_t before = memory::stats(Device::cpu()).live;
  memory::reset_peak(Device::cpu());
  fn();
  Result r;
  r.time_ms = times[times.size() / 2];
  r.peak_bytes = memory::stats(Device::cpu()).peak - before;
  return r;
}

// Run `cmd` and return its standard output; `who` names the bench in the error.
inline std::string run_command(const std::string& cmd, const char* who) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  ENGINE_CHECK(p != nullptr, "{}: cannot run '{}'", who, cmd);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int rc = pclose(p);
  ENGINE_CHECK(rc == 0, "{}: '{}' failed (exit {}); is python3-torch installed?", who, cmd, rc);
  return out;
}

// The human table, then one BENCH line per case and metric. `ref` maps a case name to
// {"time_ms": ..., "peak_bytes": ...} as the PyTorch scripts print it.
inline void print_report(const std::map<std::string, Result>& ours, const nlohmann::json& ref) {
  std::printf("%-16s %12s %12s %8s %14s %14s %8s\n", "case", "ours ms", "torch ms", "ratio", "ours peak B",
              "torch peak B", "ratio");
  for (const auto& [name, r] : ours) {
    const double t_ref = ref[name]["time_ms"].get<double>(), m_ref = ref[name]["peak_bytes"].get<double>();
    std::printf("%-16s %12.3f %12.3f %8.3f %14lld %14.0f %8.3f\n", name.c_str(), r.time_ms, t_ref, r.time_ms / t_ref,
                (long long)r.peak_bytes, m_ref, m_ref > 0 ? double(r.peak_bytes) / m_ref : 0.0);
  }
  for (const auto& [name, r] : ours) {
    const double t_ref = ref[name]["time_ms"].get<double>(), m_ref = ref[name]["peak_bytes"].get<double>();
    std::printf("BENCH case=%s metric=time_ms ours=%.4f ref=%.4f ratio=%.4f ref_name=pytorch-cpu\n", name.c_str(),
                r.time_ms, t_ref, r.time_ms / t_ref);
    std::printf("BENCH case=%s metric=peak_bytes ours=%lld ref=%.0f ratio=%.4f ref_name=pytorch-cpu\n", name.c_str(),
                (long long)r.peak_bytes, m_ref, m_ref > 0 ? double(r.peak_bytes) / m_ref : 0.0);
  }
}

}  // namespace engine::bench

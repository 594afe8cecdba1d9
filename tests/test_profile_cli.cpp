// test_profile_cli.cpp: `aurora profile` run as a user would (a child process; the binary's path
// comes from CMake as AURORA_BINARY), on the micro model of tests/train_fixtures.h at 4 px.
//
//  1. Bad input: a missing config, an unknown device, --device cuda in a CPU-only build,
//     --steps 0, an unknown --set key give one line
//     "aurora: error: ..." naming the problem, exit code 1.
//  2. A profile of 2 steps after 1 warm-up step writes every file, and each is well-formed:
//     trace.json parses (nlohmann_json) and has complete ("X") op events and counter ("C")
//     events; table.csv has rows of the G_main, D_main and D_r1 phases and of the fwd, bwd and
//     bwd2 passes; per_module.csv has module paths of G (G.*, e.g. G.synthesis.b4.*) and D
//     (D.*) and no others; summary.txt has one line per step with a time for each phase, and the session's peak equals the sum of table.csv's at_peak column
//     plus the bytes alive at the peak that no profiled op allocated (two independent counts:
//     the allocator's live counter and the live-set snapshot).
//     The micro config has r1_interval 2, so without the profile's "R1 every step" the second
//     profiled step would have no D_r1.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/cli_runner.h"
#include "tests/train_fixtures.h"

using namespace engine;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

using Result = test::CliResult;
Result run(const std::string& dir, const std::string& args) { return test::run_aurora(dir, args); }
using test::one_error_line;
using test::read_text;

json micro_config(const std::string& data) {
  json t = {{"batch_size", 4},
            {"steps", 4},
            {"r1_interval", 2},
            {"growing", {{"rule", "kimg"}, {"start_resolution", 4}, {"stage_kimg", 1000}}},
            {"small_text_encoder", {{"vocab_size", 512}, {"layers", 1}, {"heads", 2}}},
            {"vocab", test::kVocab},
            {"data", data}};
  return {{"generator", test::micro_generator_config()},
          {"discriminator", test::micro_discriminator_config()},
          {"train", t}};
}

std::string tmp_dir() {
  const std::string d = (fs::temp_directory_path() / ("aurora_test_profile_" + std::to_string(::getpid()))).string();
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// A CSV line split at commas (the fields checked here hold no quoted commas).
std::vector<std::string> split(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false;
  for (char c : line) {
    if (c == '"') quoted = !quoted;
    if (c == ',' && !quoted) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

// The integer after "key " in `line` (-1 when absent).
long long number_after(const std::string& line, const std::string& key) {
  const size_t at = line.find(key + " ");
  if (at == std::string::npos) return -1;
  return std::stoll(line.substr(at + key.size() + 1));
}

}  // namespace

TEST_CASE("aurora profile: bad arguments give one clear error line") {
  const std::string dir = tmp_dir();
  Result r = run(dir, "profile --config " + dir + "/missing.json --out " + dir + "/p");
  CHECK(r.code == 1);
  CHECK(one_error_line(r.err));
  CHECK(r.err.find("missing.json") != std::string::npos);

  std::ofstream(dir + "/c.json") << micro_config("folder:" + dir + "/data").dump();
  r = run(dir, "profile --config " + dir + "/c.json --device tpu --out " + dir + "/p");
  CHECK(r.code == 1);
  CHECK(one_error_line(r.err));
  CHECK(r.err.find("--device") != std::string::npos);
  CHECK(r.err.find("tpu") != std::string::npos);

#if !defined(ENGINE_WITH_CUDA)
  // A build without the CUDA backend (or whose trainer cannot train on CUDA) says so.
  r = run(dir, "profile --config " + dir + "/c.json --device cuda --out " + dir + "/p");
  CHECK(r.code == 1);
  CHECK(one_error_line(r.err));
  CHECK(r.err.find("cuda") != std::string::npos);
#endif

  r = run(dir, "profile --config " + dir + "/c.json --steps 0 --out " + dir + "/p");
  CHECK(r.code == 1);
  CHECK(one_error_line(r.err));
  CHECK(r.err.find("--steps") != std::string::npos);

  r = run(dir, "profile --config " + dir + "/c.json --set train.bogus=1 --out " + dir + "/p");
  CHECK(r.code == 1);
  CHECK(one_error_line(r.err));
  CHECK(r.err.find("bogus") != std::string::npos);
  CHECK_FALSE(fs::exists(dir + "/p/table.md"));
  fs::remove_all(dir);
}

TEST_CASE("aurora profile: every file of a 2-step profile, well-formed and consistent") {
  const std::string dir = tmp_dir(), out = dir + "/prof";
  test::write_square_folder(dir + "/data", 6);
  std::ofstream(dir + "/c.json") << micro_config("folder:" + dir + "/data").dump(2);
  const Result r = run(dir, "profile --config " + dir + "/c.json --steps 2 --warmup 1 --out " + out);
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK(r.err.find("step 1/2") != std::string::npos);
  CHECK(r.err.find("step 2/2") != std::string::npos);
  CHECK(r.err.find(out) != std::string::npos);  // says where the files are
  for (const char* f : {"table.md", "table.csv", "calls.csv", "live_set.md", "trace.json", "per_module.md",
                        "per_module.csv", "summary.txt", "config.json"})
    CHECK_MESSAGE(fs::file_size(out + "/" + f) > 0, f);

  // trace.json: op slices and memory counters.
  const json trace = json::parse(read_text(out + "/trace.json"));
  REQUIRE(trace.contains("traceEvents"));
  int x_events = 0, counters = 0;
  std::set<std::string> passes;
  for (const json& e : trace["traceEvents"]) {
    if (e["ph"] == "X") {
      ++x_events;
      CHECK(e["dur"].get<double>() >= 0);
      passes.insert(e["args"]["pass"].get<std::string>());
    }
    if (e["ph"] == "C") ++counters;
  }
  CHECK(x_events > 100);
  CHECK(counters > 100);
  CHECK(passes.count("bwd2") == 1);

  // table.csv: the phases and passes of a full step; the at_peak column.
  std::istringstream csv(read_text(out + "/table.csv"));
  std::string line;
  std::getline(csv, line);
  const std::vector<std::string> header = split(line);
  std::map<std::string, size_t> col;
  for (size_t i = 0; i < header.size(); ++i) col[header[i]] = i;
  REQUIRE(col.count("phase"));
  REQUIRE(col.count("pass"));
  REQUIRE(col.count("at_peak_bytes"));
  std::set<std::string> phases, table_passes;
  long long at_peak_sum = 0;
  int rows = 0;
  while (std::getline(csv, line)) {
    const std::vector<std::string> f = split(line);
    REQUIRE(f.size() == header.size());
    phases.insert(f[col["phase"]]);
    table_passes.insert(f[col["pass"]]);
    at_peak_sum += std::stoll(f[col["at_peak_bytes"]]);
    ++rows;
  }
  CHECK(rows > 20);
  for (const char* p : {"G_main", "D_main", "D_r1"}) CHECK_MESSAGE(phases.count(p) == 1, p);
  for (const char* p : {"fwd", "bwd", "bwd2"}) CHECK_MESSAGE(table_passes.count(p) == 1, p);

  // calls.csv: one row per call, more rows than the aggregated table.
  std::istringstream calls(read_text(out + "/calls.csv"));
  int call_rows = -1;
  while (std::getline(calls, line)) ++call_rows;
  CHECK(call_rows > rows);

  // per_module.csv: module paths of G and D.
  const std::string per_module = read_text(out + "/per_module.csv");
  INFO(per_module);
  CHECK(per_module.rfind("module,calls,at_peak_bytes", 0) == 0);
  // G's paths start with "G." as D's with "D.": every row is G's, D's, or outside any module.
  CHECK(per_module.find("\nG.synthesis.b4") != std::string::npos);  // G's 4 px block
  CHECK(per_module.find("\nG.mapping.dense0") != std::string::npos);
  CHECK(per_module.find("\nG.text_encoder") != std::string::npos);
  CHECK(per_module.find("\nD.") != std::string::npos);
  {
    std::istringstream module_rows(per_module);
    std::getline(module_rows, line);  // the header
    while (std::getline(module_rows, line)) {
      const std::string module = line.substr(0, line.find(','));
      CHECK_MESSAGE((module.empty() || module == "-" || module.rfind("G.", 0) == 0 || module.rfind("D.", 0) == 0),
                    "a module path outside G. and D.: ", module);
    }
  }

  // summary.txt: one line per profiled step, then the session line.
  std::istringstream summary(read_text(out + "/summary.txt"));
  std::vector<std::string> step_lines;
  std::string session;
  while (std::getline(summary, line)) {
    if (line.rfind("step ", 0) == 0) step_lines.push_back(line);
    if (line.rfind("session cpu", 0) == 0) session = line;
  }
  REQUIRE(step_lines.size() == 2);
  long long max_step_peak = 0;
  for (const std::string& s : step_lines) {
    INFO(s);
    for (const char* p : {"G_main ", "D_main ", "D_r1 ", "peak ", "reserved ", "top: "})
      CHECK(s.find(p) != std::string::npos);
    CHECK(s.find("no D_r1") == std::string::npos);
    max_step_peak = std::max(max_step_peak, number_after(s, "peak_bytes"));
  }
  REQUIRE(!session.empty());
  INFO(session);
  const long long peak = number_after(session, "peak_bytes"), outside = number_after(session, "outside_ops_bytes");
  CHECK(peak > 0);
  CHECK(outside > 0);  // parameters and optimizer state exist before the first profiled op
  CHECK(peak == at_peak_sum + outside);
  CHECK(peak == max_step_peak);

  // table.md and live_set.md name the peak.
  CHECK(read_text(out + "/table.md").find("Peak on cpu") != std::string::npos);
  CHECK(read_text(out + "/live_set.md").find("## cpu: peak") != std::string::npos);
  fs::remove_all(dir);
}

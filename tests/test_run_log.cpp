// Tests of aurora/run_log: the progress line (plain mode into a file, terminal mode into a
// pseudo-terminal), format_duration, the metrics log (flush per line, resume truncation, torn
// last line) and StopSignal (a real SIGINT/SIGTERM; a second signal kills a forked child).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "aurora/run_log.h"
#include "tensor/error.h"
#include "tests/temp_dir.h"

using namespace engine;
using namespace engine::aurora;
namespace fs = std::filesystem;

namespace {

struct TempDir : test::TempDir {
  TempDir() : test::TempDir("engine_runlog") {}
};

// Everything written so far to a FILE* opened with tmpfile().
std::string contents(std::FILE* f) {
  std::fflush(f);
  const long end = std::ftell(f);
  std::string s(size_t(end), '\0');
  std::rewind(f);
  REQUIRE(std::fread(s.data(), 1, s.size(), f) == s.size());
  std::fseek(f, 0, SEEK_END);
  return s;
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void append_raw(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::app);
  f << bytes;
}

// The number after `key` ("12.5 img/s" -> 12.5 for key " img/s" searched backwards).
double number_before(const std::string& line, const std::string& suffix) {
  const size_t end = line.find(suffix);
  REQUIRE(end != std::string::npos);
  const size_t start = line.rfind(' ', end - 1);
  return std::stod(line.substr(start + 1, end - start - 1));
}

}  // namespace

TEST_CASE("ProgressBar::format_duration") {
  CHECK(ProgressBar::format_duration(0) == "0s");
  CHECK(ProgressBar::format_duration(12.9) == "12s");
  CHECK(ProgressBar::format_duration(59.99) == "59s");
  CHECK(ProgressBar::format_duration(60) == "1m00s");
  CHECK(ProgressBar::format_duration(185) == "3m05s");
  CHECK(ProgressBar::format_duration(3599) == "59m59s");
  CHECK(ProgressBar::format_duration(3720) == "1h02m");
  CHECK(ProgressBar::format_duration(86399) == "23h59m");
  CHECK(ProgressBar::format_duration(90000) == "1d01h");
  CHECK(ProgressBar::format_duration(-1) == "?");
  CHECK(ProgressBar::format_duration(std::nan("")) == "?");
  CHECK(ProgressBar::format_duration(INFINITY) == "?");
}

TEST_CASE("ProgressBar: plain lines when the output is not a terminal") {
  std::FILE* f = std::tmpfile();
  REQUIRE(f != nullptr);
  {
    ProgressBar bar(100, 64, f, 0.0);  // interval 0: every update prints a line
    bar.update(10, {{"G", 0.693147}, {"D", 1.386294}, {"R1", 0.000123456}});
    std::this_thread::sleep_for(std::chrono::milliseconds(60));
    bar.update(20, {{"G", 0.5}, {"D", 1.25}});
    bar.message("saved checkpoint");
    bar.finish();
    bar.finish();  // a second finish prints nothing
  }
  const std::vector<std::string> lines = lines_of(contents(f));
  std::fclose(f);
  REQUIRE(lines.size() == 3);
  const std::string& a = lines[0];
  CHECK(a.find('\r') == std::string::npos);
  CHECK(a.find("step 10/100 (10.0%)") != std::string::npos);
  CHECK(a.find("0.64 kimg") != std::string::npos);  // 10 steps * 64 images / 1000
  CHECK(a.find("G 0.6931 D 1.386 R1 0.0001235") != std::string::npos);
  CHECK(a.find("- img/s") != std::string::npos);  // one update: no rate yet
  CHECK(a.find("ETA ?") != std::string::npos);
  CHECK(a.find("elapsed") != std::string::npos);

  const std::string& b = lines[1];
  CHECK(b.find("step 20/100 (20.0%)") != std::string::npos);
  CHECK(b.find("1.28 kimg") != std::string::npos);
  // 10 steps of 64 images in at least 60 ms: at most 640 / 0.06 images per second, and > 0.
  const double rate = number_before(b, " img/s");
  CHECK(rate > 0);
  CHECK(rate <= 640 / 0.06 * 1.001);
  // ETA = 80 remaining steps at that rate; printed as a duration.
  CHECK(b.find("ETA ") != std::string::npos);
  CHECK(b.find("ETA ?") == std::string::npos);
  CHECK(lines[2] == "saved checkpoint");
}

TEST_CASE("ProgressBar: plain mode is throttled; the last step and finish still print") {
  std::FILE* f = std::tmpfile();
  REQUIRE(f != nullptr);
  ProgressBar bar(50, 8, f, 3600.0);
  for (int s = 1; s <= 49; ++s) bar.update(s, {{"loss", 1.0 / s}});
  CHECK(lines_of(contents(f)).size() == 1);  // only the first update
  bar.finish();                              // the latest state (step 49) is printed once
  std::vector<std::string> lines = lines_of(contents(f));
  REQUIRE(lines.size() == 2);
  CHECK(lines[0].find("step 1/50") != std::string::npos);
  CHECK(lines[1].find("step 49/50") != std::string::npos);

  // Reaching the total prints at once, and finish then adds nothing.
  bar.update(50, {});
  bar.finish();
  lines = lines_of(contents(f));
  REQUIRE(lines.size() == 3);
  CHECK(lines[2].find("step 50/50 (100.0%)") != std::string::npos);
  CHECK(lines[2].find("ETA") == std::string::npos);
  std::fclose(f);

  // Unknown total: no fraction, no ETA; large kimg and rates without exponents.
  std::FILE* g = std::tmpfile();
  ProgressBar open_ended(0, 4096, g, 0.0);
  open_ended.update(25000, {{"G", 12345.678}});
  const std::string line = contents(g);
  CHECK(line.find("step 25000 |") != std::string::npos);
  CHECK(line.find("102400 kimg") != std::string::npos);
  CHECK(line.find("G 12346") != std::string::npos);
  CHECK(line.find("ETA") == std::string::npos);
  std::fclose(g);

  CHECK_THROWS_AS(ProgressBar(-1, 1, stderr), Error);
}

TEST_CASE("ProgressBar: on a terminal the line is redrawn in place") {
  const int master = ::posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0) {
    MESSAGE("no pseudo-terminal available (posix_openpt failed): terminal mode not tested here");
    if (master >= 0) ::close(master);
    return;
  }
  const int slave = ::open(::ptsname(master), O_RDWR | O_NOCTTY);
  REQUIRE(slave >= 0);
  std::FILE* tty = ::fdopen(slave, "w");
  REQUIRE(tty != nullptr);
  REQUIRE(::isatty(::fileno(tty)) == 1);
  {
    ProgressBar bar(10, 2, tty);
    bar.update(1, {{"G", 1.0}});  // first: drawn
    bar.update(2, {{"G", 2.0}});  // within 0.25 s: not drawn
    bar.update(10, {{"G", 3.0}});  // last step: drawn
    bar.finish();
  }
  std::fflush(tty);
  // Read what the terminal received (non-blocking).
  ::fcntl(master, F_SETFL, ::fcntl(master, F_GETFL) | O_NONBLOCK);
  std::string got;
  char buf[4096];
  for (int tries = 0; tries < 50; ++tries) {
    const ssize_t n = ::read(master, buf, sizeof buf);
    if (n > 0) {
      got.append(buf, size_t(n));
      continue;
    }
    if (got.find('\n') != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::fclose(tty);
  ::close(master);
  CHECK(got.find("\rstep 1/10 (10.0%)") != std::string::npos);
  CHECK(got.find("G 2 ") == std::string::npos);  // throttled
  CHECK(got.find("\rstep 10/10 (100.0%)") != std::string::npos);
  CHECK(got.find("\x1b[K") != std::string::npos);
  // One line feed in all (from finish); the terminal may turn it into \r\n.
  CHECK(std::count(got.begin(), got.end(), '\n') == 1);
  CHECK(got.back() == '\n');
}

TEST_CASE("MetricsLog: one flushed line per record; read_metrics reads them back") {
  TempDir dir;
  const std::string path = dir.file("metrics.jsonl");
  MetricsLog log(path);
  for (int s = 1; s <= 5; ++s) {
    log.write({{"step", s}, {"G", 0.5 * s}, {"phase", "G_main"}});
    // Flushed: visible to another reader before the log is closed.
    const std::vector<nlohmann::json> seen = read_metrics(path);
    REQUIRE(seen.size() == size_t(s));
    CHECK(seen.back()["step"] == s);
  }
  log.write({{"step", 6}, {"G", std::nan("")}});
  const std::vector<nlohmann::json> all = read_metrics(path);
  REQUIRE(all.size() == 6);
  CHECK(all[2]["G"].get<double>() == 1.5);
  CHECK(all[2]["phase"] == "G_main");
  CHECK(all[5]["G"].is_null());  // JSON has no NaN
  CHECK(lines_of(slurp(path)).size() == 6);
  CHECK(log.path() == path);

  CHECK_THROWS_WITH_AS(read_metrics(dir.file("missing.jsonl")), doctest::Contains("missing.jsonl"), Error);
  CHECK_THROWS_WITH_AS(MetricsLog(dir.file("no/dir/metrics.jsonl")), doctest::Contains("no/dir/metrics.jsonl"), Error);
}

TEST_CASE("MetricsLog: a torn last line is skipped and does not corrupt the next record") {
  TempDir dir;
  const std::string path = dir.file("metrics.jsonl");
  {
    MetricsLog log(path);
    for (int s = 1; s <= 3; ++s) log.write({{"step", s}, {"D", 1.0}});
  }
  append_raw(path, R"({"step": 4, "D": 0.9)");  // the process died mid-line
  CHECK(read_metrics(path).size() == 3);
  {
    MetricsLog log(path);  // reopen without resume: appends on a fresh line
    log.write({{"step", 4}, {"D", 0.8}});
  }
  const std::vector<nlohmann::json> r = read_metrics(path);
  REQUIRE(r.size() == 4);
  CHECK(r[3]["step"] == 4);
  CHECK(r[3]["D"].get<double>() == 0.8);
  // Blank lines and garbage are skipped too.
  append_raw(path, "\n\nnot json\n[1,2]\n");
  CHECK(read_metrics(path).size() == 4);
}

TEST_CASE("MetricsLog: resuming drops the records after the checkpoint's step") {
  TempDir dir;
  const std::string path = dir.file("metrics.jsonl");
  {
    MetricsLog log(path);
    log.write({{"event", "start"}});  // no step: kept
    for (int s = 1; s <= 10; ++s) log.write({{"step", s}, {"G", double(s)}});
  }
  append_raw(path, R"({"step": 11, "G")");
  {
    MetricsLog log(path, 6);  // resumed from the checkpoint of step 6
    log.write({{"step", 7}, {"G", 70.0}});
  }
  const std::vector<nlohmann::json> r = read_metrics(path);
  REQUIRE(r.size() == 8);
  CHECK(r[0]["event"] == "start");
  for (int s = 1; s <= 6; ++s) CHECK(r[size_t(s)]["step"] == s);
  CHECK(r[7]["step"] == 7);
  CHECK(r[7]["G"].get<double>() == 70.0);
  CHECK(lines_of(slurp(path)).size() == 8);  // the torn line is gone, not just skipped
  // Truncation went through a temporary file that is gone now.
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) {
    ++files;
    CHECK(e.path().filename() == "metrics.jsonl");
  }
  CHECK(files == 1);

  // Resuming with no log yet creates it.
  const std::string fresh = dir.file("fresh.jsonl");
  { MetricsLog log(fresh, 100); }
  CHECK(fs::exists(fresh));
  CHECK(read_metrics(fresh).empty());
}

TEST_CASE("StopSignal: SIGINT and SIGTERM set the flag instead of killing") {
  StopSignal::install();
  StopSignal::reset();
  CHECK_FALSE(StopSignal::requested());
  CHECK(StopSignal::signal_number() == 0);
  REQUIRE(std::raise(SIGINT) == 0);
  CHECK(StopSignal::requested());
  CHECK(StopSignal::signal_number() == SIGINT);
  StopSignal::reset();
  CHECK_FALSE(StopSignal::requested());
  REQUIRE(std::raise(SIGTERM) == 0);
  CHECK(StopSignal::signal_number() == SIGTERM);
  StopSignal::reset();
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
}

TEST_CASE("StopSignal: a second signal terminates at once") {
  std::fflush(nullptr);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    StopSignal::install();
    std::raise(SIGINT);
    if (!StopSignal::requested()) ::_exit(3);
    std::raise(SIGINT);  // must not return
    ::_exit(4);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFSIGNALED(status));
  if (WIFSIGNALED(status)) CHECK(WTERMSIG(status) == SIGINT);
  if (WIFEXITED(status)) FAIL("child exited with ", WEXITSTATUS(status), " instead of dying of SIGINT");

  // One signal only: the child finishes normally.
  const pid_t calm = ::fork();
  REQUIRE(calm >= 0);
  if (calm == 0) {
    StopSignal::install();
    std::raise(SIGTERM);
    ::_exit(StopSignal::signal_number() == SIGTERM ? 7 : 3);
  }
  REQUIRE(::waitpid(calm, &status, 0) == calm);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 7);
}

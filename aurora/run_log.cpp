// run_log.cpp: the progress bar, the metrics log and the stop signal of a training run
// (aurora/run_log.h; DESIGN.md section 11: "progress bar with rate and ETA, metrics as JSONL").
//
// The status line (both modes):
//   step 1200/5000 (24.0%) | 76.8 kimg | 312.4 img/s | G 0.6931 D 1.386 | 3m05s elapsed | ETA 9m44s
// `step` is the number of steps done; the rate is measured over the updates of the last
// kRateWindow seconds (at least two updates), the ETA is (total - step) / rate. Values are shown
// with 4 significant digits.
#include "aurora/run_log.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "io/atomic_file.h"
#include "tensor/error.h"

namespace engine::aurora {

namespace {

using Clock = std::chrono::steady_clock;
constexpr double kRateWindow = 20.0;      // seconds of updates the rate is measured over
constexpr size_t kMaxWindowUpdates = 4096;  // bound on the memory of a very fast loop
constexpr double kRedrawInterval = 0.25;  // terminal redraws at most 4 times a second

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// 4 significant digits; no exponent for large magnitudes below 1e9 (kimg and img/s grow large).
std::string sig4(double v) {
  if (!std::isfinite(v)) return fmt::format("{}", v);
  const double a = std::fabs(v);
  if (a >= 1e4 && a < 1e9) return fmt::format("{:.0f}", v);
  return fmt::format("{:.4g}", v);
}

}  // namespace

// ---- ProgressBar ---------------------------------------------------------------------------------

ProgressBar::ProgressBar(int64_t total_steps, int64_t images_per_step, std::FILE* out, double plain_interval_s)
    : total_(total_steps),
      images_per_step_(images_per_step),
      out_(out),
      plain_interval_s_(plain_interval_s),
      tty_(out != nullptr && ::isatty(::fileno(out)) == 1),
      start_(Clock::now()),
      last_draw_(start_) {
  ENGINE_CHECK(out != nullptr, "ProgressBar: null output stream");
  ENGINE_CHECK(total_steps >= 0, "ProgressBar: total_steps must be >= 0 (0 = unknown), got {}", total_steps);
  ENGINE_CHECK(images_per_step >= 0, "ProgressBar: images_per_step must be >= 0, got {}", images_per_step);
  ENGINE_CHECK(plain_interval_s >= 0, "ProgressBar: plain_interval_s must be >= 0, got {}", plain_interval_s);
}

std::string ProgressBar::format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = int64_t(seconds);
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  if (s < 86400) return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
  return fmt::format("{}d{:02}h", s / 86400, (s % 86400) / 3600);
}

void ProgressBar::update(int64_t step, const std::vector<std::pair<std::string, double>>& values) {
  const Clock::time_point now = Clock::now();
  const bool first = first_step_ < 0;
  if (first) first_step_ = step;
  finished_ = false;

  window_.emplace_back(now, step);
  while (window_.size() > 2 &&
         (seconds_between(window_.front().first, now) > kRateWindow || window_.size() > kMaxWindowUpdates))
    window_.pop_front();
  double steps_per_s = 0.0;
  if (window_.size() >= 2) {
    const double dt = seconds_between(window_.front().first, now);
    if (dt > 0) steps_per_s = double(step - window_.front().second) / dt;
  }

  std::string line = total_ > 0 ? fmt::format("step {}/{} ({:.1f}%)", step, total_, 100.0 * double(step) / double(total_))
                                : fmt::format("step {}", step);
  line += fmt::format(" | {} kimg", sig4(double(step) * double(images_per_step_) / 1000.0));
  line += " | " + (steps_per_s > 0 ? sig4(steps_per_s * double(images_per_step_)) : std::string("-")) + " img/s";
  if (!values.empty()) {
    line += " |";
    for (const auto& [name, v] : values) line += " " + name + " " + sig4(v);
  }
  line += " | " + format_duration(seconds_between(start_, now)) + " elapsed";
  if (total_ > 0 && step < total_)
    line += " | ETA " + (steps_per_s > 0 ? format_duration(double(total_ - step) / steps_per_s) : std::string("?"));
  last_line_ = std::move(line);
  last_line_printed_ = false;

  const bool last = total_ > 0 && step >= total_;
  const double since = seconds_between(last_draw_, now);
  if (tty_) {
    if (first || last || since >= kRedrawInterval) {
      // \r back to the start of the line, the line, then erase what a longer previous line left.
      std::fprintf(out_, "\r%s\x1b[K", last_line_.c_str());
      std::fflush(out_);
      last_draw_ = now;
    }
  } else if (first || last || since >= plain_interval_s_) {
    std::fprintf(out_, "%s\n", last_line_.c_str());
    std::fflush(out_);
    last_draw_ = now;
    last_line_printed_ = true;
  }
}

void ProgressBar::message(const std::string& line) {
  if (tty_) {
    // Erase the bar, print the message on its own line, redraw the bar below it.
    std::fprintf(out_, "\r\x1b[K%s\n", line.c_str());
    if (!last_line_.empty() && !finished_) std::fprintf(out_, "%s", last_line_.c_str());
  } else {
    std::fprintf(out_, "%s\n", line.c_str());
  }
  std::fflush(out_);
}

void ProgressBar::finish() {
  if (finished_ || last_line_.empty()) return;
  finished_ = true;
  if (tty_)
    std::fprintf(out_, "\r%s\x1b[K\n", last_line_.c_str());
  else if (!last_line_printed_)
    std::fprintf(out_, "%s\n", last_line_.c_str());
  last_line_printed_ = true;
  std::fflush(out_);
}

// ---- MetricsLog ----------------------------------------------------------------------------------

namespace {

std::string read_whole_file(const std::string& path, bool* exists) {
  std::ifstream f(path, std::ios::binary);
  *exists = f.is_open();
  if (!f.is_open()) return {};
  std::ostringstream ss;
  ss << f.rdbuf();
  ENGINE_CHECK(!f.bad(), "metrics log '{}': read failed: {}", path, std::strerror(errno));
  return ss.str();
}

}  // namespace

MetricsLog::MetricsLog(const std::string& path, int64_t truncate_after_step) : path_(path) {
  bool exists = false;
  const std::string content = read_whole_file(path, &exists);
  bool needs_newline = exists && !content.empty() && content.back() != '\n';
  if (exists && truncate_after_step >= 0) {
    // Keep the records of steps <= the resumed step (and records without a step); drop later
    // ones and malformed lines. Written atomically: a crash here leaves the old log.
    std::string kept;
    std::istringstream lines(content);
    for (std::string line; std::getline(lines, line);) {
      if (line.empty()) continue;
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object()) continue;
      const auto it = j.find("step");
      if (it != j.end() && it->is_number() && it->get<double>() > double(truncate_after_step)) continue;
      kept += line;
      kept += '\n';
    }
    io::write_file_atomically(path, kept);
    needs_newline = false;
  }
  file_ = std::fopen(path.c_str(), "a");
  ENGINE_CHECK(file_ != nullptr, "metrics log '{}': cannot open for appending: {}", path, std::strerror(errno));
  // A torn last line (the process died mid-write) stays a line of its own, which read_metrics
  // skips, instead of corrupting the first new record.
  if (needs_newline && (std::fputc('\n', file_) == EOF || std::fflush(file_) != 0)) {
    const int err = errno;
    std::fclose(file_);
    file_ = nullptr;
    throw Error(fmt::format("metrics log '{}': write failed: {}", path, std::strerror(err)));
  }
}

MetricsLog::~MetricsLog() {
  if (file_ != nullptr) std::fclose(file_);
}

void MetricsLog::write(const nlohmann::json& record) {
  // Invalid UTF-8 in a string is replaced rather than thrown on: a log line is never worth a crash.
  // Non-finite numbers become null (JSON has no NaN).
  std::string line = record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  line += '\n';
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0)
    throw Error(fmt::format("metrics log '{}': write failed: {}", path_, std::strerror(errno)));
}

std::vector<nlohmann::json> read_metrics(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  ENGINE_CHECK(f.is_open(), "read_metrics: cannot open '{}': {}", path, std::strerror(errno));
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(f, line);) {
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) continue;
    out.push_back(std::move(j));
  }
  return out;
}

// ---- StopSignal ----------------------------------------------------------------------------------
//
// The handler only touches a lock-free atomic and async-signal-safe calls (write, sigaction,
// raise). On the second signal it restores the default action and re-raises: the signal is blocked
// while its handler runs, so it is delivered, with the default action (terminate), as soon as the
// handler returns.

namespace {

std::atomic<int> g_stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free, "StopSignal needs a lock-free atomic int");

void stop_handler(int sig) {
  const int previous = g_stop_signal.exchange(sig);
  if (previous != 0) {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, nullptr);
    raise(sig);
    return;
  }
  static const char msg[] =
      "\nstop requested: finishing the step and writing a checkpoint (send the signal again to exit now)\n";
  [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, msg, sizeof(msg) - 1);
}

}  // namespace

void StopSignal::install() {
  struct sigaction sa {};
  sa.sa_handler = stop_handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // a read or write in progress continues instead of failing with EINTR
  for (int sig : {SIGINT, SIGTERM})
    ENGINE_CHECK(sigaction(sig, &sa, nullptr) == 0, "StopSignal: sigaction({}) failed: {}", sig, std::strerror(errno));
}

bool StopSignal::requested() { return g_stop_signal.load() != 0; }
int StopSignal::signal_number() { return g_stop_signal.load(); }
void StopSignal::reset() { g_stop_signal.store(0); }

}  // namespace engine::aurora

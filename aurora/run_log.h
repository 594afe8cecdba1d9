// run_log.h: what a long run shows and records (DESIGN.md section 11: "progress bar with rate and
// ETA, metrics as JSONL").
//
//   ProgressBar   one status line, redrawn in place on a terminal (\r, at most ~4 times a second)
//                 and printed as plain lines every `plain_interval_s` when stderr is not a TTY
//                 (CI logs, nohup): step/total, kimg, images/s, named values, elapsed and ETA.
//   MetricsLog    metrics.jsonl: one JSON object per line, flushed per line (a crash loses at most
//                 the current line); reopening appends, and on --resume lines with a step beyond the
//                 resumed step are dropped first, so the log matches the checkpoint.
//                 read_metrics() reads it back (for the loss plot).
//   StopSignal    SIGINT/SIGTERM set a flag instead of killing the process, so the trainer can
//                 finish the step, write a checkpoint and exit; a second signal exits at once.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace engine::aurora {

class ProgressBar {
 public:
  // total_steps 0 = unknown (no ETA); kimg is computed from images_per_step.
  ProgressBar(int64_t total_steps, int64_t images_per_step, std::FILE* out = stderr, double plain_interval_s = 10.0);
  // Call after each step; values are shown in the given order ("G 0.693 D 1.386").
  void update(int64_t step, const std::vector<std::pair<std::string, double>>& values);
  void message(const std::string& line);  // print a line above the bar (does not break the bar)
  void finish();                          // final line + newline
  // "1h02m", "3m05s", "12s"
  static std::string format_duration(double seconds);

 private:
  int64_t total_, images_per_step_;
  std::FILE* out_;
  double plain_interval_s_;
  bool tty_;
  int64_t first_step_ = -1;
  std::chrono::steady_clock::time_point start_, last_draw_;
  std::string last_line_;
  // (time, step) of recent updates: the rate (and so the ETA) is measured over the last
  // 20 seconds or so, so it follows a run that speeds up (progressive growing) or slows down.
  std::deque<std::pair<std::chrono::steady_clock::time_point, int64_t>> window_;
  bool last_line_printed_ = false;  // plain mode: the latest line is already in the log
  bool finished_ = false;
};

class MetricsLog {
 public:
  // Opens (creates) `path` for appending. With truncate_after_step >= 0, lines whose "step" is
  // greater are removed first (atomically).
  explicit MetricsLog(const std::string& path, int64_t truncate_after_step = -1);
  ~MetricsLog();
  void write(const nlohmann::json& record);  // one line + flush
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

// Every record of a metrics.jsonl (malformed lines, e.g. a torn last line, are skipped).
std::vector<nlohmann::json> read_metrics(const std::string& path);

class StopSignal {
 public:
  static void install();         // SIGINT and SIGTERM
  static bool requested();       // a signal arrived
  static int signal_number();    // which (0 = none)
  static void reset();           // tests
};

}  // namespace engine::aurora

// watchdog.cpp: the collective timeout of dist/watchdog.h.
#include "dist/watchdog.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include <fmt/format.h>

#include "tensor/error.h"

namespace engine::dist {

double collective_timeout_from_env(double fallback) {
  const char* v = std::getenv("AURORA_COLLECTIVE_TIMEOUT_S");
  if (!v || !*v) return fallback;
  char* end = nullptr;
  errno = 0;
  const double t = std::strtod(v, &end);
  ENGINE_CHECK(errno == 0 && end && *end == '\0' && t >= 0,
               "AURORA_COLLECTIVE_TIMEOUT_S='{}' is not a non-negative number of seconds", v);
  return t;
}

CollectiveWatchdog::CollectiveWatchdog(int rank, double timeout_s, std::function<void(const std::string&)> on_timeout)
    : rank_(rank), timeout_s_(timeout_s), on_timeout_(std::move(on_timeout)) {
  if (enabled()) thread_ = std::thread([this] { run(); });
}

CollectiveWatchdog::~CollectiveWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

CollectiveWatchdog::Scope::Scope(CollectiveWatchdog* w, const char* op, const char* comm_name, int64_t bytes)
    : w_(w && w->enabled() ? w : nullptr) {
  if (!w_) return;
  std::lock_guard<std::mutex> lock(w_->mu_);
  w_->active_ = true;
  w_->op_ = op;
  w_->comm_ = comm_name;
  w_->bytes_ = bytes;
  ++w_->calls_;
  w_->start_ = std::chrono::steady_clock::now();
}

CollectiveWatchdog::Scope::~Scope() {
  if (!w_) return;
  std::lock_guard<std::mutex> lock(w_->mu_);
  w_->active_ = false;
}

void CollectiveWatchdog::run() {
  using namespace std::chrono;
  // Poll often enough that the report comes within ~10% of the timeout (and at least every 0.5 s).
  const auto poll = duration_cast<steady_clock::duration>(duration<double>(std::min(0.5, timeout_s_ / 10)));
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, poll, [this] { return stop_; });
    if (stop_ || !active_) continue;
    const double open_s = duration<double>(steady_clock::now() - start_).count();
    if (open_s < timeout_s_) continue;
    const std::string message = fmt::format(
        "aurora: collective timeout: [rank {}] {} on '{}' ({} bytes, collective call {} of this rank) has not "
        "completed after {:.1f} s (AURORA_COLLECTIVE_TIMEOUT_S={}). Another rank has probably failed, or the ranks "
        "called different collectives; ending every rank.",
        rank_, op_, comm_, bytes_, calls_, open_s, timeout_s_);
    lock.unlock();
    on_timeout_(message);
    return;
  }
}

}  // namespace engine::dist

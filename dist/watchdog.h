// watchdog.h: the collective timeout (issue 6: "collectives have a configurable timeout
// diagnostic"; docs/distributed.md).
//
// A collective that never completes is how a distributed job usually dies: one rank threw, took
// another branch, or called the collectives in a different order, and the others wait forever.
// Every MpiComm collective opens a CollectiveWatchdog::Scope; a background thread checks the open
// scope and, once it has been open longer than the timeout, prints
//   aurora: collective timeout: [rank 1] allreduce on 'world' (4096 bytes, call 17) has not
//   completed after 600.0 s ...
// and calls the abort callback (MPI_Abort: every rank ends). The timeout comes from
// AURORA_COLLECTIVE_TIMEOUT_S (seconds, default 600; 0 turns the watchdog off).
// One watchdog per process: the collectives of one rank run one at a time on one thread, so one
// open scope is enough, whatever the sub-communicator.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace engine::dist {

// AURORA_COLLECTIVE_TIMEOUT_S, or `fallback` when unset. An unparsable or negative value is an
// engine::Error naming the variable and the value.
double collective_timeout_from_env(double fallback = 600.0);

class CollectiveWatchdog {
 public:
  // on_timeout receives the full message; it should end the process (it is called once).
  CollectiveWatchdog(int rank, double timeout_s, std::function<void(const std::string&)> on_timeout);
  ~CollectiveWatchdog();
  CollectiveWatchdog(const CollectiveWatchdog&) = delete;
  CollectiveWatchdog& operator=(const CollectiveWatchdog&) = delete;

  double timeout_s() const { return timeout_s_; }
  bool enabled() const { return timeout_s_ > 0; }

  // RAII: the collective `op` (a string literal) on communicator `comm_name` is in flight.
  class Scope {
   public:
    Scope(CollectiveWatchdog* w, const char* op, const char* comm_name, int64_t bytes);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    CollectiveWatchdog* w_;
  };

 private:
  void run();

  int rank_;
  double timeout_s_;
  std::function<void(const std::string&)> on_timeout_;
  // The open scope. Written by the collective's thread, read by the watchdog thread; the mutex
  // keeps (op, comm, bytes, start) consistent with each other.
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool active_ = false;
  const char* op_ = "";
  const char* comm_ = "";
  int64_t bytes_ = 0;
  uint64_t calls_ = 0;
  std::chrono::steady_clock::time_point start_;
  std::thread thread_;
};

}  // namespace engine::dist

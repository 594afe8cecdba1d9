// timing.cpp (cuda): the profiler's CUDA-event timer and cudaMemGetInfo view (timing.h).
//
// Why events: a CUDA op returns to the host as soon as its kernels are queued, so the host's
// wall-clock time of an op call measures the launch, not the work. An event recorded on the
// compute stream at the call's entry and exit completes when the stream reaches it, so the
// difference between the two is the time the GPU spent on everything the call queued (and on
// any work queued before it that was still running: the stream is in order). Reading an event's
// time needs the stream to have passed it; resolve does that once for all pending marks, so
// profiling adds no per-op synchronisation.
//
// Thread safety: the profiler calls every function with its own lock held (profiler.h), which
// also serialises access to the state below.
#include "tensor/cuda/timing.h"

#include <map>
#include <set>
#include <vector>

#include "tensor/cuda/cuda_api.h"
#include "tensor/cuda/device.h"

namespace engine::cuda {

namespace {

struct Mark {
  int device = -1;
  cudaEvent_t event = nullptr;  // null once resolved (the event is back in the pool)
};

struct TimerState {
  std::vector<Mark> marks;  // mark id = index + 1
  std::map<int, std::vector<cudaEvent_t>> pool;  // unused events per device
  std::map<int, cudaEvent_t> reference;          // per device: time zero of its marks
};

TimerState& timer_state() {
  static TimerState* s = new TimerState();  // never destroyed: ops may end during exit
  return *s;
}

// An event of device `index` from the pool, or a new one; null on failure.
cudaEvent_t take_event(int index) {
  std::vector<cudaEvent_t>& free_events = timer_state().pool[index];
  if (!free_events.empty()) {
    cudaEvent_t e = free_events.back();
    free_events.pop_back();
    return e;
  }
  cudaEvent_t e = nullptr;
  if (cudaEventCreate(&e) != cudaSuccess) {
    (void)cudaGetLastError();
    return nullptr;
  }
  return e;
}

// Called from OpScope's constructor and destructor: never throws; a failure gives mark 0 (the
// call then keeps its wall-clock time).
uint64_t record_mark(int index) {
  try {
    DeviceGuard guard(Device::cuda(index));
    const Stream stream = compute_stream(Device::cuda(index));
    TimerState& s = timer_state();
    if (!s.reference.count(index)) {
      cudaEvent_t ref = take_event(index);
      if (ref == nullptr) return 0;
      if (cudaEventRecord(ref, stream) != cudaSuccess) {
        (void)cudaGetLastError();
        s.pool[index].push_back(ref);
        return 0;
      }
      s.reference[index] = ref;
    }
    cudaEvent_t e = take_event(index);
    if (e == nullptr) return 0;
    if (cudaEventRecord(e, stream) != cudaSuccess) {
      (void)cudaGetLastError();
      s.pool[index].push_back(e);
      return 0;
    }
    s.marks.push_back({index, e});
    return s.marks.size();
  } catch (...) {
    return 0;
  }
}

void resolve_marks(const uint64_t* ids, double* out_us, size_t n) {
  TimerState& s = timer_state();
  std::set<int> devices;
  for (size_t i = 0; i < n; ++i)
    if (ids[i] >= 1 && ids[i] <= s.marks.size() && s.marks[ids[i] - 1].event != nullptr)
      devices.insert(s.marks[ids[i] - 1].device);
  // One synchronisation per device: afterwards every event recorded so far has completed.
  for (int d : devices) synchronize(Device::cuda(d));
  for (size_t i = 0; i < n; ++i) {
    out_us[i] = -1;
    if (ids[i] < 1 || ids[i] > s.marks.size()) continue;
    Mark& m = s.marks[ids[i] - 1];
    if (m.event == nullptr) continue;
    auto ref = s.reference.find(m.device);
    float ms = 0;
    if (ref != s.reference.end() && cudaEventElapsedTime(&ms, ref->second, m.event) == cudaSuccess)
      out_us[i] = double(ms) * 1000.0;
    else
      (void)cudaGetLastError();
    s.pool[m.device].push_back(m.event);
    m.event = nullptr;
  }
}

void reset_all_marks() {
  TimerState& s = timer_state();
  for (Mark& m : s.marks)
    if (m.event != nullptr) s.pool[m.device].push_back(m.event);
  s.marks.clear();
  for (const auto& [device, event] : s.reference) s.pool[device].push_back(event);
  s.reference.clear();
}

int64_t device_used_bytes(int index) {
  try {
    DeviceGuard guard(Device::cuda(index));
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) {
      (void)cudaGetLastError();
      return -1;
    }
    return int64_t(total_bytes) - int64_t(free_bytes);
  } catch (...) {
    return -1;
  }
}

}  // namespace

memory::DeviceTimer device_timer() {
  memory::DeviceTimer t;
  t.record = record_mark;
  t.resolve = resolve_marks;
  t.reset_marks = reset_all_marks;
  t.used_bytes = device_used_bytes;
  return t;
}

}  // namespace engine::cuda

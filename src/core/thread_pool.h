// The thread pool every parallel kernel shares. It is passed explicitly (no global pool on hot
// paths): a caller that wants one thread makes a pool of 1 and everything runs inline.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace dsa {

class ThreadPool {
 public:
  // threads <= 0 means one per hardware thread.
  explicit ThreadPool(int threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }  // the calling thread works too

  // Calls body(begin, end) over disjoint ranges covering [0, n), each at least `grain` long
  // (except the last), and returns when all are done. The first exception thrown by a body is
  // rethrown here. Not reentrant: a body must not call parallel_for on the same pool.
  // Idle workers spin for up to kSpinMicroseconds after a job before they sleep, so the
  // back-to-back calls of a decode step find them awake.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body);

  static int hardware_threads();

  static constexpr int kSpinMicroseconds = 100;

 private:
  void worker_loop();
  void run_chunks();

  std::vector<std::thread> workers_;
  // Publishing a job and joining one happen under mutex_; waiting for the next job and for the
  // end of one spin on the atomics first (waking a sleeping thread costs 10-20 us, as long as a
  // small decode op), then sleep on wake_.
  std::mutex mutex_;
  std::condition_variable wake_;
  // The job in flight: written under mutex_ while no worker is busy, read by busy workers.
  const std::function<void(int64_t, int64_t)>* body_ = nullptr;
  int64_t n_ = 0;
  int64_t chunk_ = 0;
  int64_t chunks_ = 0;
  std::atomic<int64_t> next_chunk_{0};
  std::atomic<int> busy_workers_{0};     // workers inside the current job
  std::atomic<uint64_t> generation_{0};  // bumped when a job is published
  std::atomic<bool> stopping_{false};
  int sleeping_workers_ = 0;  // guarded by mutex_
  std::exception_ptr error_;  // guarded by mutex_
};

}  // namespace dsa

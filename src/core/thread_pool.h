// The thread pool every parallel kernel shares. It is passed explicitly (no global pool on hot
// paths): a caller that wants one thread makes a pool of 1 and everything runs inline.
#pragma once

#include <atomic>
#include <condition_variable>
#include <exception>
#include <cstdint>
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
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body);

  static int hardware_threads();

 private:
  void worker_loop();
  void run_chunks();

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  // The job in flight; guarded by mutex_ except the atomic chunk counter.
  const std::function<void(int64_t, int64_t)>* body_ = nullptr;
  int64_t n_ = 0;
  int64_t chunk_ = 0;
  int64_t chunks_ = 0;
  std::atomic<int64_t> next_chunk_{0};
  int busy_workers_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
  std::exception_ptr error_;
};

}  // namespace dsa

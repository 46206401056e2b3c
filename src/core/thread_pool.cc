#include "core/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <utility>

namespace dsa {

int ThreadPool::hardware_threads() { return std::max(1u, std::thread::hardware_concurrency()); }

ThreadPool::ThreadPool(int threads) {
  const int total = threads > 0 ? threads : hardware_threads();
  for (int i = 1; i < total; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& worker : workers_) worker.join();
}

void ThreadPool::run_chunks() {
  for (;;) {
    const int64_t chunk = next_chunk_.fetch_add(1);
    if (chunk >= chunks_) return;
    const int64_t begin = chunk * chunk_;
    const int64_t end = std::min(n_, begin + chunk_);
    try {
      (*body_)(begin, end);
    } catch (...) {
      std::lock_guard lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
  }
}

void ThreadPool::worker_loop() {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      // A worker that wakes after the job ended must not touch the next job's counters: it joins
      // only while a job is published, and the caller keeps the job fixed while any worker is busy.
      if (body_ == nullptr) continue;
      ++busy_workers_;
    }
    run_chunks();
    {
      std::lock_guard lock(mutex_);
      --busy_workers_;
    }
    done_.notify_all();
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain,
                              const std::function<void(int64_t, int64_t)>& body) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  // About 4 chunks per thread balances uneven work without much scheduling overhead.
  const int64_t target_chunks = int64_t(size()) * 4;
  const int64_t chunk = std::max(grain, (n + target_chunks - 1) / target_chunks);
  if (workers_.empty() || chunk >= n) {
    body(0, n);
    return;
  }
  {
    std::lock_guard lock(mutex_);
    body_ = &body;
    n_ = n;
    chunk_ = chunk;
    chunks_ = (n + chunk - 1) / chunk;
    next_chunk_ = 0;
    error_ = nullptr;
    ++generation_;
  }
  wake_.notify_all();
  run_chunks();
  std::exception_ptr error;
  {
    // Wait until every chunk is claimed and no worker is still inside this job.
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return busy_workers_ == 0 && next_chunk_.load() >= chunks_; });
    body_ = nullptr;
    error = std::exchange(error_, nullptr);
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace dsa

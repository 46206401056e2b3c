#include "core/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace dsa {
namespace {

// Tells the core this is a spin-wait loop (saves power, frees the sibling hyperthread).
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

// Spins until `done()` or until kSpinMicroseconds passed; returns done().
template <typename Done>
bool spin_until(Done&& done) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::microseconds(ThreadPool::kSpinMicroseconds);
  for (int polls = 1;; ++polls) {
    if (done()) return true;
    cpu_relax();
    if (polls % 64 == 0 && std::chrono::steady_clock::now() > deadline) return done();
  }
}

}  // namespace

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
    spin_until([&] { return stopping_.load() || generation_.load() != seen; });
    {
      std::unique_lock lock(mutex_);
      if (!stopping_ && generation_.load() == seen) {
        ++sleeping_workers_;
        wake_.wait(lock, [&] { return stopping_.load() || generation_.load() != seen; });
        --sleeping_workers_;
      }
      if (stopping_) return;
      seen = generation_.load();
      // A worker that arrives after the job ended must not touch the next job's fields: it joins
      // only while a job is published, and the caller keeps the job fixed while any worker is busy.
      if (body_ == nullptr) continue;
      ++busy_workers_;
    }
    run_chunks();
    --busy_workers_;
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
  bool wake_sleepers = false;
  {
    std::lock_guard lock(mutex_);
    body_ = &body;
    n_ = n;
    chunk_ = chunk;
    chunks_ = (n + chunk - 1) / chunk;
    next_chunk_ = 0;
    error_ = nullptr;
    ++generation_;
    wake_sleepers = sleeping_workers_ > 0;
  }
  if (wake_sleepers) wake_.notify_all();
  run_chunks();  // returns once every chunk is claimed
  // Wait until no worker is inside the job. Workers join under the mutex, so busy == 0 seen
  // under it (with body_ then cleared) means none is inside and none can join any more.
  std::exception_ptr error;
  for (;;) {
    if (!spin_until([&] { return busy_workers_.load() == 0; })) std::this_thread::yield();
    std::lock_guard lock(mutex_);
    if (busy_workers_.load() != 0) continue;
    body_ = nullptr;
    error = std::exchange(error_, nullptr);
    break;
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace dsa

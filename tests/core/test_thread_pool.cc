#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"

namespace dsa {
namespace {

TEST(ThreadPool, CoversEveryIndexExactlyOnce) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int64_t n : {0, 1, 7, 100, 1000, 12345}) {
      for (int64_t grain : {1, 16, 5000}) {
        std::vector<std::atomic<int>> hits(n);
        pool.parallel_for(n, grain, [&](int64_t begin, int64_t end) {
          ASSERT_LE(begin, end);
          for (int64_t i = begin; i < end; ++i) hits[i]++;
        });
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n " << n << " i " << i;
      }
    }
  }
}

TEST(ThreadPool, ManyConsecutiveJobs) {
  ThreadPool pool(4);
  std::atomic<int64_t> total{0};
  for (int job = 0; job < 2000; ++job) {
    pool.parallel_for(64, 1, [&](int64_t begin, int64_t end) { total += end - begin; });
  }
  EXPECT_EQ(total.load(), 2000 * 64);
}

// Two chunks that each wait for the other to start can only finish if a worker runs one while
// the caller runs the other: the worker must join, whether it was spinning (back-to-back jobs)
// or asleep (a pause longer than the spin).
bool both_chunks_ran_at_once(ThreadPool& pool) {
  std::atomic<int> started{0};
  std::atomic<bool> met{true};
  pool.parallel_for(2, 1, [&](int64_t, int64_t) {
    ++started;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (started.load() < 2) {
      if (std::chrono::steady_clock::now() > deadline) {
        met = false;
        return;
      }
      std::this_thread::yield();
    }
  });
  return met.load();
}

TEST(ThreadPool, WorkersJoinWhetherSpinningOrAsleep) {
  ThreadPool pool(2);
  for (int job = 0; job < 20; ++job) ASSERT_TRUE(both_chunks_ran_at_once(pool)) << job;
  for (int job = 0; job < 3; ++job) {
    std::this_thread::sleep_for(std::chrono::microseconds(20 * ThreadPool::kSpinMicroseconds));
    ASSERT_TRUE(both_chunks_ran_at_once(pool)) << "after a pause, job " << job;
  }
}

TEST(ThreadPool, RethrowsTheFirstError) {
  ThreadPool pool(3);
  EXPECT_THROW(pool.parallel_for(100, 1,
                                 [](int64_t begin, int64_t) {
                                   if (begin >= 50) fail("chunk at {} failed", begin);
                                 }),
               Error);
  // The pool still works afterwards.
  std::atomic<int> count{0};
  pool.parallel_for(10, 1, [&](int64_t b, int64_t e) { count += int(e - b); });
  EXPECT_EQ(count.load(), 10);
}

}  // namespace
}  // namespace dsa

// The generation side of `dsa serve`: a bounded queue of requests and one worker thread that runs
// them through the single-sequence runtime (runtime/generator.h), one at a time, in arrival order.
//
// This is the seam where a scheduler with continuous batching will go: the API layer only
// submits jobs and reads their events, and never touches the model. Each job is a self-contained
// generation (the sequence is reset before it), so replacing the worker with a scheduler that
// runs many jobs per forward step changes nothing above this interface.
//
// Cancelling a job (its client went away) stops its generation at the next token, or the next
// prefill chunk, and frees the worker for the next job.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "runtime/generator.h"
#include "runtime/sampler.h"
#include "server/metrics.h"

namespace dsa::server {

using Clock = std::chrono::steady_clock;

struct GenerationJob {
  std::vector<int32_t> prompt;  // fits in the context (checked by the caller)
  SamplerParams sampling;       // with its seed
  GenerationParams params;
};

struct JobEvent {
  enum class Kind { kText, kDone, kFailed };
  Kind kind = Kind::kText;
  std::string text;       // kText: the next piece of generated text (whole UTF-8 characters)
  GenerationStats stats;  // kDone
  std::string error;      // kFailed: what went wrong, for the client
};

// One request's generation, shared by the worker (which pushes events) and the connection
// thread (which reads them and may cancel). Ends with exactly one kDone or kFailed.
class Job {
 public:
  explicit Job(GenerationJob spec);
  const GenerationJob& spec() const { return spec_; }
  Clock::time_point arrival() const { return arrival_; }

  // The next event; blocks until there is one.
  JobEvent next();
  // From any thread: the job stops at its next token (or is skipped if still queued).
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }

  void push(JobEvent event);

 private:
  GenerationJob spec_;
  Clock::time_point arrival_;
  std::atomic<bool> cancelled_{false};
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<JobEvent> events_;
};

struct EngineOptions {
  size_t max_waiting = 16;  // queued jobs beyond the running one; more are refused
};

class Engine {
 public:
  Engine(EngineOptions options, Metrics& metrics);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Starts the worker on `generator`, which must outlive shutdown(). Before it, submit() refuses.
  void start(Generator& generator);
  bool ready() const { return ready_; }

  // The queued job, or nullptr when the queue is full or the engine is not running.
  std::shared_ptr<Job> submit(GenerationJob job);

  // Fails the queued jobs, stops the running one, and joins the worker. Idempotent, but not to
  // be called from two threads at once.
  void shutdown();

  int64_t running() const { return running_; }
  int64_t waiting() const;
  CacheGauges cache() const;

 private:
  void work();
  void run(Job& job);

  EngineOptions options_;
  Metrics& metrics_;
  Generator* generator_ = nullptr;
  std::atomic<bool> ready_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<int64_t> running_{0};
  std::atomic<int64_t> cache_tokens_{0};
  std::atomic<int64_t> cache_capacity_{0};
  std::atomic<uint64_t> cache_bytes_{0};
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::thread worker_;
};

}  // namespace dsa::server

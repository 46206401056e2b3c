// The generation side of `dsa serve`: a bounded queue of requests and one worker thread that runs
// them with continuous batching. The worker holds `parallel` slots, each with its own KV cache of
// the whole context. Every step it admits waiting jobs into free slots (in arrival order), then
// runs one Model::forward_batch over a decode row of every generating slot and prefill chunks of
// the prompts still being read (chunked prefill, at most `step_tokens` prompt tokens a step), so
// each weight is read once per step for all of them. Jobs join and leave between steps. Each job
// is a GenerationRun (runtime/generation_run.h): sampling, stop strings and streamed text are
// those of `dsa run`.
//
// Prefix cache: a slot keeps what its last job left in its cache. A new job goes to the free slot
// whose cached tokens share the longest prefix with its prompt (else the least recently used),
// and only the rest of the prompt is prefilled: a shared system prompt, tools, or the earlier
// turns of a conversation are computed once, the indexer's keys included. Reuse is in whole
// prefill chunks (-b), the boundaries at which every prompt is cut, so a request that runs alone
// gets the same logits bit for bit with or without a cache hit: the same seed gives the same
// text. Requests batched together share GEMMs whose kernel is picked by the step's row count, so
// under load the low bits of the logits can differ from a run alone (as in vLLM and llama.cpp).
//
// The API layer only submits jobs and reads their events, and never touches the model.
// Cancelling a job (its client went away) ends it before the next step and frees its slot.
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

#include "runtime/generation_run.h"
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
  size_t max_waiting = 16;    // queued jobs beyond the running ones; more are refused
  int64_t parallel = 1;       // slots: sequences generated at once
  int64_t step_tokens = 512;  // prompt tokens per forward step, over all prefilling slots
  bool prefix_cache = true;   // reuse the cached prefix a free slot shares with a prompt
  uint64_t kv_memory = 0;     // bytes the slots' caches may take together; 0: no limit
};

class Engine {
 public:
  Engine(EngineOptions options, Metrics& metrics);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Allocates the slots' caches of `context` tokens and starts the worker. The model, tokenizer
  // and pool must outlive shutdown(). Before it, submit() refuses. Throws dsa::Error for a
  // context the model cannot hold, or caches over kv_memory (saying how many slots would fit).
  void start(const Model& model, const text::Tokenizer& tokenizer, int64_t context,
             ThreadPool& pool);
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
  struct Slot;

  void work();
  // Moves waiting jobs into free slots; false when nothing is running or waiting (the worker
  // then sleeps) or the engine is stopping.
  bool admit();
  Slot& choose_slot(const GenerationJob& job);
  // The tokens of `slot`'s cache that `job` can keep.
  int64_t reusable_prefix(const Slot& slot, const GenerationJob& job) const;
  void begin(Slot& slot, std::shared_ptr<Job> job);
  // One forward step over the slots' next tokens.
  void step();
  void end(Slot& slot, const std::string& label, JobEvent event);
  void update_cache_gauges();

  EngineOptions options_;
  Metrics& metrics_;
  const Model* model_ = nullptr;
  const text::Tokenizer* tokenizer_ = nullptr;
  ThreadPool* pool_ = nullptr;
  std::vector<std::unique_ptr<Slot>> slots_;  // the worker's only
  uint64_t admissions_ = 0;                   // the worker's only
  std::atomic<bool> ready_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<int64_t> running_{0};
  std::atomic<int64_t> cache_tokens_{0};
  std::atomic<int64_t> cache_capacity_{0};
  std::atomic<uint64_t> cache_bytes_{0};
  std::atomic<int64_t> prefix_tokens_{0};
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::thread worker_;  // declared last: it starts after, and is joined before, the rest
};

}  // namespace dsa::server

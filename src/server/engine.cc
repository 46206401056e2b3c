#include "server/engine.h"

#include <fmt/format.h>

#include <utility>

#include "core/error.h"
#include "core/printable.h"

namespace dsa::server {
namespace {

// Thrown from the generator's callbacks to stop a cancelled job: the generator has no other
// way to stop early, and the sequence is reset before the next job anyway, so leaving it
// half-extended is harmless.
struct Cancelled {};

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

const char* finish_label(StopReason stop) {
  return stop == StopReason::kMaxTokens || stop == StopReason::kContextFull ? "length" : "stop";
}

}  // namespace

Job::Job(GenerationJob spec) : spec_(std::move(spec)), arrival_(Clock::now()) {}

JobEvent Job::next() {
  std::unique_lock lock(mutex_);
  ready_.wait(lock, [&] { return !events_.empty(); });
  JobEvent e = std::move(events_.front());
  events_.pop_front();
  return e;
}

void Job::push(JobEvent event) {
  {
    std::lock_guard lock(mutex_);
    events_.push_back(std::move(event));
  }
  ready_.notify_one();
}

Engine::Engine(EngineOptions options, Metrics& metrics) : options_(options), metrics_(metrics) {}

Engine::~Engine() { shutdown(); }

void Engine::start(Generator& generator) {
  std::lock_guard lock(mutex_);
  DSA_CHECK(!worker_.joinable(), "Engine::start called twice");
  if (stopping_) return;  // shut down while the model loaded
  generator_ = &generator;
  cache_capacity_ = generator.context_size();
  cache_bytes_ = generator.cache().bytes();
  ready_ = true;
  worker_ = std::thread([this] { work(); });
}

std::shared_ptr<Job> Engine::submit(GenerationJob spec) {
  std::lock_guard lock(mutex_);
  if (!ready_ || stopping_ || queue_.size() >= options_.max_waiting) return nullptr;
  auto job = std::make_shared<Job>(std::move(spec));
  queue_.push_back(job);
  wake_.notify_one();
  return job;
}

int64_t Engine::waiting() const {
  std::lock_guard lock(mutex_);
  return int64_t(queue_.size());
}

CacheGauges Engine::cache() const {
  return CacheGauges{cache_tokens_.load(), cache_capacity_.load(), cache_bytes_.load()};
}

void Engine::shutdown() {
  std::deque<std::shared_ptr<Job>> left;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    ready_ = false;
    left.swap(queue_);
  }
  wake_.notify_all();
  for (const auto& job : left) {
    job->push(JobEvent{JobEvent::Kind::kFailed, "", {}, "the server is shutting down"});
  }
  if (worker_.joinable()) worker_.join();
}

void Engine::work() {
  while (true) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      running_ = 1;
    }
    run(*job);
    running_ = 0;
  }
}

void Engine::run(Job& job) {
  const GenerationJob& spec = job.spec();
  const int64_t prompt = int64_t(spec.prompt.size());
  const auto finished = [&](const std::string& label, int64_t generated) {
    metrics_.request_finished(label, prompt, generated,
                              seconds_between(job.arrival(), Clock::now()));
  };
  if (job.cancelled()) {  // its client left while it waited
    finished("abort", 0);
    job.push(JobEvent{JobEvent::Kind::kFailed, "", {}, "cancelled"});
    return;
  }
  Generator& generator = *generator_;
  generator.reset();
  cache_tokens_ = 0;
  const auto stop_requested = [&] { return job.cancelled() || stopping_; };
  bool first = true;
  Clock::time_point last = job.arrival();
  GenerationCallbacks callbacks;
  callbacks.on_prefill = [&](int64_t, int64_t) {
    if (stop_requested()) throw Cancelled{};
  };
  callbacks.on_text = [&](std::string_view text) {
    const Clock::time_point now = Clock::now();
    if (first) {
      metrics_.time_to_first_token(seconds_between(job.arrival(), now));
      first = false;
    } else {
      metrics_.inter_token(seconds_between(last, now));
    }
    last = now;
    cache_tokens_ = int64_t(generator.tokens().size());
    if (stop_requested()) throw Cancelled{};
    job.push(JobEvent{JobEvent::Kind::kText, std::string(text), {}, ""});
  };
  try {
    Sampler sampler(spec.sampling);
    const GenerationStats stats = generator.generate(spec.prompt, sampler, spec.params, callbacks);
    cache_tokens_ = stats.context_tokens;
    finished(finish_label(stats.stop), stats.generated_tokens);
    job.push(JobEvent{JobEvent::Kind::kDone, "", stats, ""});
  } catch (const Cancelled&) {
    finished("abort", int64_t(generator.tokens().size()) - prompt);
    job.push(JobEvent{
        JobEvent::Kind::kFailed, "", {}, stopping_ ? "the server is shutting down" : "cancelled"});
  } catch (const Error& e) {
    finished("error", 0);
    job.push(JobEvent{JobEvent::Kind::kFailed, "", {}, printable(e.what())});
  } catch (const std::exception& e) {
    finished("error", 0);
    job.push(JobEvent{
        JobEvent::Kind::kFailed, "", {}, fmt::format("internal error: {}", printable(e.what()))});
  }
}

}  // namespace dsa::server

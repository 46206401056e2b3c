#include "server/engine.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>
#include <utility>

#include "core/error.h"
#include "core/printable.h"

namespace dsa::server {
namespace {

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

const char* finish_label(StopReason stop) {
  return stop == StopReason::kMaxTokens || stop == StopReason::kContextFull ? "length" : "stop";
}

bool same_forward(const ForwardOptions& a, const ForwardOptions& b) {
  return a.attention == b.attention && a.prefill_kernel == b.prefill_kernel &&
         a.reference_attention == b.reference_attention;
}

}  // namespace

// A sequence of the batch: its own cache and token history, and the run of the job it holds.
// Slots live on the heap, so the run's and the callbacks' references to them stay valid.
struct Engine::Slot {
  Slot(const ModelConfig& config, int64_t context)
      : cache(config, context), logits(size_t(config.vocab_size)) {}

  bool busy() const { return job != nullptr; }

  KvCache cache;
  std::vector<int32_t> tokens;
  std::vector<float> logits;  // [vocab] of its last row in the last step
  std::shared_ptr<Job> job;   // null: free
  uint64_t admitted = 0;      // admission order: prompts are prefilled oldest first
  std::optional<Sampler> sampler;
  GenerationCallbacks callbacks;
  std::optional<GenerationRun> run;
  bool first_text = true;
  Clock::time_point last_text;
};

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

void Engine::start(const Model& model, const text::Tokenizer& tokenizer, int64_t context,
                   ThreadPool& pool) {
  DSA_CHECK(options_.parallel >= 1 && options_.step_tokens >= 1, "Engine: bad options");
  std::vector<std::unique_ptr<Slot>> slots;
  for (int64_t i = 0; i < options_.parallel; ++i) {
    slots.push_back(std::make_unique<Slot>(model.config(), context));
  }
  std::lock_guard lock(mutex_);
  DSA_CHECK(!worker_.joinable(), "Engine::start called twice");
  if (stopping_) return;  // shut down while the model loaded
  model_ = &model;
  tokenizer_ = &tokenizer;
  pool_ = &pool;
  slots_ = std::move(slots);
  cache_capacity_ = context * options_.parallel;
  update_cache_gauges();
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
  while (admit()) step();
  for (const auto& slot : slots_) {
    if (slot->busy()) {
      end(*slot, "abort", JobEvent{JobEvent::Kind::kFailed, "", {}, "the server is shutting down"});
    }
  }
}

bool Engine::admit() {
  std::vector<std::shared_ptr<Job>> admitted;
  {
    std::unique_lock lock(mutex_);
    const auto any_busy = [&] {
      return std::any_of(slots_.begin(), slots_.end(), [](const auto& s) { return s->busy(); });
    };
    wake_.wait(lock, [&] { return stopping_ || !queue_.empty() || any_busy(); });
    if (stopping_) return false;
    int64_t free =
        std::count_if(slots_.begin(), slots_.end(), [](const auto& s) { return !s->busy(); });
    while (free > 0 && !queue_.empty()) {
      admitted.push_back(std::move(queue_.front()));
      queue_.pop_front();
      --free;
    }
  }
  for (auto& job : admitted) {
    if (job->cancelled()) {  // its client left while it waited
      metrics_.request_finished("abort", int64_t(job->spec().prompt.size()), 0,
                                seconds_between(job->arrival(), Clock::now()));
      job->push(JobEvent{JobEvent::Kind::kFailed, "", {}, "cancelled"});
      continue;
    }
    for (const auto& slot : slots_) {
      if (!slot->busy()) {
        begin(*slot, std::move(job));
        break;
      }
    }
  }
  running_ = std::count_if(slots_.begin(), slots_.end(), [](const auto& s) { return s->busy(); });
  return true;
}

void Engine::begin(Slot& slot, std::shared_ptr<Job> job) {
  slot.job = std::move(job);
  slot.admitted = ++admissions_;
  slot.tokens.clear();
  slot.cache.truncate(0);
  slot.first_text = true;
  Job& j = *slot.job;
  slot.callbacks.on_text = [this, &slot, &j](std::string_view text) {
    const Clock::time_point now = Clock::now();
    if (slot.first_text) {
      metrics_.time_to_first_token(seconds_between(j.arrival(), now));
      slot.first_text = false;
    } else {
      metrics_.inter_token(seconds_between(slot.last_text, now));
    }
    slot.last_text = now;
    j.push(JobEvent{JobEvent::Kind::kText, std::string(text), {}, ""});
  };
  try {
    slot.sampler.emplace(j.spec().sampling);
    slot.run.emplace(*model_, *tokenizer_, slot.cache, slot.tokens, j.spec().prompt, *slot.sampler,
                     j.spec().params, slot.callbacks);
  } catch (const Error& e) {
    end(slot, "error", JobEvent{JobEvent::Kind::kFailed, "", {}, printable(e.what())});
  }
}

void Engine::step() {
  // Cancelled jobs leave first, so their slots are free for the next admission.
  for (const auto& slot : slots_) {
    if (slot->busy() && slot->job->cancelled()) {
      end(*slot, "abort", JobEvent{JobEvent::Kind::kFailed, "", {}, "cancelled"});
    }
  }
  // Every generating slot runs its sampled token; prompts share the step's prefill budget,
  // oldest first. A step runs one set of forward options (the API gives every job the same):
  // slots asking for others wait for a step of their own.
  std::vector<Slot*> decoding, prefilling;
  for (const auto& slot : slots_) {
    if (!slot->busy()) continue;
    (slot->run->prefilling() ? prefilling : decoding).push_back(slot.get());
  }
  std::sort(prefilling.begin(), prefilling.end(),
            [](const Slot* a, const Slot* b) { return a->admitted < b->admitted; });
  const Slot* oldest = nullptr;
  for (Slot* s : decoding) {
    if (!oldest || s->admitted < oldest->admitted) oldest = s;
  }
  if (!prefilling.empty() && (!oldest || prefilling[0]->admitted < oldest->admitted)) {
    oldest = prefilling[0];
  }
  if (!oldest) return;
  ForwardOptions options = oldest->job->spec().params.forward;
  options.all_logits = false;

  std::vector<Slot*> batch;
  std::vector<SequenceChunk> chunks;
  const auto add = [&](Slot* s, int64_t max_tokens) {
    if (!same_forward(s->job->spec().params.forward, options)) return;
    const std::span<const int32_t> tokens = s->run->next_tokens(max_tokens);
    batch.push_back(s);
    chunks.push_back({tokens, &s->cache, s->logits});
  };
  for (Slot* s : decoding) add(s, 1);
  int64_t budget = options_.step_tokens;
  for (Slot* s : prefilling) {
    if (budget <= 0) break;
    const int64_t chunk = std::min(budget, s->job->spec().params.prefill_chunk);
    add(s, chunk);
    if (!batch.empty() && batch.back() == s) budget -= int64_t(chunks.back().tokens.size());
  }

  try {
    model_->forward_batch(chunks, options, *pool_);
  } catch (const Error& e) {  // the jobs were checked when they began: a bug, but not fatal
    for (Slot* s : batch) {
      end(*s, "error", JobEvent{JobEvent::Kind::kFailed, "", {}, printable(e.what())});
    }
    return;
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    Slot& s = *batch[i];
    try {
      s.run->advance(int64_t(chunks[i].tokens.size()), s.logits);
    } catch (const Error& e) {
      end(s, "error", JobEvent{JobEvent::Kind::kFailed, "", {}, printable(e.what())});
      continue;
    }
    if (s.run->done()) {
      const GenerationStats stats = s.run->stats();
      end(s, finish_label(stats.stop), JobEvent{JobEvent::Kind::kDone, "", stats, ""});
    }
  }
  update_cache_gauges();
}

void Engine::end(Slot& slot, const std::string& label, JobEvent event) {
  // A run ended early (cancelled, failed) still counts the tokens it made.
  const int64_t generated = slot.run ? slot.run->stats().generated_tokens : 0;
  const std::shared_ptr<Job> job = std::move(slot.job);
  slot.run.reset();
  slot.sampler.reset();
  slot.callbacks = {};
  // The cache stays allocated for the next job; its tokens are forgotten now, so the gauges
  // show the slot free.
  slot.tokens.clear();
  slot.cache.truncate(0);
  running_ = std::count_if(slots_.begin(), slots_.end(), [](const auto& s) { return s->busy(); });
  update_cache_gauges();
  // The client learns of the end last, so that what it reads next (/metrics) includes it.
  metrics_.request_finished(label, int64_t(job->spec().prompt.size()), generated,
                            seconds_between(job->arrival(), Clock::now()));
  job->push(std::move(event));
}

void Engine::update_cache_gauges() {
  int64_t tokens = 0;
  uint64_t bytes = 0;
  for (const auto& slot : slots_) {
    tokens += int64_t(slot->tokens.size());
    bytes += slot->cache.bytes();
  }
  cache_tokens_ = tokens;
  cache_bytes_ = bytes;
}

}  // namespace dsa::server

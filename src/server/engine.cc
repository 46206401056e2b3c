#include "server/engine.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>
#include <span>
#include <utility>

#include "core/error.h"
#include "core/printable.h"
#include "core/progress.h"
#include "model/tensor_layout.h"

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

// The event that fails a job: a dsa::Error's message is for the user; anything else is a bug,
// reported as an internal error (the worker thread must never let an exception escape).
JobEvent failure(const std::exception& e) {
  const bool ours = dynamic_cast<const Error*>(&e) != nullptr;
  return JobEvent{
      JobEvent::Kind::kFailed,
      "",
      {},
      ours ? printable(e.what()) : fmt::format("internal error: {}", printable(e.what()))};
}

int64_t common_prefix(std::span<const int32_t> a, std::span<const int32_t> b) {
  const size_t n = std::min(a.size(), b.size());
  return int64_t(std::mismatch(a.begin(), a.begin() + ptrdiff_t(n), b.begin()).first - a.begin());
}

}  // namespace

// A sequence of the batch: its own cache and token history, and the run of the job it holds.
// Slots live on the heap, so the run's and the callbacks' references to them stay valid. A free
// slot keeps the tokens its last job left in the cache: the prefix cache (engine.h).
struct Engine::Slot {
  Slot(const ModelConfig& config, int64_t context)
      : cache(config, context), logits(size_t(config.vocab_size)) {}

  bool busy() const { return job != nullptr; }

  KvCache cache;
  std::vector<int32_t> tokens;
  std::vector<float> logits;   // [vocab] of its last row in the last step
  std::shared_ptr<Job> job;    // null: free
  uint64_t admitted = 0;       // admission order: prompts are prefilled oldest first
  uint64_t released = 0;       // when it was last freed: the least recently used is reused first
  ForwardOptions cached_with;  // the options the cached tokens were computed with
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
  const KvCacheBytes per_layer = kv_cache_bytes_per_token(model.config());
  const uint64_t per_slot = uint64_t(per_layer.per_layer()) *
                            uint64_t(model.config().num_hidden_layers) * uint64_t(context);
  const uint64_t needed = per_slot * uint64_t(options_.parallel);
  if (options_.kv_memory > 0 && needed > options_.kv_memory) {
    fail(
        "the KV caches of --parallel {} requests of {} tokens (-c) need {}, over the --kv-memory "
        "limit of {}: {} such requests fit; lower -c or --parallel, or raise --kv-memory",
        options_.parallel, context, format_bytes(needed), format_bytes(options_.kv_memory),
        options_.kv_memory / std::max<uint64_t>(1, per_slot));
  }
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
  return CacheGauges{cache_tokens_.load(), cache_capacity_.load(), cache_bytes_.load(),
                     prefix_tokens_.load()};
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
    Slot& slot = choose_slot(job->spec());
    begin(slot, std::move(job));
  }
  running_ = std::count_if(slots_.begin(), slots_.end(), [](const auto& s) { return s->busy(); });
  return true;
}

Engine::Slot& Engine::choose_slot(const GenerationJob& job) {
  Slot* best = nullptr;
  int64_t best_prefix = -1;
  for (const auto& slot : slots_) {
    if (slot->busy()) continue;
    const int64_t prefix = reusable_prefix(*slot, job);
    if (prefix > best_prefix || (prefix == best_prefix && slot->released < best->released)) {
      best = slot.get();
      best_prefix = prefix;
    }
  }
  DSA_CHECK(best, "choose_slot without a free slot");
  return *best;
}

int64_t Engine::reusable_prefix(const Slot& slot, const GenerationJob& job) const {
  if (!options_.prefix_cache || !same_forward(slot.cached_with, job.params.forward)) return 0;
  // At least the prompt's last token runs again: its logits start the reply. The reuse ends on
  // a multiple of the prefill chunk size, where a prefill from scratch ends a chunk too (step()),
  // so that the rest of the prompt is computed exactly as it would be without the cache.
  const int64_t longest = int64_t(job.prompt.size()) - 1;
  const int64_t shared = std::min(longest, common_prefix(slot.tokens, job.prompt));
  const int64_t C = job.params.prefill_chunk;
  return std::max<int64_t>(0, shared / C * C);
}

void Engine::begin(Slot& slot, std::shared_ptr<Job> job) {
  slot.job = std::move(job);
  slot.admitted = ++admissions_;
  Job& j = *slot.job;
  const std::vector<int32_t>& prompt = j.spec().prompt;
  const int64_t reused = reusable_prefix(slot, j.spec());
  slot.tokens.resize(size_t(reused));
  slot.cache.truncate(reused);
  slot.cached_with = j.spec().params.forward;
  metrics_.prefix_lookup(int64_t(prompt.size()), reused);
  slot.first_text = true;
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
    // The reused tokens count for the repetition penalty as if they had been prefilled.
    for (int64_t i = 0; i < reused; ++i) slot.sampler->accept(prompt[size_t(i)]);
    slot.run.emplace(*model_, *tokenizer_, slot.cache, slot.tokens,
                     std::span(prompt).subspan(size_t(reused)), *slot.sampler, j.spec().params,
                     slot.callbacks);
  } catch (const std::exception& e) {
    end(slot, "error", failure(e));
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
  // Prompt chunks end at multiples of the prefill chunk size C, whatever else the step holds,
  // so that a prompt is always cut the same way: a request run alone then computes exactly what
  // it computes after a prefix-cache hit, which also ends on a multiple of C.
  int64_t budget = options_.step_tokens;
  bool any_prefill = false;
  for (Slot* s : prefilling) {
    const int64_t C = s->job->spec().params.prefill_chunk;
    const int64_t chunk = C - s->cache.size() % C;
    const int64_t size = int64_t(s->run->next_tokens(chunk).size());
    if (size > budget && any_prefill) continue;  // waits for a step with room
    const size_t before = chunks.size();
    add(s, chunk);
    if (chunks.size() > before) {
      budget -= size;
      any_prefill = true;
    }
  }

  try {
    model_->forward_batch(chunks, options, *pool_);
  } catch (const std::exception& e) {  // the jobs were checked when they began: a bug, not fatal
    for (Slot* s : batch) end(*s, "error", failure(e));
    return;
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    Slot& s = *batch[i];
    try {
      s.run->advance(int64_t(chunks[i].tokens.size()), s.logits);
    } catch (const std::exception& e) {
      end(s, "error", failure(e));
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
  slot.released = ++admissions_;
  // The cached tokens stay for the prefix cache; a token sampled but not yet run (or a final
  // EOS) is not in the cache, and goes. After an error nothing is trusted.
  const bool failed = label == "error";
  const int64_t kept =
      failed ? 0 : std::min<int64_t>(slot.cache.size(), int64_t(slot.tokens.size()));
  slot.tokens.resize(size_t(kept));
  slot.cache.truncate(kept);
  running_ = std::count_if(slots_.begin(), slots_.end(), [](const auto& s) { return s->busy(); });
  update_cache_gauges();
  // The client learns of the end last, so that what it reads next (/metrics) includes it.
  metrics_.request_finished(label, int64_t(job->spec().prompt.size()), generated,
                            seconds_between(job->arrival(), Clock::now()));
  job->push(std::move(event));
}

void Engine::update_cache_gauges() {
  int64_t tokens = 0, prefix = 0;
  uint64_t bytes = 0;
  for (const auto& slot : slots_) {
    (slot->busy() ? tokens : prefix) += int64_t(slot->tokens.size());
    bytes += slot->cache.bytes();
  }
  cache_tokens_ = tokens;
  prefix_tokens_ = prefix;
  cache_bytes_ = bytes;
}

}  // namespace dsa::server

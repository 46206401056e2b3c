// One generate() call of one sequence (its prompt prefilled, then tokens sampled one at a time)
// as a state machine that the caller drives with forward calls. The runtime's Generator drives
// one run with Model::forward; the server's scheduler drives many at once, one row or chunk of
// each in a single Model::forward_batch per step. Both therefore sample, stop and stream text
// through the same code (generator.h has the rules).
//
//   GenerationRun run(...);
//   while (!run.done()) {
//     const auto tokens = run.next_tokens(chunk);
//     model.forward(tokens, cache, logits, options, pool);   // or one chunk of a batch
//     run.advance(tokens.size(), logits);
//   }
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <vector>

#include "model/forward.h"
#include "model/kv_cache.h"
#include "runtime/generator.h"
#include "runtime/sampler.h"
#include "runtime/stop_string_filter.h"
#include "text/streaming_detokenizer.h"
#include "text/tokenizer.h"

namespace dsa {

class GenerationRun {
 public:
  // Appends `prompt` to `tokens`, the sequence so far, whose first cache.size() tokens are in
  // `cache` (the rest await the model: a previous call's final EOS). `last_logits` are the
  // logits after the cached tokens, used only when nothing awaits the model (a continuation
  // without a prompt). Throws dsa::Error, with `tokens` unchanged, when the params are invalid,
  // the prompt holds an id outside the vocabulary or does not fit in the free context, or there
  // is nothing to generate from. Every reference must outlive the run.
  GenerationRun(const Model& model, const text::Tokenizer& tokenizer, KvCache& cache,
                std::vector<int32_t>& tokens, std::span<const int32_t> prompt, Sampler& sampler,
                const GenerationParams& params, const GenerationCallbacks& callbacks,
                std::span<const float> last_logits = {});

  bool done() const { return state_ == State::kDone; }
  bool prefilling() const { return state_ == State::kPrefill; }

  // What the next forward call must run, at positions cache.size() ...: up to `max_tokens` of
  // the prompt while prefilling, else the token just sampled. Empty when done.
  std::span<const int32_t> next_tokens(int64_t max_tokens) const;

  // After a forward call ran the first `count` tokens of next_tokens() into the cache: `logits`
  // [vocab] are those of its last position. Samples the next token when the prompt is done,
  // streams text, and ends the run at a stop condition. The callbacks run here; what they throw
  // propagates, and the run must then be dropped.
  void advance(int64_t count, std::span<const float> logits);

  // Ends the run where it is (its request was cancelled): no more text, and done() from now on.
  void stop();

  // Complete once done().
  const GenerationStats& stats() const { return stats_; }

 private:
  enum class State { kPrefill, kDecode, kDone };
  using Clock = std::chrono::steady_clock;

  void end_prefill(std::span<const float> logits);
  void sample(std::span<const float> logits);
  void finish(StopReason reason);
  void emit(std::string_view text) const;
  int64_t free_tokens() const { return cache_->capacity() - int64_t(tokens_->size()); }
  bool is_eos(int32_t token) const { return token == model_eos_ || token == tokenizer_eos_; }

  KvCache* cache_;
  std::vector<int32_t>* tokens_;
  Sampler* sampler_;
  const GenerationParams* params_;
  const GenerationCallbacks* callbacks_;
  int64_t sampled_vocab_;  // ids [0, sampled_vocab_) are sampled
  int32_t model_eos_;
  int32_t tokenizer_eos_;  // -1 when the tokenizer has none

  State state_ = State::kPrefill;
  int64_t prefill_first_ = 0;  // the cache's size when the run began
  text::StreamingDetokenizer detokenizer_;
  StopStringFilter filter_;
  std::vector<float> masked_;  // the logits with EOS removed, for ignore_eos
  Clock::time_point prompt_start_;
  Clock::time_point generation_start_;
  GenerationStats stats_;
};

}  // namespace dsa

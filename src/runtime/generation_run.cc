#include "runtime/generation_run.h"

#include <algorithm>
#include <limits>

#include "core/error.h"

namespace dsa {
namespace {

double seconds_between(std::chrono::steady_clock::time_point a,
                       std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

GenerationRun::GenerationRun(const Model& model, const text::Tokenizer& tokenizer, KvCache& cache,
                             std::vector<int32_t>& tokens, std::span<const int32_t> prompt,
                             Sampler& sampler, const GenerationParams& params,
                             const GenerationCallbacks& callbacks,
                             std::span<const float> last_logits)
    : cache_(&cache),
      tokens_(&tokens),
      sampler_(&sampler),
      params_(&params),
      callbacks_(&callbacks),
      sampled_vocab_(std::min<int64_t>(model.config().vocab_size, tokenizer.vocab_size())),
      model_eos_(int32_t(model.config().eos_token_id)),
      tokenizer_eos_(tokenizer.eos_id().value_or(-1)),
      detokenizer_(tokenizer),
      filter_(params.stop_strings) {
  params.validate();
  if (int64_t(prompt.size()) > free_tokens()) {
    fail("the prompt has {} tokens, but only {} of the context's {} tokens are free", prompt.size(),
         free_tokens(), cache.capacity());
  }
  const int64_t vocab = model.config().vocab_size;
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] < 0 || prompt[i] >= vocab) {
      fail("prompt token {} (at index {}) is out of range for the vocabulary of {}", prompt[i], i,
           vocab);
    }
  }
  if (prompt.empty() && tokens.empty()) fail("nothing to generate from: the prompt is empty");
  const bool awaiting = int64_t(tokens.size()) > cache.size() || !prompt.empty();
  if (!awaiting && last_logits.size() < size_t(sampled_vocab_)) {
    fail("nothing awaits the model and no logits were given to continue from");
  }
  tokens.insert(tokens.end(), prompt.begin(), prompt.end());
  for (const int32_t t : prompt) sampler.accept(t);

  prefill_first_ = cache.size();
  stats_.prompt_tokens = int64_t(tokens.size()) - prefill_first_;
  prompt_start_ = Clock::now();
  if (!awaiting) end_prefill(last_logits);
}

std::span<const int32_t> GenerationRun::next_tokens(int64_t max_tokens) const {
  DSA_CHECK(max_tokens >= 1, "next_tokens needs a positive count");
  switch (state_) {
    case State::kPrefill: {
      const int64_t from = cache_->size();
      const int64_t n = std::min<int64_t>(max_tokens, int64_t(tokens_->size()) - from);
      return std::span<const int32_t>(*tokens_).subspan(size_t(from), size_t(n));
    }
    case State::kDecode:
      return std::span<const int32_t>(*tokens_).last(1);
    case State::kDone:
      break;
  }
  return {};
}

void GenerationRun::advance(int64_t count, std::span<const float> logits) {
  DSA_CHECK(state_ != State::kDone, "advance on a finished run");
  DSA_CHECK(count >= 1 && cache_->size() <= int64_t(tokens_->size()),
            "advance: the cache ran past the sequence");
  if (state_ == State::kPrefill) {
    const int64_t total = int64_t(tokens_->size()) - prefill_first_;
    if (callbacks_->on_prefill) callbacks_->on_prefill(cache_->size() - prefill_first_, total);
    if (cache_->size() == int64_t(tokens_->size())) end_prefill(logits);
    return;
  }
  DSA_CHECK(cache_->size() == int64_t(tokens_->size()), "advance: the sampled token did not run");
  const StopStringFilter::Result r = filter_.push(detokenizer_.push(tokens_->back()));
  emit(r.text);
  if (r.stopped) {
    finish(StopReason::kStopString);
    return;
  }
  sample(logits);
}

void GenerationRun::stop() {
  if (state_ == State::kDone) return;
  state_ = State::kDone;
  stats_.context_tokens = int64_t(tokens_->size());
  stats_.context_size = cache_->capacity();
  stats_.cache_bytes = cache_->bytes();
}

void GenerationRun::end_prefill(std::span<const float> logits) {
  const Clock::time_point now = Clock::now();
  stats_.prompt_seconds = seconds_between(prompt_start_, now);
  generation_start_ = now;
  sample(logits);
}

void GenerationRun::sample(std::span<const float> all_logits) {
  if (params_->max_tokens >= 0 && stats_.generated_tokens == params_->max_tokens) {
    finish(StopReason::kMaxTokens);
    return;
  }
  if (free_tokens() == 0) {
    finish(StopReason::kContextFull);
    return;
  }
  std::span<const float> logits = all_logits.first(size_t(sampled_vocab_));
  if (params_->ignore_eos) {
    masked_.assign(logits.begin(), logits.end());
    for (const int32_t eos : {model_eos_, tokenizer_eos_}) {
      if (eos >= 0 && eos < sampled_vocab_) {
        masked_[size_t(eos)] = -std::numeric_limits<float>::infinity();
      }
    }
    logits = masked_;
  }
  const int32_t token = sampler_->sample(logits);
  sampler_->accept(token);
  tokens_->push_back(token);
  if (is_eos(token)) {
    finish(StopReason::kEos);  // kept in the sequence, run by the next call
    return;
  }
  ++stats_.generated_tokens;
  state_ = State::kDecode;
}

void GenerationRun::finish(StopReason reason) {
  stats_.stop = reason;
  if (reason != StopReason::kStopString) {
    const StopStringFilter::Result r = filter_.push(detokenizer_.flush());
    emit(r.text);
    if (r.stopped) {
      stats_.stop = StopReason::kStopString;
    } else {
      emit(filter_.release());
    }
  }
  stats_.generation_seconds = seconds_between(generation_start_, Clock::now());
  stop();
}

void GenerationRun::emit(std::string_view text) const {
  if (!text.empty() && callbacks_->on_text) callbacks_->on_text(text);
}

}  // namespace dsa

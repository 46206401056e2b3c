#include "runtime/generator.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <utility>

#include "core/error.h"
#include "core/progress.h"

namespace dsa {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Holds back the end of the streamed text while it may be the beginning of a stop string, and
// cuts the text at the first stop string. Stop strings are whole UTF-8, so a held-back suffix
// starts on a character boundary and the released text stays whole characters.
class StopStringFilter {
 public:
  explicit StopStringFilter(std::span<const std::string> stops) : stops_(stops) {}

  struct Result {
    std::string text;  // ready to stream
    bool stopped = false;
  };

  Result push(std::string_view piece) {
    held_ += piece;
    size_t first = std::string::npos;
    for (const std::string& s : stops_) first = std::min(first, held_.find(s));
    if (first != std::string::npos) return {held_.substr(0, first), true};
    // The longest suffix of held_ that is a proper prefix of a stop string.
    size_t keep = 0;
    for (const std::string& s : stops_) {
      for (size_t n = std::min(s.size() - 1, held_.size()); n > keep; --n) {
        if (held_.compare(held_.size() - n, n, s, 0, n) == 0) {
          keep = n;
          break;
        }
      }
    }
    Result r{held_.substr(0, held_.size() - keep), false};
    held_.erase(0, held_.size() - keep);
    return r;
  }

  // What is still held back, when the text ended without a stop string.
  std::string release() { return std::exchange(held_, {}); }

 private:
  std::span<const std::string> stops_;
  std::string held_;
};

}  // namespace

std::string_view stop_reason_name(StopReason reason) {
  switch (reason) {
    case StopReason::kEos:
      return "eos";
    case StopReason::kStopString:
      return "stop string";
    case StopReason::kMaxTokens:
      return "token limit";
    case StopReason::kContextFull:
      return "context full";
  }
  return "?";
}

void GenerationParams::validate() const {
  if (max_tokens < -1) fail("max_tokens must be >= -1 (-1: no limit), got {}", max_tokens);
  if (prefill_chunk < 1) fail("prefill_chunk must be at least 1, got {}", prefill_chunk);
  for (const std::string& s : stop_strings) {
    if (s.empty()) fail("stop_strings: a stop string may not be empty");
  }
}

double GenerationStats::prompt_tokens_per_second() const {
  return prompt_seconds > 0 ? double(prompt_tokens) / prompt_seconds : 0.0;
}

double GenerationStats::generation_tokens_per_second() const {
  return generation_seconds > 0 ? double(generated_tokens) / generation_seconds : 0.0;
}

std::string format_stats(const GenerationStats& s) {
  return fmt::format(
      "prompt: {} tokens in {:.2f} s ({:.1f} tok/s) | generation: {} tokens in {:.2f} s ({:.1f} "
      "tok/s) | cache: {} ({} / {} tokens) | stop: {}",
      s.prompt_tokens, s.prompt_seconds, s.prompt_tokens_per_second(), s.generated_tokens,
      s.generation_seconds, s.generation_tokens_per_second(), format_bytes(s.cache_bytes),
      s.context_tokens, s.context_size, stop_reason_name(s.stop));
}

Generator::Generator(const Model& model, const text::Tokenizer& tokenizer, int64_t context,
                     ThreadPool& pool)
    : model_(&model),
      tokenizer_(&tokenizer),
      pool_(&pool),
      cache_(model.config(), context),
      logits_(size_t(model.config().vocab_size)),
      sampled_vocab_(std::min<int64_t>(model.config().vocab_size, tokenizer.vocab_size())),
      model_eos_(int32_t(model.config().eos_token_id)),
      tokenizer_eos_(tokenizer.eos_id().value_or(-1)) {}

bool Generator::is_eos(int32_t token) const {
  return token == model_eos_ || token == tokenizer_eos_;
}

void Generator::reset() {
  tokens_.clear();
  cache_.truncate(0);
}

void Generator::prefill(const GenerationParams& params, const GenerationCallbacks& callbacks) {
  ForwardOptions options = params.forward;
  options.all_logits = false;
  const int64_t first = cache_.size();
  const int64_t total = int64_t(tokens_.size()) - first;
  for (int64_t pos = first; pos < int64_t(tokens_.size()); pos += params.prefill_chunk) {
    const int64_t n = std::min<int64_t>(params.prefill_chunk, int64_t(tokens_.size()) - pos);
    model_->forward(std::span(tokens_).subspan(size_t(pos), size_t(n)), cache_, logits_, options,
                    *pool_);
    if (callbacks.on_prefill) callbacks.on_prefill(pos + n - first, total);
  }
}

GenerationStats Generator::generate(std::span<const int32_t> prompt, Sampler& sampler,
                                    const GenerationParams& params,
                                    const GenerationCallbacks& callbacks) {
  params.validate();
  if (int64_t(prompt.size()) > free_tokens()) {
    fail("the prompt has {} tokens, but only {} of the context's {} tokens are free", prompt.size(),
         free_tokens(), context_size());
  }
  const int64_t vocab = model_->config().vocab_size;
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] < 0 || prompt[i] >= vocab) {
      fail("prompt token {} (at index {}) is out of range for the vocabulary of {}", prompt[i], i,
           vocab);
    }
  }
  if (prompt.empty() && tokens_.empty()) {
    fail("nothing to generate from: the prompt is empty");
  }
  tokens_.insert(tokens_.end(), prompt.begin(), prompt.end());
  for (const int32_t t : prompt) sampler.accept(t);

  GenerationStats stats;
  stats.prompt_tokens = int64_t(tokens_.size()) - cache_.size();
  const Clock::time_point prompt_start = Clock::now();
  prefill(params, callbacks);
  stats.prompt_seconds = seconds_since(prompt_start);

  const Clock::time_point generation_start = Clock::now();
  text::StreamingDetokenizer detokenizer(*tokenizer_);
  StopStringFilter filter(params.stop_strings);
  const auto emit = [&](std::string_view text) {
    if (!text.empty() && callbacks.on_text) callbacks.on_text(text);
  };
  std::vector<float> masked;  // the logits with EOS removed, for ignore_eos
  ForwardOptions options = params.forward;
  options.all_logits = false;
  while (true) {
    if (params.max_tokens >= 0 && stats.generated_tokens == params.max_tokens) {
      stats.stop = StopReason::kMaxTokens;
      break;
    }
    if (free_tokens() == 0) {
      stats.stop = StopReason::kContextFull;
      break;
    }
    std::span<const float> logits(logits_.data(), size_t(sampled_vocab_));
    if (params.ignore_eos) {
      masked.assign(logits.begin(), logits.end());
      for (const int32_t eos : {model_eos_, tokenizer_eos_}) {
        if (eos >= 0 && eos < sampled_vocab_) {
          masked[size_t(eos)] = -std::numeric_limits<float>::infinity();
        }
      }
      logits = masked;
    }
    const int32_t token = sampler.sample(logits);
    sampler.accept(token);
    tokens_.push_back(token);
    if (is_eos(token)) {
      stats.stop = StopReason::kEos;  // kept in tokens_, run by the next call
      break;
    }
    ++stats.generated_tokens;
    model_->forward(std::span(&tokens_.back(), 1), cache_, logits_, options, *pool_);
    const StopStringFilter::Result r = filter.push(detokenizer.push(token));
    emit(r.text);
    if (r.stopped) {
      stats.stop = StopReason::kStopString;
      break;
    }
  }
  if (stats.stop != StopReason::kStopString) {
    const StopStringFilter::Result r = filter.push(detokenizer.flush());
    emit(r.text);
    if (r.stopped) {
      stats.stop = StopReason::kStopString;
    } else {
      emit(filter.release());
    }
  }
  stats.generation_seconds = seconds_since(generation_start);
  stats.context_tokens = int64_t(tokens_.size());
  stats.context_size = context_size();
  stats.cache_bytes = cache_.bytes();
  return stats;
}

}  // namespace dsa

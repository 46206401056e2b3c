#include "runtime/generator.h"

#include <fmt/format.h>

#include "core/error.h"
#include "core/progress.h"
#include "runtime/generation_run.h"

namespace dsa {
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
      model_eos_(int32_t(model.config().eos_token_id)),
      tokenizer_eos_(tokenizer.eos_id().value_or(-1)) {}

bool Generator::is_eos(int32_t token) const {
  return token == model_eos_ || token == tokenizer_eos_;
}

void Generator::reset() {
  tokens_.clear();
  cache_.truncate(0);
}

GenerationStats Generator::generate(std::span<const int32_t> prompt, Sampler& sampler,
                                    const GenerationParams& params,
                                    const GenerationCallbacks& callbacks) {
  GenerationRun run(*model_, *tokenizer_, cache_, tokens_, prompt, sampler, params, callbacks,
                    logits_);
  ForwardOptions options = params.forward;
  options.all_logits = false;
  while (!run.done()) {
    const std::span<const int32_t> next = run.next_tokens(params.prefill_chunk);
    model_->forward(next, cache_, logits_, options, *pool_);
    run.advance(int64_t(next.size()), logits_);
  }
  return run.stats();
}

}  // namespace dsa

// The generation loop shared by `dsa run` and `dsa chat`: one sequence in one KV cache, extended
// by prompts (prefilled in chunks) and by sampled tokens (decoded one at a time).
//
// A sequence may span several generate() calls (a chat's turns): each call appends its prompt to
// what is already cached and never recomputes a cached token. Every sampled token except a final
// EOS is run through the model at once, so the cache holds the whole reply when generate()
// returns; the EOS is kept in tokens() and run at the start of the next call.
//
// Generation stops at the first of: an EOS token (the model's eos_token_id, or the tokenizer's
// when it differs), a stop string in the text, max_tokens tokens, or a full context (prompt and
// generated tokens together never exceed the context size).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/thread_pool.h"
#include "model/forward.h"
#include "model/kv_cache.h"
#include "runtime/sampler.h"
#include "text/streaming_detokenizer.h"
#include "text/tokenizer.h"

namespace dsa {

enum class StopReason { kEos, kStopString, kMaxTokens, kContextFull };
std::string_view stop_reason_name(StopReason reason);  // "eos", "stop string", ...

struct GenerationParams {
  int64_t max_tokens = 128;  // tokens to generate at most; -1: until EOS, a stop string or full
  // Generation ends when the text contains one of these; the text from its start on is dropped.
  std::vector<std::string> stop_strings;
  bool ignore_eos = false;      // never sample an EOS token (for benchmarks and tests)
  int64_t prefill_chunk = 512;  // prompt tokens per forward call
  ForwardOptions forward;       // attention mode and kernels

  // Throws dsa::Error naming the bad field.
  void validate() const;
};

struct GenerationCallbacks {
  // After each prefill chunk: prompt tokens run so far and in all, in this call.
  std::function<void(int64_t done, int64_t total)> on_prefill;
  // Generated text as it is made: whole UTF-8 characters; text that may begin a stop string is
  // held back until it is known not to, and a stop string and what follows it never arrive.
  std::function<void(std::string_view text)> on_text;
};

struct GenerationStats {
  int64_t prompt_tokens = 0;  // run as prefill in this call (a pending EOS included)
  double prompt_seconds = 0;
  int64_t generated_tokens = 0;   // sampled, a final EOS not counted
  double generation_seconds = 0;  // from the end of the prefill to the stop
  StopReason stop = StopReason::kMaxTokens;
  int64_t context_tokens = 0;  // tokens of the sequence after the call
  int64_t context_size = 0;
  uint64_t cache_bytes = 0;  // the KV cache allocated for the whole context

  double prompt_tokens_per_second() const;
  double generation_tokens_per_second() const;
};

// The summary line, after llama.cpp's timings:
// "prompt: 12 tokens in 0.05 s (240.0 tok/s) | generation: 64 tokens in 1.20 s (53.3 tok/s) |
//  cache: 40.00 MiB (76 / 4096 tokens) | stop: eos" (the cache is allocated for the whole context)
std::string format_stats(const GenerationStats& stats);

class Generator {
 public:
  // A cache of `context` tokens; throws dsa::Error when it is not in [1,
  // max_position_embeddings]. `model`, `tokenizer` and `pool` must outlive the generator. Only the
  // ids the tokenizer knows are sampled (a checkpoint's vocabulary may be padded past them).
  Generator(const Model& model, const text::Tokenizer& tokenizer, int64_t context,
            ThreadPool& pool);

  // Appends `prompt` (it may be empty when tokens already await the model, or to continue after
  // a call that stopped without EOS) and generates. The prompt's tokens are recorded in
  // `sampler` for its repetition penalty, like the generated ones. Throws dsa::Error when the
  // prompt does not fit in the context left; the sequence is then unchanged.
  GenerationStats generate(std::span<const int32_t> prompt, Sampler& sampler,
                           const GenerationParams& params,
                           const GenerationCallbacks& callbacks = {});

  // Forgets the sequence (the cache is kept allocated).
  void reset();

  // The sequence: every prompt and generated token so far, a final EOS included.
  std::span<const int32_t> tokens() const { return tokens_; }
  int64_t context_size() const { return cache_.capacity(); }
  int64_t free_tokens() const { return cache_.capacity() - int64_t(tokens_.size()); }
  const KvCache& cache() const { return cache_; }
  bool is_eos(int32_t token) const;

 private:
  const Model* model_;
  const text::Tokenizer* tokenizer_;
  ThreadPool* pool_;
  KvCache cache_;
  std::vector<int32_t> tokens_;
  std::vector<float> logits_;  // [vocab] after the last forward call
  int32_t model_eos_;
  int32_t tokenizer_eos_;  // -1 when the tokenizer has none
};

}  // namespace dsa

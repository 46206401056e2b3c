// Synthetic long-range tasks, mixed into the training data by `dsa data build` and reused by
// evaluation: each sample is a plain-text document split into the prompt a model reads and the
// answer it must continue with, and the answer can only be recovered from far back in the prompt.
//
//   passkey    llama.cpp's passkey retrieval: its filler ("The grass is green. The sky is blue.
//   ...")
//              repeated, the needle "The pass key is N. Remember it. N is the pass key." at a
//              depth, then "What is the pass key? The pass key is" and the answer " N."
//   kv_recall  multi-key associative recall (Zoology's MQAR, in words): a list of "key -> value"
//              lines at a depth inside filler text, then queries "key -> value" for some of the
//              keys; the last query's value is the answer.
//   needle     RULER-style needle in a haystack of real corpus text: "The special magic number for
//              <word> is N." at a depth, then the question and the answer " N."
//
// Lengths are in tokens of the model's tokenizer: the prompt and answer together (encoded without
// special tokens, as `dsa data build` encodes documents) come as close to `target_tokens` as whole
// filler sentences allow, never over it. Depth is the fraction of the filler sentences that come
// before the fact: 0 puts it first, 1 right before the question. Every sample is a pure function of
// (kind, target, depth, seed) and the haystack.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "text/tokenizer.h"

namespace dsa::train {

enum class SyntheticKind { kPasskey, kKeyValueRecall, kNeedle };
inline constexpr int kSyntheticKindCount = 3;
std::string_view synthetic_kind_name(SyntheticKind kind);  // "passkey", "kv_recall", "needle"
std::optional<SyntheticKind> parse_synthetic_kind(std::string_view name);

struct SyntheticSample {
  SyntheticKind kind = SyntheticKind::kPasskey;
  std::string prompt;            // what the model reads
  std::string answer;            // the continuation to produce, e.g. " 4821."
  int64_t target_tokens = 0;     // requested tokens of prompt + answer
  int64_t tokens = 0;            // actual tokens of prompt + answer (<= target_tokens)
  double depth = 0;              // requested depth in [0, 1]
  int64_t filler_sentences = 0;  // sentences of filler around the fact
  int64_t sentences_before = 0;  // of which before the fact: round(depth * filler_sentences)
  std::string text() const { return prompt + answer; }
};

// Splits text into sentences for a haystack: whitespace runs (newlines too) become one space, and a
// sentence ends after '.', '!' or '?' (and any closing quotes or brackets) followed by a space, or
// at a blank line. Leading and trailing spaces are dropped; empty sentences are not returned.
std::vector<std::string> split_sentences(std::string_view text);

struct SyntheticOptions {
  int kv_pairs = 8;    // keys in a kv_recall list (at most the built-in word list)
  int kv_queries = 4;  // queries after it (at most kv_pairs)
};

class SyntheticTaskGenerator {
 public:
  // `haystack`: sentences of real text (split_sentences of a corpus) for needles and kv_recall
  // filler. Sentences holding an ASCII digit or "->" are dropped, so that the numbers and pairs in
  // a prompt are only the task's own. Without usable sentences, needle() throws and kv_recall uses
  // the passkey filler. The tokenizer must outlive the generator.
  SyntheticTaskGenerator(const text::Tokenizer& tokenizer, std::vector<std::string> haystack,
                         SyntheticOptions options = {});

  // Each throws dsa::Error when target_tokens is too small for the task without any filler, or
  // depth is outside [0, 1].
  SyntheticSample passkey(int64_t target_tokens, double depth, uint64_t seed) const;
  SyntheticSample key_value_recall(int64_t target_tokens, double depth, uint64_t seed) const;
  SyntheticSample needle(int64_t target_tokens, double depth, uint64_t seed) const;
  SyntheticSample generate(SyntheticKind kind, int64_t target_tokens, double depth,
                           uint64_t seed) const;

  // Tokens of `text` as documents are encoded (no special tokens).
  int64_t count_tokens(std::string_view text) const;
  size_t haystack_size() const { return haystack_.size(); }

 private:
  const text::Tokenizer& tokenizer_;
  std::vector<std::string> haystack_;
  SyntheticOptions options_;
};

}  // namespace dsa::train

// A byte-level BPE trainer for the small models this project trains: words come from DeepSeek-V3's
// pre-tokenizer, the most frequent adjacent pair is merged until the vocabulary is full, and the
// result is written as a Hugging Face tokenizer.json with DeepSeek's chat tokens as added tokens.
// Deterministic: ties between equally frequent pairs go to the smaller (left id, right id).
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "text/pretokenizer.h"
#include "text/tokenizer_added_tokens.h"

namespace dsa::text {

struct ChatTokenSpec {
  std::string_view content;
  bool special;  // HF "special": skipped by decode(skip_special) and split_special_tokens
};

// The added tokens a trained tokenizer gets, with ids 0.. in this order: BOS, EOS, pad (special),
// then the User/Assistant markers, <think>, </think> and the DSML marker ｜DSML｜ (not special,
// as in DeepSeek's tokenizers, so they always parse and always decode).
std::span<const ChatTokenSpec> deepseek_chat_tokens();

struct BpeTrainerOptions {
  int32_t vocab_size = 8192;  // all ids: added tokens + 256 bytes + merges
  int64_t min_frequency = 2;  // merging stops when the best pair occurs fewer times
};

class BpeTrainer {
 public:
  explicit BpeTrainer(BpeTrainerOptions options);

  // Counts the words of a text (invalid UTF-8 is replaced by U+FFFD; chat tokens are skipped).
  void add_text(std::string_view text);
  // Learns the merges and returns the tokenizer.json text.
  std::string train_to_json() const;

 private:
  BpeTrainerOptions options_;
  PreTokenizer pre_tokenizer_;
  AddedTokenMatcher chat_tokens_;
  std::map<std::string, int64_t> word_counts_;  // ordered, so training is deterministic
};

}  // namespace dsa::text

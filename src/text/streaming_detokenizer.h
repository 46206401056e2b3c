// Turns a stream of token ids into text piece by piece without ever emitting a broken UTF-8
// character: bytes that could still become a character are held back until the token that
// completes them arrives. The concatenated output equals Tokenizer::decode of all the ids.
#pragma once

#include <cstdint>
#include <string>

#include "text/tokenizer.h"

namespace dsa::text {

class StreamingDetokenizer {
 public:
  // `tokenizer` must outlive this object.
  explicit StreamingDetokenizer(const Tokenizer& tokenizer, bool skip_special = false);

  // The text this id completes (possibly empty). Throws dsa::Error on an unknown id.
  std::string push(int32_t id);
  // The held-back bytes (an unfinished character) as U+FFFD, or "" when none; then starts over.
  std::string flush();

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  std::string pending_;  // bytes not yet emitted: at most an unfinished character (< 4 bytes)
};

}  // namespace dsa::text

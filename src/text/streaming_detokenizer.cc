#include "text/streaming_detokenizer.h"

#include "text/utf8.h"

namespace dsa::text {

StreamingDetokenizer::StreamingDetokenizer(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(&tokenizer), skip_special_(skip_special) {}

std::string StreamingDetokenizer::push(int32_t id) {
  if (skip_special_ && tokenizer_->is_special(id)) return "";
  pending_ += tokenizer_->token_bytes(id);
  // A held-back tail starts with a lead byte, so the bytes before it decode exactly as they
  // would inside the whole text: emitting them now cannot change the final result.
  const size_t tail = incomplete_utf8_tail(pending_);
  const std::string_view ready(pending_.data(), pending_.size() - tail);
  std::string out = is_valid_utf8(ready) ? std::string(ready) : sanitize_utf8(ready);
  pending_.erase(0, ready.size());
  return out;
}

std::string StreamingDetokenizer::flush() {
  std::string out = sanitize_utf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace dsa::text

// The byte-level BPE tokenizer of DeepSeek-V3 (Hugging Face tokenizer.json): added tokens are
// matched first (longest match), the rest is split by DeepSeek's pre-tokenizer regexes, mapped to
// the GPT-2 byte alphabet and merged by BPE ranks. See docs/tokenizer.md.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace dsa::text {

struct TokenizerModel;  // the loaded vocabulary, merges, added tokens and pre-tokenizer

class Tokenizer {
 public:
  // Loads a tokenizer.json; throws dsa::Error naming the file and the bad field.
  static Tokenizer from_file(const std::filesystem::path& tokenizer_json);
  // DIR/tokenizer.json.
  static Tokenizer from_model_dir(const std::filesystem::path& dir);
  // Parses tokenizer.json text; `source` names it in error messages.
  static Tokenizer from_json_text(std::string_view json_text, std::string_view source);

  // Invalid UTF-8 in `text` is replaced by U+FFFD per maximal invalid subpart (what Python's
  // bytes.decode(errors="replace") gives before Hugging Face sees the string). With
  // allow_special, added tokens marked special are recognised in the text; without it they are
  // encoded as ordinary text (non-special added tokens are always recognised).
  std::vector<int32_t> encode(std::string_view text, bool allow_special = true) const;
  // Concatenates the tokens' bytes; invalid UTF-8 in the result becomes U+FFFD.
  // Throws dsa::Error on an id outside [0, vocab_size()).
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;
  // The raw bytes of a token (may be part of a UTF-8 character); no replacement.
  std::string token_bytes(int32_t id) const;

  // The id of a token given in its tokenizer.json spelling (byte alphabet for BPE tokens,
  // verbatim for added tokens).
  std::optional<int32_t> token_id(std::string_view token) const;
  // The tokenizer.json spelling of a token; throws dsa::Error on an id out of range.
  std::string_view token_text(int32_t id) const;
  bool is_special(int32_t id) const;
  // One more than the largest id (vocabulary and added tokens).
  int32_t vocab_size() const;
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;

 private:
  explicit Tokenizer(std::shared_ptr<const TokenizerModel> model);
  std::shared_ptr<const TokenizerModel> model_;  // immutable after load, shared by copies
};

}  // namespace dsa::text

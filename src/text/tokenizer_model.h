// What a loaded tokenizer.json becomes: the immutable state behind dsa::text::Tokenizer.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "text/bpe_model.h"
#include "text/pretokenizer.h"
#include "text/tokenizer_added_tokens.h"

namespace dsa::text {

struct TokenizerModel {
  std::vector<std::string> id_to_text;   // the tokenizer.json spelling; empty for unused ids
  std::vector<std::string> id_to_bytes;  // what decode emits for the id
  std::vector<uint8_t> id_used;          // 1 where some token has this id
  std::vector<uint8_t> id_special;       // 1 for added tokens marked "special"
  std::unordered_map<std::string, int32_t> text_to_id;  // vocab, then added tokens (they win)
  BpeModel bpe;
  bool ignore_merges = false;  // HF: a word that is a whole vocabulary entry skips merging
  PreTokenizer pre_tokenizer;
  AddedTokenMatcher added_tokens;
  std::optional<int32_t> bos_id;
  std::optional<int32_t> eos_id;
};

// Builds the model from tokenizer.json text; `source` names it in error messages.
// `config_json` is the tokenizer_config.json beside it, if any (for bos_token and eos_token).
TokenizerModel parse_tokenizer_json(std::string_view json_text, std::string_view source,
                                    std::optional<std::string_view> config_json = std::nullopt);

}  // namespace dsa::text

// The prompt of `dsa logits` and `dsa generate`: token ids given as text ("0 17 42"), or a text
// prompt encoded with the model's tokenizer.json.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace dsa::cli {

// Whitespace- or comma-separated decimal ids; throws dsa::Error naming `flag` and the bad item.
std::vector<int32_t> parse_token_ids(std::string_view text, std::string_view flag);

// `ids` (from --tokens) if not empty, else `prompt` encoded with the tokenizer in `model_dir`
// (special tokens such as <｜begin▁of▁sentence｜> written literally are honoured). Exactly one of
// the two must be given.
std::vector<int32_t> prompt_tokens(const std::string& ids, const std::string& prompt,
                                   const std::filesystem::path& model_dir);

}  // namespace dsa::cli

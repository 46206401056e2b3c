#include "token_input.h"

#include <charconv>

#include "core/error.h"
#include "text/tokenizer.h"

namespace dsa::cli {

std::vector<int32_t> parse_token_ids(std::string_view text, std::string_view flag) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  const auto is_separator = [](char c) {
    return c == ' ' || c == ',' || c == '\n' || c == '\t' || c == '\r';
  };
  while (pos < text.size()) {
    if (is_separator(text[pos])) {
      ++pos;
      continue;
    }
    size_t end = pos;
    while (end < text.size() && !is_separator(text[end])) ++end;
    const std::string_view item = text.substr(pos, end - pos);
    int32_t id = 0;
    const auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), id);
    if (ec != std::errc() || ptr != item.data() + item.size() || id < 0) {
      fail("{}: '{}' (item {}) is not a token id (a non-negative integer below 2^31)", flag, item,
           ids.size() + 1);
    }
    ids.push_back(id);
    pos = end;
  }
  if (ids.empty()) fail("{}: no token ids given", flag);
  return ids;
}

std::vector<int32_t> prompt_tokens(const std::string& ids, const std::string& prompt,
                                   const std::filesystem::path& model_dir) {
  if (!ids.empty() && !prompt.empty())
    fail("give the prompt either as --tokens or as -p, not both");
  if (!ids.empty()) return parse_token_ids(ids, "--tokens");
  if (prompt.empty()) fail("no prompt: give -p TEXT or --tokens \"ID ID ...\"");
  const text::Tokenizer tokenizer = text::Tokenizer::from_model_dir(model_dir);
  std::vector<int32_t> tokens = tokenizer.encode(prompt, /*allow_special=*/true);
  if (tokens.empty()) fail("-p: the prompt encodes to no tokens");
  return tokens;
}

}  // namespace dsa::cli

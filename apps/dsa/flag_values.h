// Flag values of `dsa bench`, `dsa perplexity` and `dsa demo`, taken as text so that a bad value is
// a dsa::Error (exit status 1, "dsa: error: ...") naming the flag, rather than a CLI11 parse error.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "model/forward.h"

namespace dsa::cli {

// A decimal integer >= `minimum`; throws dsa::Error naming `flag` otherwise.
int64_t parse_int_flag(const std::string& text, std::string_view flag, int64_t minimum);

// "a,b,c" -> the items (an empty text is one empty item, which the item's parser reports).
std::vector<std::string> split_commas(const std::string& text);

// Comma-separated attention modes ("sparse,dense"); throws dsa::Error naming `flag` and the bad
// item.
std::vector<AttentionMode> parse_attention_modes(const std::string& text, std::string_view flag);

// A model folder's name for reports: its last path component ("models/dsa-small/" -> "dsa-small").
std::string model_folder_name(const std::string& dir);

}  // namespace dsa::cli

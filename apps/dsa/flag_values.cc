#include "flag_values.h"

#include <charconv>
#include <filesystem>

#include "core/error.h"

namespace dsa::cli {

int64_t parse_int_flag(const std::string& text, std::string_view flag, int64_t minimum) {
  int64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end) {
    fail("{}: '{}' is not an integer", flag, text);
  }
  if (value < minimum) fail("{}: {} must be at least {}", flag, value, minimum);
  return value;
}

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> items;
  size_t pos = 0;
  while (true) {
    const size_t comma = text.find(',', pos);
    items.push_back(text.substr(pos, comma == std::string::npos ? comma : comma - pos));
    if (comma == std::string::npos) return items;
    pos = comma + 1;
  }
}

std::vector<AttentionMode> parse_attention_modes(const std::string& text, std::string_view flag) {
  std::vector<AttentionMode> modes;
  for (const std::string& item : split_commas(text)) {
    if (item != "sparse" && item != "dense" && item != "auto") {
      fail("{}: '{}' is not one of sparse, dense, auto", flag, item);
    }
    modes.push_back(parse_attention_mode(item));
  }
  return modes;
}

std::string model_folder_name(const std::string& dir) {
  const std::filesystem::path path = std::filesystem::absolute(dir).lexically_normal();
  return path.filename().empty() ? path.parent_path().filename().string()
                                 : path.filename().string();
}

}  // namespace dsa::cli

#include "core/decimal_index.h"

#include <charconv>
#include <system_error>

namespace dsa {

std::optional<int64_t> parse_decimal_index(std::string_view text) {
  // from_chars alone would accept a leading '-' and stop at the first non-digit.
  if (text.empty() || text.find_first_not_of("0123456789") != std::string_view::npos) {
    return std::nullopt;
  }
  int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::optional<int64_t> index_after_prefix(std::string_view name, std::string_view prefix) {
  if (!name.starts_with(prefix)) return std::nullopt;
  const std::string_view rest = name.substr(prefix.size());
  return parse_decimal_index(rest.substr(0, rest.find('.')));
}

}  // namespace dsa

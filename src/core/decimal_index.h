// Reading the decimal indices embedded in names ("model.layers.12.mlp.experts.7.up_proj.weight").
// Names come from files (safetensors headers, indexes), so an index may have any number of digits;
// std::stoll would throw std::out_of_range on one that does not fit, which is no user error.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace dsa {

// The value of `text` when it is one or more ASCII digits (no sign, no spaces) whose value fits
// int64; std::nullopt for anything else, too large values included.
std::optional<int64_t> parse_decimal_index(std::string_view text);

// The index right after `prefix` at the start of `name`, up to the next '.' or the end:
// ("layers.12.indexer.topk", "layers.") -> 12. std::nullopt when `name` does not start with
// `prefix` or what follows is not an index parse_decimal_index accepts.
std::optional<int64_t> index_after_prefix(std::string_view name, std::string_view prefix);

}  // namespace dsa

// A short description of a JSON value for error messages ("got [1, [2, 3], ...]"). A value from a
// file may be megabytes long or nested hundreds of levels deep, and dump() would print all of it
// (and raw control bytes); this stops after a few dozen bytes and escapes what it prints.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>

namespace dsa {

// Compact JSON text of `value` cut to about `max_bytes` (then "..."), with strings, keys and
// control bytes passed through printable(). The work is bounded by `max_bytes`, not the value.
std::string describe_json(const nlohmann::json& value, size_t max_bytes = 80);
std::string describe_json(const nlohmann::ordered_json& value, size_t max_bytes = 80);

}  // namespace dsa

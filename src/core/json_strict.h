// JSON parsing for files from outside (safetensors headers, index files): a syntax error or a
// repeated object key is a dsa::Error naming the file. nlohmann::json alone would silently keep
// the last of two equal keys, which would hide a corrupt or ambiguous file.
#pragma once

#include <nlohmann/json.hpp>
#include <string_view>

namespace dsa {

// Parses `text`; errors name `source`. A repeated key of the top-level object is reported as a
// repeated `top_level_key_kind` (e.g. "tensor name"), a repeated nested key as a key of its parent.
nlohmann::json parse_json_strict(std::string_view text, std::string_view source,
                                 std::string_view top_level_key_kind = "key");

// The value's JSON type with its article, for messages: "an array", "a string", "null".
std::string_view json_type_phrase(const nlohmann::json& value);

}  // namespace dsa

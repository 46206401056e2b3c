// JSON parsing for text from outside (safetensors headers, index files, config.json,
// tokenizer.json, chat requests). Anything nlohmann::json::parse would accept silently or answer
// with its own exception is a dsa::Error naming the source and the byte offset:
//  - syntax errors, trailing text after the value, and NUL bytes;
//  - a repeated object key (nlohmann alone keeps the last one, hiding a corrupt or ambiguous file);
//  - numbers beyond the range of a double (1e400);
//  - nesting deeper than kMaxJsonDepth, strings longer than kMaxJsonStringBytes and documents of
//    more than kMaxJsonValues values (docs/input-limits.md).
// The parse takes time and memory linear in the input, and its error messages are printable
// (core/printable.h) whatever bytes the input holds.
#pragma once

#include <cstddef>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace dsa {

// Arrays and objects nested deeper than this are refused. Real inputs nest a few levels (a tool's
// JSON schema in a chat request perhaps a dozen); code that walks a value recursively (rendering,
// copying, comparing, the tokenizer's Sequence steps) relies on this bound for its stack.
inline constexpr int kMaxJsonDepth = 256;

// One string (a value or a key) longer than this is refused: 16 MiB, far above any tensor name,
// token or chat message, and a cap on what a single quoted string can make us hold.
inline constexpr size_t kMaxJsonStringBytes = size_t(16) << 20;

// A document of more values (numbers, strings, arrays, objects... each counts one) is refused:
// 8 Mi values, 16 times DeepSeek-V3's tokenizer.json, bounds the parsed value's memory for inputs
// with no size limit of their own.
inline constexpr size_t kMaxJsonValues = size_t(8) << 20;

// Parses `text`; errors name `source`. A repeated key of the top-level object is reported as a
// repeated `top_level_key_kind` (e.g. "tensor name"), a repeated nested key as a key of its parent.
nlohmann::json parse_json_strict(std::string_view text, std::string_view source,
                                 std::string_view top_level_key_kind = "key");

// The same for JSON whose object keys keep their order (chat requests).
nlohmann::ordered_json parse_ordered_json_strict(std::string_view text, std::string_view source,
                                                 std::string_view top_level_key_kind = "key");

// Parses `text`, which must hold a JSON object, with the same checks, handing each member of that
// object to `on_member` as soon as its value is complete and keeping only the keys: the whole
// value never exists at once (a safetensors header of 100,000 tensors would take ten times its
// size as nlohmann::json). A dsa::Error thrown by `on_member` ends the parse. `document` names the
// object in the error for any other type ("header must be a JSON object, not an array"); a
// repeated key is reported as a repeated `key_kind`.
void parse_json_object_members_strict(
    std::string_view text, std::string_view source, std::string_view document,
    std::string_view key_kind,
    const std::function<void(const std::string& key, nlohmann::json&& value)>& on_member);

// The value's JSON type with its article, for messages: "an array", "a string", "null".
std::string_view json_type_phrase(const nlohmann::json& value);

}  // namespace dsa

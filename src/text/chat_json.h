// JSON text exactly as Python's json.dumps(value, ensure_ascii=False) writes it, which is what
// DeepSeek's encoder puts into prompts (tool schemas, non-string tool arguments, response_format)
// and into parsed tool-call arguments. nlohmann's dump() differs: no spaces after ',' and ':',
// different float spelling, and \u escapes in upper case.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace dsa::text {

// Objects keep their keys in input order, as Python dicts do.
using Json = nlohmann::ordered_json;

// json.dumps(value, ensure_ascii=False): separators ", " and ": ", floats as Python's repr.
std::string python_json_dumps(const Json& value);

// Appends a JSON string literal ("..." with Python's escapes) for UTF-8 text `text`.
void append_python_json_string(std::string& out, std::string_view text);

// Appends the JSON escape of `text` without the surrounding quotes. Escaping works byte by byte
// (only ASCII is escaped), so escaping pieces of a text one after the other gives the same bytes
// as escaping the whole.
void append_python_json_escaped(std::string& out, std::string_view text);

// Python's repr(float): the shortest digits that round-trip, in fixed notation when the decimal
// exponent is in [-4, 16), else d.ddde+XX; "Infinity", "-Infinity" and "NaN" as json.dumps writes.
std::string python_float_repr(double value);

}  // namespace dsa::text

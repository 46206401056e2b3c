// UTF-8 helpers for the tokenizer. Invalid input is repaired the way Python's
// bytes.decode("utf-8", errors="replace") and Rust's String::from_utf8_lossy do: each maximal
// subpart of an ill-formed sequence (Unicode 15, §3.9, "U+FFFD substitution of maximal subparts")
// becomes one U+FFFD.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace dsa::text {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// Length in bytes of the well-formed character starting at text[pos], or 0 when the bytes there
// do not start one. `*subpart` (when not null) receives the length of the maximal subpart to
// replace on failure (at least 1), or of the truncated-but-valid prefix when the text ends early.
size_t utf8_char_length(std::string_view text, size_t pos, size_t* subpart = nullptr);

bool is_valid_utf8(std::string_view text);

// The text with every maximal invalid subpart replaced by U+FFFD (a copy even when valid).
std::string sanitize_utf8(std::string_view text);

// How many bytes at the end of `text` are the start of a character that more bytes could still
// complete (0..3). Streaming output holds these back.
size_t incomplete_utf8_tail(std::string_view text);

// Appends the UTF-8 encoding of a Unicode scalar value (< 0x110000, not a surrogate).
void append_utf8(std::string& out, char32_t code_point);

// Decodes the well-formed character at text[pos] and advances pos; returns U+FFFD and advances
// by the maximal subpart on ill-formed input.
char32_t next_code_point(std::string_view text, size_t& pos);

}  // namespace dsa::text

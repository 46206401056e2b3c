// Text from files and requests (tensor names, JSON keys, token pieces, regexes) ends up in error
// messages, which reach terminals and, through the server, JSON error bodies. Raw control bytes
// there can drive a terminal (ESC, BEL) and invalid UTF-8 breaks JSON, so every such piece goes
// through printable() before it is formatted into a message.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace dsa {

// The default length of an excerpt: long enough for any real tensor name, key or token.
inline constexpr size_t kDefaultExcerptBytes = 120;

// `text` with every byte that is not printable UTF-8 escaped: the C0 controls and DEL as \t, \n,
// \r or \xNN, the C1 controls (U+0080..U+009F) as \u0080..\u009f, and each byte of an invalid
// UTF-8 sequence as \xNN. Everything else, backslashes included, is kept as is, so applying it
// twice gives the same text as applying it once.
std::string printable(std::string_view text);

// printable(text), cut to at most `max_bytes` bytes (at a character boundary) with "..." after it
// when it is longer: for names and values quoted in messages, which may be megabytes long.
std::string printable_excerpt(std::string_view text, size_t max_bytes = kDefaultExcerptBytes);

}  // namespace dsa

#include "core/printable.h"

#include <fmt/format.h>

#include <cstdint>

namespace dsa {
namespace {

// The length of the well-formed UTF-8 sequence at text[at], or 0 when the bytes there are not
// one (a stray continuation byte, an overlong form, a surrogate, a code point above U+10FFFF or a
// sequence cut short). Core sits below text/, so this does not use text/utf8.h.
size_t utf8_sequence_length(std::string_view text, size_t at, uint32_t& code_point) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[at + i]); };
  const uint8_t lead = byte(0);
  size_t length = 0;
  uint32_t min = 0;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2, min = 0x80, code_point = lead & 0x1Fu;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3, min = 0x800, code_point = lead & 0x0Fu;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4, min = 0x10000, code_point = lead & 0x07u;
  } else {
    return 0;
  }
  if (text.size() - at < length) return 0;
  for (size_t i = 1; i < length; ++i) {
    if ((byte(i) & 0xC0) != 0x80) return 0;
    code_point = (code_point << 6) | (byte(i) & 0x3Fu);
  }
  const bool surrogate = code_point >= 0xD800 && code_point <= 0xDFFF;
  if (code_point < min || code_point > 0x10FFFF || surrogate) return 0;
  return length;
}

void append_escaped_byte(std::string& out, uint8_t byte) {
  switch (byte) {
    case '\t':
      out += "\\t";
      break;
    case '\n':
      out += "\\n";
      break;
    case '\r':
      out += "\\r";
      break;
    default:
      out += fmt::format("\\x{:02x}", byte);
  }
}

// Appends printable text for text[at...] up to `max_bytes` of output; returns where it stopped.
size_t append_printable(std::string& out, std::string_view text, size_t max_bytes) {
  size_t at = 0;
  while (at < text.size()) {
    const size_t before = out.size();
    size_t consumed = 1;
    const auto byte = static_cast<uint8_t>(text[at]);
    if (byte >= 0x20 && byte < 0x7F) {
      out += char(byte);
    } else if (byte < 0x80) {
      append_escaped_byte(out, byte);
    } else {
      uint32_t code_point = 0;
      const size_t length = utf8_sequence_length(text, at, code_point);
      if (length == 0) {
        append_escaped_byte(out, byte);
      } else if (code_point <= 0x9F) {  // a C1 control: terminals may act on it
        out += fmt::format("\\u{:04x}", code_point);
        consumed = length;
      } else {
        out.append(text, at, length);
        consumed = length;
      }
    }
    if (out.size() > max_bytes) {  // one character too many: drop it and stop
      out.resize(before);
      return at;
    }
    at += consumed;
  }
  return at;
}

}  // namespace

std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  append_printable(out, text, SIZE_MAX);
  return out;
}

std::string printable_excerpt(std::string_view text, size_t max_bytes) {
  std::string out;
  if (append_printable(out, text, max_bytes) < text.size()) out += "...";
  return out;
}

}  // namespace dsa

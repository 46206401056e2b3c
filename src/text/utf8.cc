#include "text/utf8.h"

#include <cstdint>

#include "core/error.h"

namespace dsa::text {
namespace {

// The valid range of the second byte of a sequence led by `lead` (Unicode Table 3-7); the later
// bytes are always 0x80..0xBF. Returns the sequence length, 0 for a byte that cannot lead.
int sequence_rule(uint8_t lead, uint8_t& second_lo, uint8_t& second_hi) {
  second_lo = 0x80;
  second_hi = 0xBF;
  if (lead < 0x80) return 1;
  if (lead < 0xC2) return 0;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) {
    if (lead == 0xE0) second_lo = 0xA0;  // no overlong 3-byte forms
    if (lead == 0xED) second_hi = 0x9F;  // no surrogates
    return 3;
  }
  if (lead < 0xF5) {
    if (lead == 0xF0) second_lo = 0x90;  // no overlong 4-byte forms
    if (lead == 0xF4) second_hi = 0x8F;  // nothing above U+10FFFF
    return 4;
  }
  return 0;
}

}  // namespace

size_t utf8_char_length(std::string_view text, size_t pos, size_t* subpart) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  uint8_t lo = 0, hi = 0;
  const int length = sequence_rule(byte(pos), lo, hi);
  if (length == 0) {
    if (subpart) *subpart = 1;
    return 0;
  }
  for (int k = 1; k < length; ++k) {
    const size_t i = pos + k;
    const bool in_range = i < text.size() && byte(i) >= lo && byte(i) <= hi;
    if (!in_range) {
      if (subpart) *subpart = static_cast<size_t>(k);
      return 0;
    }
    lo = 0x80;
    hi = 0xBF;
  }
  return static_cast<size_t>(length);
}

bool is_valid_utf8(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    if (static_cast<uint8_t>(text[pos]) < 0x80) {  // ASCII fast path
      ++pos;
      continue;
    }
    const size_t length = utf8_char_length(text, pos);
    if (length == 0) return false;
    pos += length;
  }
  return true;
}

std::string sanitize_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    size_t subpart = 0;
    const size_t length = utf8_char_length(text, pos, &subpart);
    if (length > 0) {
      out.append(text.substr(pos, length));
      pos += length;
    } else {
      out.append(kReplacementChar);
      pos += subpart;
    }
  }
  return out;
}

size_t incomplete_utf8_tail(std::string_view text) {
  // A character is at most 4 bytes, so only a lead byte among the last 3 can be incomplete.
  const size_t first = text.size() >= 3 ? text.size() - 3 : 0;
  for (size_t start = first; start < text.size(); ++start) {
    uint8_t lo = 0, hi = 0;
    const int length = sequence_rule(static_cast<uint8_t>(text[start]), lo, hi);
    if (length <= 1 || start + length <= text.size()) continue;
    size_t subpart = 0;
    utf8_char_length(text, start, &subpart);
    if (start + subpart == text.size()) return text.size() - start;  // a valid prefix so far
  }
  return 0;
}

void append_utf8(std::string& out, char32_t cp) {
  DSA_CHECK(cp < 0x110000 && (cp < 0xD800 || cp > 0xDFFF), "not a Unicode scalar value: {}",
            static_cast<uint32_t>(cp));
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

char32_t next_code_point(std::string_view text, size_t& pos) {
  size_t subpart = 0;
  const size_t length = utf8_char_length(text, pos, &subpart);
  if (length == 0) {
    pos += subpart;
    return 0xFFFD;
  }
  const auto byte = [&](size_t k) {
    return static_cast<char32_t>(static_cast<uint8_t>(text[pos + k]));
  };
  char32_t cp = 0;
  switch (length) {
    case 1:
      cp = byte(0);
      break;
    case 2:
      cp = ((byte(0) & 0x1F) << 6) | (byte(1) & 0x3F);
      break;
    case 3:
      cp = ((byte(0) & 0x0F) << 12) | ((byte(1) & 0x3F) << 6) | (byte(2) & 0x3F);
      break;
    default:
      cp = ((byte(0) & 0x07) << 18) | ((byte(1) & 0x3F) << 12) | ((byte(2) & 0x3F) << 6) |
           (byte(3) & 0x3F);
  }
  pos += length;
  return cp;
}

}  // namespace dsa::text

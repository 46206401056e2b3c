#include "text/bpe_byte_alphabet.h"

#include "text/utf8.h"

namespace dsa::text {

ByteAlphabet::ByteAlphabet() {
  bytes_.fill(-1);
  char32_t next_extra = 0x100;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    code_points_[b] = printable ? static_cast<char32_t>(b) : next_extra++;
    append_utf8(spellings_[b], code_points_[b]);
    bytes_[code_points_[b]] = static_cast<int16_t>(b);
  }
}

std::optional<uint8_t> ByteAlphabet::byte(char32_t code_point) const {
  if (code_point >= bytes_.size() || bytes_[code_point] < 0) return std::nullopt;
  return static_cast<uint8_t>(bytes_[code_point]);
}

std::string ByteAlphabet::spell(std::string_view bytes) const {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char c : bytes) out += spellings_[static_cast<uint8_t>(c)];
  return out;
}

std::optional<std::string> ByteAlphabet::unspell(std::string_view spelling) const {
  std::string out;
  size_t pos = 0;
  while (pos < spelling.size()) {
    const auto b = byte(next_code_point(spelling, pos));
    if (!b) return std::nullopt;
    out.push_back(static_cast<char>(*b));
  }
  return out;
}

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet alphabet;
  return alphabet;
}

}  // namespace dsa::text

// GPT-2's byte-level alphabet: each of the 256 byte values is spelled as one printable Unicode
// character, so a BPE vocabulary of strings can hold arbitrary bytes. Printable Latin-1 bytes map
// to themselves; the others (controls, space, 0x7F..0xA0, 0xAD) map to U+0100.. in byte order.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace dsa::text {

class ByteAlphabet {
 public:
  ByteAlphabet();
  // The code point that spells `byte`.
  char32_t code_point(uint8_t byte) const { return code_points_[byte]; }
  // The UTF-8 spelling of `byte` (1 or 2 bytes).
  const std::string& spelling(uint8_t byte) const { return spellings_[byte]; }
  // The byte a code point spells, if it is in the alphabet.
  std::optional<uint8_t> byte(char32_t code_point) const;
  // The byte-level spelling of raw bytes.
  std::string spell(std::string_view bytes) const;
  // The bytes a spelling stands for, or nullopt when a character is outside the alphabet.
  std::optional<std::string> unspell(std::string_view spelling) const;

 private:
  std::array<char32_t, 256> code_points_{};
  std::array<std::string, 256> spellings_;
  std::array<int16_t, 324> bytes_{};  // code point (< 0x144) -> byte, -1 when none
};

// The process-wide alphabet (immutable).
const ByteAlphabet& byte_alphabet();

}  // namespace dsa::text

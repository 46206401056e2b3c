// UTF-8 repair must follow Unicode's "substitution of maximal subparts" (§3.9, Tables 3-8..3-11),
// which is what Python's errors="replace" and Rust's from_utf8_lossy do before HF sees text.
#include <gtest/gtest.h>

#include <string>

#include "text/utf8.h"

namespace dsa::text {
namespace {

std::string fffd(int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += kReplacementChar;
  return out;
}

TEST(Utf8, ValidTextIsUnchanged) {
  const std::string text = "ascii, é, 你好, 😀, \x7f, U+10FFFF \xF4\x8F\xBF\xBF";
  EXPECT_TRUE(is_valid_utf8(text));
  EXPECT_EQ(sanitize_utf8(text), text);
  EXPECT_TRUE(is_valid_utf8(""));
}

// The four examples of the Unicode Standard, §3.9 (each expected output is quoted from there).
TEST(Utf8, UnicodeStandardTable3_8NonShortestForms) {
  EXPECT_EQ(sanitize_utf8("\xC0\xAF\xE0\x80\xBF\xF0\x81\x82\x41"), fffd(8) + "A");
}
TEST(Utf8, UnicodeStandardTable3_9Surrogates) {
  EXPECT_EQ(sanitize_utf8("\xED\xA0\x80\xED\xBF\xBF\xED\xAF\x41"), fffd(8) + "A");
}
TEST(Utf8, UnicodeStandardTable3_10OtherIllFormed) {
  EXPECT_EQ(sanitize_utf8("\xF4\x91\x92\x93\xFF\x41\x80\xBF\x42"), fffd(5) + "A" + fffd(2) + "B");
}
TEST(Utf8, UnicodeStandardTable3_11Truncated) {
  EXPECT_EQ(sanitize_utf8("\xE1\x80\xE2\xF0\x91\x92\xF1\xBF\x41"), fffd(4) + "A");
}

TEST(Utf8, TruncatedAtEndIsOneReplacement) {
  EXPECT_FALSE(is_valid_utf8("\xE4\xBD"));
  EXPECT_EQ(sanitize_utf8("x\xF0\x9F\x98"), "x" + fffd(1));
}

TEST(Utf8, IncompleteTailCountsOnlyCompletableBytes) {
  EXPECT_EQ(incomplete_utf8_tail(""), 0u);
  EXPECT_EQ(incomplete_utf8_tail("abc"), 0u);
  EXPECT_EQ(incomplete_utf8_tail("ab\xE4"), 1u);
  EXPECT_EQ(incomplete_utf8_tail("ab\xE4\xBD"), 2u);
  EXPECT_EQ(incomplete_utf8_tail("\xF0\x9F\x98"), 3u);
  EXPECT_EQ(incomplete_utf8_tail("\xE4\xBD\xA0"), 0u);  // complete
  EXPECT_EQ(incomplete_utf8_tail("a\x80"), 0u);         // a stray continuation can never complete
  EXPECT_EQ(incomplete_utf8_tail("a\xE0\x80"), 0u);     // E0 80 is already ill-formed
  EXPECT_EQ(incomplete_utf8_tail("a\xFF"), 0u);
  EXPECT_EQ(incomplete_utf8_tail("\xF0\xE2\x82"), 2u);  // F0 is broken, E2 82 may complete
}

TEST(Utf8, CodePointsRoundTrip) {
  for (const char32_t cp : {U'\0', U'A', U'\u00E9', U'\u07FF', U'\u0800', U'\uFFFD', U'\U00010000',
                            U'\U0001F600', U'\U0010FFFF'}) {
    std::string encoded;
    append_utf8(encoded, cp);
    size_t pos = 0;
    EXPECT_EQ(next_code_point(encoded, pos), cp);
    EXPECT_EQ(pos, encoded.size());
    EXPECT_TRUE(is_valid_utf8(encoded));
  }
  size_t pos = 0;
  EXPECT_EQ(next_code_point("\xE4\xBD!", pos), U'\uFFFD');
  EXPECT_EQ(pos, 2u);  // skipped the maximal subpart E4 BD
}

}  // namespace
}  // namespace dsa::text

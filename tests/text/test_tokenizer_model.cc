// Tokenizer behaviour on tests/data/tokenizer/tiny_tokenizer.json: 256 byte tokens (id = byte),
// merges 0:"b c" 1:"a b" 2:"ab c" 3:"a a" 4:"aa aa" 5:"x y" 6:"Ġ x" (ids 256..262), added tokens
// 300 "<s>" (special), 301 "<tool>", 302 "<tool>x", and DeepSeek's pre-tokenizer. Expected ids
// are worked out by hand from HF's BPE rules (lowest rank first, leftmost on ties).
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "support/test_util.h"
#include "text/bpe_model.h"
#include "text/pretokenizer.h"
#include "text/streaming_detokenizer.h"
#include "text/tokenizer.h"

namespace dsa::text {
namespace {

using Ids = std::vector<int32_t>;

Tokenizer tiny() {
  return Tokenizer::from_file(test::data_dir() / "tokenizer/tiny_tokenizer.json");
}

TEST(TokenizerModel, LowestRankMergesFirst) {
  const Tokenizer t = tiny();
  EXPECT_EQ(t.encode("abc"), (Ids{'a', 256}));  // "b c" (rank 0) beats "a b" (rank 1)
  EXPECT_EQ(t.encode("ab"), (Ids{257}));
  EXPECT_EQ(t.encode(" xy"), (Ids{' ', 261}));  // "x y" (rank 5) beats "Ġ x" (rank 6)
  EXPECT_EQ(t.encode("z"), (Ids{'z'}));
  EXPECT_EQ(t.encode(""), Ids{});
}

TEST(TokenizerModel, EqualRanksMergeLeftmostFirst) {
  // a a a a a -> aa a a a -> aa aa a -> aaaa a
  EXPECT_EQ(tiny().encode("aaaaa"), (Ids{260, 'a'}));
}

TEST(TokenizerModel, AddedTokensLongestMatchAndSpecialSwitch) {
  const Tokenizer t = tiny();
  EXPECT_EQ(t.encode("<s>ab"), (Ids{300, 257}));
  // Without special tokens "<s>" is text: pre-tokens "<s" and ">ab".
  EXPECT_EQ(t.encode("<s>ab", /*allow_special=*/false), (Ids{'<', 's', '>', 257}));
  EXPECT_EQ(t.encode("<tool>x"), (Ids{302}));
  EXPECT_EQ(t.encode("<tool>y"), (Ids{301, 'y'}));
  EXPECT_EQ(t.encode("<tool>x", /*allow_special=*/false), (Ids{302}));  // not special: always on
}

TEST(TokenizerModel, InvalidUtf8BecomesReplacementCharacter) {
  const Tokenizer t = tiny();
  // U+FFFD is EF BF BD; none of these bytes merge in this vocabulary.
  EXPECT_EQ(t.encode("a\xFF"), (Ids{'a', 0xEF, 0xBF, 0xBD}));
  EXPECT_EQ(t.encode("\xE4\xBD"), (Ids{0xEF, 0xBF, 0xBD}));
}

TEST(TokenizerModel, DecodeBytesAndAddedTokens) {
  const Tokenizer t = tiny();
  EXPECT_EQ(t.decode(Ids{300, 257, ' ', 261}), "<s>ab xy");
  EXPECT_EQ(t.decode(Ids{300, 257}, /*skip_special=*/true), "ab");
  EXPECT_EQ(t.decode(Ids{0xE4, 0xBD, 0xA0}), "你");
  EXPECT_EQ(t.decode(Ids{0xE4, 0xBD, 'a'}),
            "\xEF\xBF\xBD"
            "a");  // broken bytes -> one U+FFFD
  EXPECT_EQ(t.token_text(' '), "Ġ");
  EXPECT_EQ(t.token_bytes(' '), " ");
  EXPECT_EQ(t.token_id("Ġx"), 262);
  EXPECT_EQ(t.token_id("<tool>"), 301);
  EXPECT_EQ(t.vocab_size(), 303);
  EXPECT_TRUE(t.is_special(300));
  EXPECT_FALSE(t.is_special(301));
  EXPECT_EQ(t.bos_id(), std::nullopt);  // no DeepSeek BOS string, no tokenizer_config.json
}

TEST(TokenizerModel, UnknownIdsAreRejected) {
  const Tokenizer t = tiny();
  EXPECT_THROW(t.decode(Ids{'a', 280}), Error);  // 263..299 are unused
  EXPECT_THROW(t.decode(Ids{-1}), Error);
  EXPECT_THROW(t.token_text(303), Error);
  try {
    t.token_text(290);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("token id 290 is not in the vocabulary"),
              std::string::npos)
        << e.what();
  }
}

TEST(StreamingDetokenizer, HoldsBackUnfinishedCharacters) {
  const Tokenizer t = tiny();
  StreamingDetokenizer stream(t);
  EXPECT_EQ(stream.push('a'), "a");
  EXPECT_EQ(stream.push(0xF0), "");
  EXPECT_EQ(stream.push(0x9F), "");
  EXPECT_EQ(stream.push(0x98), "");
  EXPECT_EQ(stream.push(0x80), "😀");
  EXPECT_EQ(stream.push(0x80), "\xEF\xBF\xBD");  // a stray continuation can never complete
  EXPECT_EQ(stream.push(0xE4), "");
  EXPECT_EQ(stream.push('b'),
            "\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(stream.push(0xE4), "");
  EXPECT_EQ(stream.push(0xBD), "");
  EXPECT_EQ(stream.flush(), "\xEF\xBF\xBD");  // E4 BD at the end: one U+FFFD, as decode gives
  EXPECT_EQ(stream.flush(), "");
}

TEST(StreamingDetokenizer, SkipsSpecialTokensWhenAsked) {
  const Tokenizer t = tiny();
  StreamingDetokenizer stream(t, /*skip_special=*/true);
  EXPECT_EQ(stream.push(300), "");
  EXPECT_EQ(stream.push(301), "<tool>");
  EXPECT_THROW(stream.push(999), Error);
}

// The heap-based BPE must give the same ids as the plain quadratic reference on random
// vocabularies and words (runs of few letters, so long merge chains and ties are common).
TEST(BpeModel, FastMergeEqualsReference) {
  std::mt19937 rng(12345);
  for (int trial = 0; trial < 20; ++trial) {
    std::array<int32_t, 256> byte_ids;
    for (int b = 0; b < 256; ++b) byte_ids[b] = b;
    std::vector<BpeMerge> merges;
    int32_t next_id = 256;
    std::vector<int32_t> pool = {'a', 'b', 'c', 'd'};
    for (int m = 0; m < 60; ++m) {
      const int32_t left = pool[rng() % pool.size()];
      const int32_t right = pool[rng() % pool.size()];
      merges.push_back({left, right, next_id});
      pool.push_back(next_id++);
    }
    const BpeModel model(byte_ids, merges);
    for (int w = 0; w < 200; ++w) {
      std::string word;
      const size_t length = 1 + rng() % 60;
      for (size_t i = 0; i < length; ++i) word.push_back(static_cast<char>('a' + rng() % 4));
      Ids fast, reference;
      model.encode_word(word, fast);
      model.encode_word_reference(word, reference);
      ASSERT_EQ(fast, reference) << "trial " << trial << ", word " << word;
    }
  }
}

TEST(PreTokenizer, WhitespaceIsOnigurumasSet) {
  const auto pieces = [](const std::string& text) {
    std::vector<TextSpan> spans;
    PreTokenizer({"\\s+"}).split(text, spans);
    std::vector<std::string> out;
    for (const TextSpan s : spans) out.push_back(text.substr(s.begin, s.end - s.begin));
    return out;
  };
  // U+0085 (NEL) and U+3000 are whitespace for Oniguruma (and HF); U+FEFF is not.
  EXPECT_EQ(pieces("a\u0085b"), (std::vector<std::string>{"a", "\u0085", "b"}));
  EXPECT_EQ(pieces("a\u3000 b"), (std::vector<std::string>{"a", "\u3000 ", "b"}));
  EXPECT_EQ(pieces("a\uFEFFb"), (std::vector<std::string>{"a\uFEFFb"}));
}

TEST(PreTokenizer, TranslatesOnlyUnescapedWhitespaceClasses) {
  EXPECT_EQ(translate_hf_regex("a\\sb"), "a[\\t\\n\\x0B\\f\\r\\x{85}\\p{Z}]b");
  EXPECT_EQ(translate_hf_regex("\\S+"), "[^\\t\\n\\x0B\\f\\r\\x{85}\\p{Z}]+");
  EXPECT_EQ(translate_hf_regex("[^\\s\\p{L}]"), "[^\\t\\n\\x0B\\f\\r\\x{85}\\p{Z}\\p{L}]");
  EXPECT_EQ(translate_hf_regex("\\\\s"), "\\\\s");  // an escaped backslash, then a letter s
  EXPECT_EQ(translate_hf_regex("[]\\s]"), "[]\\t\\n\\x0B\\f\\r\\x{85}\\p{Z}]");
  try {
    translate_hf_regex("[\\S]");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("\\S inside a character class"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace dsa::text

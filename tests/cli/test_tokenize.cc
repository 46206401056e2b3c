// `dsa tokenize`, `dsa detokenize` and `dsa tokenizer train` end to end, with
// tests/data/tokenizer/tiny_tokenizer.json (see tests/text/test_tokenizer_model.cc for its ids).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "support/test_util.h"
#include "text/tokenizer.h"

namespace dsa {
namespace {

std::string tiny_path() { return (test::data_dir() / "tokenizer/tiny_tokenizer.json").string(); }

TEST(TokenizeCli, PrintsIds) {
  const auto r = test::run_dsa("tokenize --ids --tokenizer '" + tiny_path() + "'", "<s>abc xy");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "300 97 256 32 261\n");
}

TEST(TokenizeCli, PrintsOneTokenPerLineWithEscapes) {
  const auto r = test::run_dsa("tokenize --tokenizer '" + tiny_path() + "'", "ab\t\n\xE4\xBD\xA0");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // "ab", "\t\n" (whitespace run: bytes 9, 10), "你" (3 byte tokens, each only part of a character)
  EXPECT_EQ(r.out, "257\tab\n9\t\\t\n10\t\\n\n228\t\\xE4\n189\t\\xBD\n160\t\\xA0\n");
}

TEST(TokenizeCli, NoSpecialAndModelDirectory) {
  test::TempDir dir;
  std::filesystem::copy_file(tiny_path(), dir / "tokenizer.json");
  const auto r =
      test::run_dsa("tokenize --ids --no-special -m '" + dir.path().string() + "'", "<s>ab");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "60 115 62 257\n");
}

TEST(TokenizeCli, Errors) {
  auto r = test::run_dsa("tokenize --ids", "x");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("give the tokenizer with -m DIR or --tokenizer FILE"), std::string::npos)
      << r.err;
  r = test::run_dsa("tokenize --tokenizer /nonexistent/tokenizer.json", "x");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot open tokenizer file /nonexistent/tokenizer.json"), std::string::npos)
      << r.err;
  r = test::run_dsa("tokenize --bos --tokenizer '" + tiny_path() + "'", "x");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no BOS token"), std::string::npos) << r.err;
}

TEST(DetokenizeCli, WritesText) {
  auto r =
      test::run_dsa("detokenize --tokenizer '" + tiny_path() + "'", "300 257 32 261\n228 189\n160");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "<s>ab xy你");
  r = test::run_dsa("detokenize --skip-special --tokenizer '" + tiny_path() + "'", "300 257 228");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "ab\xEF\xBF\xBD");  // a character cut short at the end becomes U+FFFD
}

TEST(DetokenizeCli, RejectsBadIds) {
  auto r = test::run_dsa("detokenize --tokenizer '" + tiny_path() + "'", "97 abc");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("input item 1 (\"abc\") is not a token id"), std::string::npos) << r.err;
  r = test::run_dsa("detokenize --tokenizer '" + tiny_path() + "'", "97 5000");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("input item 1: token id 5000 is out of range (vocabulary size 303)"),
            std::string::npos)
      << r.err;
  r = test::run_dsa("detokenize --tokenizer '" + tiny_path() + "'", "290");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("token id 290 is not in the vocabulary"), std::string::npos) << r.err;
}

TEST(TokenizerTrainCli, TrainsALoadableTokenizer) {
  test::TempDir dir;
  test::write_text_file(dir / "a.txt", "the cat sat on the mat. the cat ate.\n");
  test::write_text_file(dir / "b.txt", "<｜User｜>the mat<｜Assistant｜>the cat\n");
  const std::string out = (dir / "tokenizer.json").string();
  const auto r = test::run_dsa("tokenizer train -f '" + (dir / "a.txt").string() + "' '" +
                               (dir / "b.txt").string() + "' --vocab-size 300 -o '" + out + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("2 file(s)"), std::string::npos) << r.out;
  const auto t = text::Tokenizer::from_file(out);
  EXPECT_LE(t.vocab_size(), 300);
  EXPECT_GT(t.vocab_size(), 264);  // some merges were learned
  const std::string sample = "<｜User｜>the cat sat<｜Assistant｜>";
  EXPECT_EQ(t.decode(t.encode(sample)), sample);
}

TEST(TokenizerTrainCli, Errors) {
  test::TempDir dir;
  auto r = test::run_dsa("tokenizer train -f /nonexistent.txt --vocab-size 300 -o '" +
                         (dir / "t.json").string() + "'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot open training file /nonexistent.txt"), std::string::npos) << r.err;
  test::write_text_file(dir / "a.txt", "text");
  r = test::run_dsa("tokenizer train -f '" + (dir / "a.txt").string() + "' --vocab-size 10 -o '" +
                    (dir / "t.json").string() + "'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("vocab size 10 is too small"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir / "t.json"));
}

}  // namespace
}  // namespace dsa

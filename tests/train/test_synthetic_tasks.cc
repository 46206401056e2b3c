// Synthetic long-range tasks (train/synthetic_tasks.h), with the small trained tokenizer of
// tests/data: each sample holds its fact exactly once at the requested depth (to within one
// sentence), ends with its answer, reaches its token length without passing it, and is a pure
// function of its arguments.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "support/test_util.h"
#include "text/tokenizer.h"
#include "train/synthetic_tasks.h"

namespace dsa::train {
namespace {

size_t count_of(std::string_view text, std::string_view needle) {
  size_t n = 0;
  for (size_t pos = text.find(needle); pos != std::string_view::npos;
       pos = text.find(needle, pos + 1)) {
    ++n;
  }
  return n;
}

// A haystack of distinct, digit-free sentences: "Sentence ab walks home." for letter pairs, so a
// test can count them.
std::vector<std::string> letter_sentences(int count) {
  std::vector<std::string> sentences;
  for (int i = 0; i < count; ++i) {
    sentences.push_back(std::string("Sentence ") + char('a' + i / 26) + char('a' + i % 26) +
                        " walks home.");
  }
  return sentences;
}

class SyntheticTest : public ::testing::Test {
 protected:
  SyntheticTest()
      : tokenizer_(text::Tokenizer::from_file(test::data_dir() /
                                              "tokenizer/trained_small/tokenizer.json")),
        generator_(tokenizer_, letter_sentences(300)),
        plain_(tokenizer_, {}) {}

  // The most tokens one more filler sentence can add: its own tokens after the joining space,
  // plus one for a merge across the join.
  int64_t sentence_slack(const std::vector<std::string>& sentences) const {
    int64_t most = 0;
    for (const std::string& s : sentences) most = std::max(most, generator_.count_tokens(" " + s));
    return most + 1;
  }

  void expect_length(const SyntheticSample& s, int64_t target, int64_t slack) const {
    EXPECT_EQ(s.target_tokens, target);
    EXPECT_EQ(s.tokens, generator_.count_tokens(s.prompt + s.answer));
    EXPECT_LE(s.tokens, target);
    EXPECT_GT(s.tokens, target - slack) << "the sample stops short of its target";
  }

  text::Tokenizer tokenizer_;
  SyntheticTaskGenerator generator_;
  SyntheticTaskGenerator plain_;  // no haystack
};

const std::vector<std::string> kPasskeyFiller = {"The grass is green.", "The sky is blue.",
                                                 "The sun is yellow.", "Here we go.",
                                                 "There and back again."};

size_t filler_sentences(std::string_view text) {
  size_t n = 0;
  for (const std::string& s : kPasskeyFiller) n += count_of(text, s);
  return n;
}

TEST_F(SyntheticTest, SplitSentences) {
  EXPECT_EQ(
      split_sentences("Hello world.  How are\nyou?\n\nA new paragraph\nwithout end"),
      (std::vector<std::string>{"Hello world.", "How are you?", "A new paragraph without end"}));
  EXPECT_EQ(
      split_sentences("He said \"Go.\" Then (he left.) It took 3.5 seconds!"),
      (std::vector<std::string>{"He said \"Go.\"", "Then (he left.)", "It took 3.5 seconds!"}));
  EXPECT_TRUE(split_sentences(" \n\n \t").empty());
}

TEST_F(SyntheticTest, HaystackDropsDigitsAndArrows) {
  const SyntheticTaskGenerator g(tokenizer_,
                                 {"It was 1611.", "Keep this one.", "a -> b.", "Fine."});
  EXPECT_EQ(g.haystack_size(), 2u);
}

TEST_F(SyntheticTest, PasskeyFollowsLlamaCppAndSitsAtDepth) {
  const int64_t slack = sentence_slack(kPasskeyFiller);
  for (int64_t target : {181, 256, 601}) {
    for (double depth : {0.0, 0.1, 0.37, 0.5, 0.9, 1.0}) {
      SCOPED_TRACE(testing::Message() << "target " << target << " depth " << depth);
      const SyntheticSample s = generator_.passkey(target, depth, uint64_t(target) * 31 + 7);
      EXPECT_EQ(s.kind, SyntheticKind::kPasskey);
      expect_length(s, target, slack);
      // The answer " N." and the needle "The pass key is N. Remember it. N is the pass key."
      ASSERT_TRUE(s.answer.starts_with(" ") && s.answer.ends_with("."));
      const std::string key = s.answer.substr(1, s.answer.size() - 2);
      ASSERT_FALSE(key.empty());
      const std::string needle =
          "The pass key is " + key + ". Remember it. " + key + " is the pass key.";
      EXPECT_EQ(count_of(s.prompt, needle), 1u);
      EXPECT_EQ(count_of(s.prompt, key), 2u);  // only in the needle, which says it twice
      EXPECT_TRUE(s.prompt.ends_with("What is the pass key? The pass key is"));
      EXPECT_TRUE(
          s.prompt.starts_with("There is an important info hidden inside a lot of "
                               "irrelevant text."));
      // Depth: the filler sentences before the needle, against depth * all of them.
      const size_t at = s.prompt.find(needle);
      const double before = double(filler_sentences(std::string_view(s.prompt).substr(0, at)));
      const double total = double(filler_sentences(s.prompt));
      EXPECT_EQ(total, double(s.filler_sentences));
      EXPECT_LE(std::abs(before - depth * total), 1.0) << before << " of " << total;
      EXPECT_GT(total, 0);
    }
  }
}

TEST_F(SyntheticTest, NeedleInRealTextSitsAtDepth) {
  const int64_t slack = sentence_slack(letter_sentences(300));
  for (int64_t target : {197, 333, 1000}) {
    for (double depth : {0.0, 0.25, 0.5, 0.8, 1.0}) {
      SCOPED_TRACE(testing::Message() << "target " << target << " depth " << depth);
      const SyntheticSample s = generator_.needle(target, depth, uint64_t(target) + 99);
      EXPECT_EQ(s.kind, SyntheticKind::kNeedle);
      expect_length(s, target, slack);
      const std::string number = s.answer.substr(1, s.answer.size() - 2);
      ASSERT_EQ(number.size(), 7u) << s.answer;
      EXPECT_EQ(count_of(s.prompt, number), 1u);
      const size_t fact = s.prompt.find("The special magic number for ");
      ASSERT_NE(fact, std::string::npos);
      const std::string word =
          s.prompt.substr(fact + 29, s.prompt.find(' ', fact + 29) - (fact + 29));
      EXPECT_EQ(count_of(s.prompt, "The special magic number for " + word + " is " + number + "."),
                1u);
      EXPECT_TRUE(s.prompt.ends_with("The special magic number for " + word +
                                     " mentioned in the provided text is"));
      const double before =
          double(count_of(std::string_view(s.prompt).substr(0, fact), "Sentence "));
      const double total = double(count_of(s.prompt, "Sentence "));
      EXPECT_EQ(total, double(s.filler_sentences));
      EXPECT_LE(std::abs(before - depth * total), 1.0) << before << " of " << total;
    }
  }
}

TEST_F(SyntheticTest, KeyValueRecallAnswersFromFarBack) {
  const int64_t slack = sentence_slack(letter_sentences(300));
  for (int64_t target : {221, 512, 900}) {
    for (double depth : {0.0, 0.3, 1.0}) {
      SCOPED_TRACE(testing::Message() << "target " << target << " depth " << depth);
      const SyntheticSample s = generator_.key_value_recall(target, depth, uint64_t(target) * 3);
      EXPECT_EQ(s.kind, SyntheticKind::kKeyValueRecall);
      expect_length(s, target, slack);
      // The prompt ends with "KEY ->" and the answer is " VALUE", listed once, far back.
      const size_t last_line = s.prompt.rfind('\n');
      const std::string query = s.prompt.substr(last_line + 1);
      ASSERT_TRUE(query.ends_with(" ->")) << query;
      const std::string key = query.substr(0, query.size() - 3);
      const std::string value = s.answer.substr(1);
      ASSERT_EQ(value.size(), 4u);
      EXPECT_EQ(count_of(s.prompt, value), 1u);
      const size_t list = s.prompt.find("Here is a list of keys and their values. Remember them.");
      const size_t pair = s.prompt.find("\n" + key + " -> " + value + "\n");
      const size_t recall = s.prompt.find("Now recall the value of each key.");
      ASSERT_NE(list, std::string::npos);
      ASSERT_NE(pair, std::string::npos);
      EXPECT_LT(list, pair);
      EXPECT_LT(pair, recall);
      // 8 pairs, then 4 queries (3 answered, the last one open).
      EXPECT_EQ(count_of(s.prompt, " -> "), 8u + 3u);
      const double before =
          double(count_of(std::string_view(s.prompt).substr(0, list), "Sentence "));
      const double total = double(count_of(s.prompt, "Sentence "));
      EXPECT_EQ(total, double(s.filler_sentences));
      EXPECT_LE(std::abs(before - depth * total), 1.0) << before << " of " << total;
    }
  }
  // Without real text the filler is the passkey's.
  const SyntheticSample s = plain_.key_value_recall(350, 0.5, 1);
  EXPECT_GT(filler_sentences(s.prompt), 10u);
  EXPECT_LE(s.tokens, 350);
}

TEST_F(SyntheticTest, DeterministicFromSeed) {
  for (int k = 0; k < kSyntheticKindCount; ++k) {
    const SyntheticKind kind = SyntheticKind(k);
    const SyntheticSample a = generator_.generate(kind, 400, 0.4, 12345);
    const SyntheticSample b = generator_.generate(kind, 400, 0.4, 12345);
    const SyntheticSample c = generator_.generate(kind, 400, 0.4, 12346);
    EXPECT_EQ(a.text(), b.text()) << synthetic_kind_name(kind);
    EXPECT_NE(a.text(), c.text()) << synthetic_kind_name(kind);
    EXPECT_EQ(parse_synthetic_kind(synthetic_kind_name(kind)), kind);
  }
  EXPECT_EQ(parse_synthetic_kind("haystack"), std::nullopt);
}

TEST_F(SyntheticTest, Errors) {
  auto message = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_NE(message([&] {
              generator_.passkey(10, 0.5, 1);
            }).find("synthetic passkey: target length 10 tokens is too short"),
            std::string::npos);
  EXPECT_NE(
      message([&] { generator_.needle(200, 1.5, 1); }).find("depth must be in [0, 1], got 1.5"),
      std::string::npos);
  EXPECT_NE(message([&] { plain_.needle(200, 0.5, 1); }).find("synthetic needle: no haystack text"),
            std::string::npos);
  EXPECT_NE(message([&] {
              SyntheticTaskGenerator(tokenizer_, {}, {.kv_pairs = 4, .kv_queries = 5});
            }).find("kv_queries must be in [1, kv_pairs = 4], got 5"),
            std::string::npos);
}

}  // namespace
}  // namespace dsa::train

// The BPE trainer: merges by count with deterministic ties, chat tokens kept out of training,
// and a tokenizer.json that loads and round-trips. Expected merges are counted by hand.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "text/bpe_trainer.h"
#include "text/tokenizer.h"

namespace dsa::text {
namespace {

using nlohmann::json;

json train(const std::vector<std::string>& texts, int32_t vocab_size, int64_t min_frequency = 2) {
  BpeTrainer trainer({vocab_size, min_frequency});
  for (const auto& text : texts) trainer.add_text(text);
  return json::parse(trainer.train_to_json());
}

std::vector<std::string> merges(const json& tokenizer) {
  return tokenizer["model"]["merges"].get<std::vector<std::string>>();
}

TEST(BpeTrainer, MergesMostFrequentPairFirst) {
  // Words: "ab", " ab" x2, " cd". Pair counts: a b = 3, Ġ a = 2, Ġ c = 1, c d = 1.
  // After "a b": Ġ ab = 2. Then every pair occurs once, below the minimum of 2.
  const json t = train({"ab ab ab cd"}, 1000);
  EXPECT_EQ(merges(t), (std::vector<std::string>{"a b", "Ġ ab"}));
  EXPECT_EQ(t["model"]["vocab"].size(), 256u + 2u);
  EXPECT_EQ(t["model"]["vocab"]["a"], 8 + 'a');  // 8 chat tokens first, then bytes in order
  EXPECT_EQ(t["model"]["vocab"]["ab"], 264);
  EXPECT_EQ(t["model"]["vocab"]["Ġab"], 265);
}

TEST(BpeTrainer, TiesGoToTheSmallerPair) {
  // Words: "xy", " xy", " zw" x2. Counts: x y = 2, z w = 2, Ġ z = 2, Ġ x = 1. Ids: Ġ = 8 + 0x20,
  // x = 8 + 0x78, z = 8 + 0x7A, so (Ġ, z) is the smallest pair; then x y (ids below the new
  // Ġz = 264); then Ġz w.
  EXPECT_EQ(merges(train({"xy xy zw zw"}, 1000)), (std::vector<std::string>{"Ġ z", "x y", "Ġz w"}));
}

TEST(BpeTrainer, StopsAtVocabularySize) {
  const json t = train({"ab ab ab cd"}, 8 + 256 + 1);
  EXPECT_EQ(merges(t), (std::vector<std::string>{"a b"}));
}

TEST(BpeTrainer, ChatTokensAreNotLearned) {
  const json t =
      train({"<｜User｜>hi<｜Assistant｜>hi<think>hi</think><｜end▁of▁sentence｜>"}, 1000);
  EXPECT_EQ(merges(t), (std::vector<std::string>{"h i"}));
  std::vector<std::string> added;
  for (const auto& a : t["added_tokens"]) added.push_back(a["content"]);
  EXPECT_EQ(added, (std::vector<std::string>{"<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>",
                                             "<｜▁pad▁｜>", "<｜User｜>", "<｜Assistant｜>",
                                             "<think>", "</think>", "｜DSML｜"}));
}

TEST(BpeTrainer, WrittenTokenizerLoadsAndRoundTrips) {
  const std::string text =
      "The trainer learns merges. The trainer writes tokenizer.json. 训练分词器，训练模型。\n"
      "def f(x):\n    return x * 2  # 12345\n\xFF";  // invalid UTF-8 is trained as U+FFFD
  BpeTrainer trainer({400, 2});
  trainer.add_text(text);
  const Tokenizer t = Tokenizer::from_json_text(trainer.train_to_json(), "trained");
  EXPECT_EQ(t.bos_id(), 0);
  EXPECT_EQ(t.eos_id(), 1);
  EXPECT_EQ(t.token_id("<｜User｜>"), 3);
  EXPECT_EQ(t.token_id("｜DSML｜"), 7);
  EXPECT_TRUE(t.is_special(1));
  EXPECT_FALSE(t.is_special(5));
  const std::string sample =
      "<｜User｜>The trainer<｜Assistant｜><think>x</think><｜DSML｜invoke>训练 12345";
  const auto ids = t.encode(sample);
  EXPECT_EQ(ids[0], 3);
  EXPECT_EQ(t.decode(ids), sample);
  EXPECT_LT(ids.size(), sample.size() / 2);  // merges were learned and used
}

TEST(BpeTrainer, RejectsBadOptions) {
  try {
    BpeTrainer({100, 2});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("vocab size 100 is too small"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("at least 264"), std::string::npos) << e.what();
  }
  EXPECT_THROW(BpeTrainer({1000, 0}), Error);
}

}  // namespace
}  // namespace dsa::text

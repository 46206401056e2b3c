// Every rejection of a bad tokenizer.json names the file, the field and what is wrong.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "support/test_util.h"
#include "text/tokenizer.h"

namespace dsa::text {
namespace {

using nlohmann::json;

json tiny_json() {
  return json::parse(test::read_text_file(test::data_dir() / "tokenizer/tiny_tokenizer.json"));
}

// Loads `text` as "bad.json" and returns the error message ("" when it loads).
std::string load_error(const std::string& text) {
  try {
    Tokenizer::from_json_text(text, "bad.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void expect_error(const json& tokenizer, const std::string& expected) {
  const std::string message = load_error(tokenizer.dump());
  EXPECT_NE(message.find(expected), std::string::npos) << "message: " << message;
  EXPECT_EQ(message.rfind("bad.json: ", 0), 0u) << "message does not name the file: " << message;
}

TEST(TokenizerErrors, TinyTokenizerLoads) { EXPECT_EQ(load_error(tiny_json().dump()), ""); }

TEST(TokenizerErrors, MalformedJson) {
  const std::string message = load_error("{\"model\": ");
  EXPECT_NE(message.find("bad.json: invalid JSON at byte 10, line 1, column 11: syntax error"),
            std::string::npos)
      << message;
}

TEST(TokenizerErrors, MissingOrWrongModel) {
  json t = tiny_json();
  t.erase("model");
  expect_error(t, "top level: missing field \"model\"");
  t = tiny_json();
  t["model"]["type"] = "WordPiece";
  expect_error(t, "model.type: \"WordPiece\" is not supported (only \"BPE\")");
  t = tiny_json();
  t["model"]["dropout"] = 0.1;
  expect_error(t, "model.dropout: BPE dropout is not supported");
  t = tiny_json();
  t["model"]["vocab"] = json::array();
  expect_error(t, "model.vocab: expected an object");
  t = tiny_json();
  t["model"]["vocab"]["a"] = -3;
  expect_error(t,
               "model.vocab[\"a\"]: expected a token id in [0, 65802) (the 266 tokens listed plus "
               "up to 65536 unused ids, at most 4194304), got -3");
}

TEST(TokenizerErrors, BadMerges) {
  json t = tiny_json();
  t["model"]["merges"][2] = "q9 c";
  expect_error(t, "model.merges[2]: token \"q9\" is not in model.vocab");
  t["model"]["merges"][2] = "abc";
  expect_error(t, "model.merges[2]: expected \"left right\" with one space, got \"abc\"");
  t["model"]["merges"][2] = 7;
  expect_error(t, "model.merges[2]: expected \"left right\" or [left, right], got 7");
  t["model"]["merges"][2] = json::array({"x", "z"});  // "xz" is not in the vocabulary
  expect_error(t, "model.merges[2]: token \"xz\" is not in model.vocab");
}

TEST(TokenizerErrors, BadAddedTokens) {
  json t = tiny_json();
  t["added_tokens"][1]["lstrip"] = true;
  expect_error(t, "added_tokens[1].lstrip: true is not supported");
  t = tiny_json();
  t["added_tokens"][0]["content"] = "";
  expect_error(t, "added_tokens[0].content: must not be empty");
  t = tiny_json();
  t["added_tokens"][2].erase("id");
  expect_error(t, "added_tokens[2]: missing field \"id\"");
  t = tiny_json();
  t["added_tokens"][0]["special"] = "yes";
  expect_error(t, "added_tokens[0].special: expected true or false, got string");
}

TEST(TokenizerErrors, UnsupportedPipelineParts) {
  json t = tiny_json();
  t["normalizer"] = {{"type", "NFC"}};
  expect_error(t, "normalizer: normalizer type \"NFC\" is not supported");
  t = tiny_json();
  t["pre_tokenizer"]["pretokenizers"].erase(3);  // drop ByteLevel
  expect_error(t, "pre_tokenizer: no ByteLevel step");
  t = tiny_json();
  t["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed";
  expect_error(t, "pre_tokenizer.pretokenizers[0].behavior: \"Removed\" is not supported");
  t = tiny_json();
  t["pre_tokenizer"]["pretokenizers"][1]["pattern"] = {{"Regex", "(ab"}};
  expect_error(t, "regex '(ab' does not compile");
  t = tiny_json();
  t["pre_tokenizer"]["pretokenizers"][3]["add_prefix_space"] = true;
  expect_error(t, "pre_tokenizer.pretokenizers[3].add_prefix_space: true is not supported");
  t = tiny_json();
  t["pre_tokenizer"] = {{"type", "Whitespace"}};
  expect_error(t, "pre-tokenizer type \"Whitespace\" is not supported");
  t = tiny_json();
  t["decoder"] = {{"type", "WordPiece"}};
  expect_error(t, "decoder.type: \"WordPiece\" is not supported");
}

TEST(TokenizerErrors, MissingFiles) {
  test::TempDir dir;
  try {
    Tokenizer::from_file(dir / "nope.json");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot open tokenizer file"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("nope.json"), std::string::npos) << e.what();
  }
  try {
    Tokenizer::from_model_dir(dir.path());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("has no tokenizer.json"), std::string::npos) << e.what();
  }
}

TEST(TokenizerErrors, ConfigNamesBosAndEos) {
  test::TempDir dir;
  test::write_text_file(dir / "tokenizer.json", tiny_json().dump());
  test::write_text_file(dir / "tokenizer_config.json",
                        R"({"bos_token": {"content": "<s>"}, "eos_token": "<tool>"})");
  const Tokenizer t = Tokenizer::from_model_dir(dir.path());
  EXPECT_EQ(t.bos_id(), 300);
  EXPECT_EQ(t.eos_id(), 301);
  test::write_text_file(dir / "tokenizer_config.json", "{");
  EXPECT_THROW(Tokenizer::from_model_dir(dir.path()), Error);
}

}  // namespace
}  // namespace dsa::text

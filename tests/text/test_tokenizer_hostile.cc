// Hostile tokenizer.json files, generated here: deep Sequence steps, huge ids, overflowing
// numbers, trailing text, repeated keys, literal Split patterns holding regex syntax, control
// bytes in tokens. Each one loads as it should or is a dsa::Error, quickly and in printable text.
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "core/printable.h"
#include "support/test_util.h"
#include "text/tokenizer.h"
#include "text/tokenizer_model.h"

namespace dsa::text {
namespace {

using nlohmann::json;

#if defined(NDEBUG) && !defined(__SANITIZE_ADDRESS__)
constexpr auto kTimeLimit = std::chrono::seconds(1);
#else
constexpr auto kTimeLimit = std::chrono::seconds(10);  // Debug and sanitizer builds are slower
#endif

json tiny_json() {
  return json::parse(test::read_text_file(test::data_dir() / "tokenizer/tiny_tokenizer.json"));
}

// Loads `text` as "bad.json" and returns the error message ("" when it loads); checks that it is
// quick and that the message is printable.
std::string load_error(const std::string& text) {
  const auto start = std::chrono::steady_clock::now();
  std::string message;
  try {
    Tokenizer::from_json_text(text, "bad.json");
  } catch (const Error& e) {
    message = e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, kTimeLimit);
  EXPECT_EQ(printable(message), message);
  return message;
}

#define EXPECT_CONTAINS(text, part) \
  EXPECT_NE(std::string(text).find(part), std::string::npos) << "in: " << (text)

// A pre-tokenizer of `depth` Sequences, each holding the next, with a ByteLevel step innermost.
std::string nested_pre_tokenizer(int depth) {
  std::string text;
  for (int i = 0; i < depth; ++i) text += R"({"type": "Sequence", "pretokenizers": [)";
  text += R"({"type": "ByteLevel", "add_prefix_space": false, "use_regex": false})";
  for (int i = 0; i < depth; ++i) text += "]}";
  return text;
}

std::string with_pre_tokenizer(const std::string& pre_tokenizer) {
  json t = tiny_json();
  t.erase("pre_tokenizer");
  std::string text = t.dump();
  text.pop_back();  // the closing brace
  return text + R"(, "pre_tokenizer": )" + pre_tokenizer + "}";
}

TEST(TokenizerHostile, DeepSequenceIsRefusedAtTheNestingLimit) {
  // 20,000 levels took 14 s and 3.4 GB to be accepted, and deeper ones overflowed the stack.
  for (const int depth : {20000, 100000}) {
    EXPECT_CONTAINS(load_error(with_pre_tokenizer(nested_pre_tokenizer(depth))),
                    "bad.json: JSON nested deeper than 256 levels at byte ");
  }
  // 100 levels (201 of JSON under the document's object) are within the limit and load.
  EXPECT_EQ(load_error(with_pre_tokenizer(nested_pre_tokenizer(100))), "");
}

TEST(TokenizerHostile, ErrorPathsOfDeepSequencesAreBuiltOnlyForTheError) {
  std::string bad = nested_pre_tokenizer(120);
  bad.replace(bad.find("ByteLevel"), 9, "Whitespace");
  std::string expected = "bad.json: pre_tokenizer";
  for (int i = 0; i < 120; ++i) expected += ".pretokenizers[0]";
  EXPECT_EQ(
      load_error(with_pre_tokenizer(bad)),
      expected +
          ": pre-tokenizer type \"Whitespace\" is not supported (Sequence, Split, ByteLevel)");
}

TEST(TokenizerHostile, HugeIdsAreRefusedBeforeAnythingIsSizedByThem) {
  // 2^30 - 1 tried to allocate tens of GB; 2^26 took 16 s and 4.3 GB.
  for (const int64_t id :
       {(int64_t(1) << 30) - 1, int64_t(1) << 26, int64_t(1) << 22, int64_t(263 + 3 + 65536)}) {
    json t = tiny_json();
    t["model"]["vocab"]["a"] = id;
    EXPECT_CONTAINS(load_error(t.dump()),
                    "bad.json: model.vocab[\"a\"]: expected a token id in [0, 65802) (the 266 "
                    "tokens listed plus up to 65536 unused ids, at most 4194304), got " +
                        std::to_string(id));
    t = tiny_json();
    t["added_tokens"][0]["id"] = id;
    EXPECT_CONTAINS(load_error(t.dump()), "bad.json: added_tokens[0].id: expected a token id");
  }
  // The largest id the bound allows loads, and the id table is that large.
  json t = tiny_json();
  t["added_tokens"][0]["id"] = 263 + 3 + 65536 - 1;
  const Tokenizer tokenizer = Tokenizer::from_json_text(t.dump(), "ok.json");
  EXPECT_EQ(tokenizer.vocab_size(), 263 + 3 + 65536);
}

TEST(TokenizerHostile, OverflowingNumbersAreUserErrors) {
  // Was "internal error: [json.exception.out_of_range.406]", and aborted the fuzzer.
  EXPECT_CONTAINS(load_error(R"({"model": 1e400})"), "bad.json: invalid JSON at byte ");
  EXPECT_CONTAINS(load_error(R"({"model": 1e400})"), "number overflow parsing '1e400'");
  json t = tiny_json();
  std::string text = t.dump();
  text.replace(text.find("\"vocab\":{"), 9, "\"vocab\":{\"big\":-1e400,");
  EXPECT_CONTAINS(load_error(text), "number overflow");
}

TEST(TokenizerHostile, TrailingTextAndRepeatedKeysAreRefused) {
  const std::string tiny = tiny_json().dump();
  EXPECT_EQ(load_error(tiny + " \n"), "");
  EXPECT_CONTAINS(load_error(tiny + " x"), "bad.json: invalid JSON at byte ");
  EXPECT_CONTAINS(load_error(tiny + "{}"), "expected end of input");
  std::string repeated = tiny;
  repeated.replace(repeated.find("\"vocab\":{"), 9, "\"vocab\":{\"a\":1,\"a\":2,");
  EXPECT_CONTAINS(load_error(repeated), "bad.json: duplicate key 'a' in the object 'model.vocab'");
  std::string repeated_top = tiny;
  repeated_top.pop_back();
  EXPECT_CONTAINS(load_error(repeated_top + R"(, "decoder": null})"),
                  "bad.json: duplicate key 'decoder' at byte ");
}

TEST(TokenizerHostile, TokenizerConfigIsParsedStrictly) {
  test::TempDir dir;
  test::write_text_file(dir / "tokenizer.json", tiny_json().dump());
  test::write_text_file(dir / "tokenizer_config.json", R"({"bos_token": "<s>", "bos_token": 1})");
  try {
    Tokenizer::from_model_dir(dir.path());
    ADD_FAILURE() << "a repeated key was accepted";
  } catch (const Error& e) {
    EXPECT_CONTAINS(e.what(), "tokenizer_config.json: duplicate key 'bos_token'");
  }
}

// The pieces the model's pre-tokenizer cuts `text` into.
std::vector<std::string> pieces(const TokenizerModel& model, std::string_view text) {
  std::vector<TextSpan> spans;
  model.pre_tokenizer.split(text, spans);
  std::vector<std::string> out;
  for (const TextSpan& span : spans)
    out.emplace_back(text.substr(span.begin, span.end - span.begin));
  return out;
}

TEST(TokenizerHostile, SplitStringPatternsMatchTheirTextLiterally) {
  // A {"String": ...} pattern was wrapped in \Q...\E as it was, so "\E(" ended the quoting and
  // left "(" as regex syntax: the tokenizer did not load.
  for (const std::string literal : {"\\E(", "\\s", ".*", "[x]", "a|b", "\\Q", "(?i)", "é+"}) {
    json t = tiny_json();
    t["pre_tokenizer"] = {
        {"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"String", literal}}}, {"behavior", "Isolated"}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
    const TokenizerModel model = parse_tokenizer_json(t.dump(), "ok.json");
    const std::string text = "x " + literal + " y" + literal;
    EXPECT_EQ(pieces(model, text), (std::vector<std::string>{"x ", literal, " y", literal}))
        << literal;
    // Text that the literal would match only as a regex is left whole.
    EXPECT_EQ(pieces(model, "a b\tc"), (std::vector<std::string>{"a b\tc"})) << literal;
  }
}

TEST(TokenizerHostile, ErrorsEscapeWhatTheyQuote) {
  json t = tiny_json();
  t["model"]["merges"][0] = "\x1b[31m\x07 c";
  const std::string merge = load_error(t.dump());
  EXPECT_CONTAINS(merge,
                  "bad.json: model.merges[0]: token \"\\x1b[31m\\x07\" is not in model.vocab");
  t = tiny_json();
  t["model"]["vocab"]["\x1b\x07"] = "x";
  EXPECT_CONTAINS(load_error(t.dump()), "model.vocab[\"\\x1b\\x07\"]: expected a token id");
  t = tiny_json();
  t["model"]["merges"][0] = json::array({json::array({std::string(1000, 'x')}), 1});
  const std::string described = load_error(t.dump());
  EXPECT_CONTAINS(described, "expected \"left right\" or [left, right], got [[\"xxxx");
  EXPECT_LT(described.size(), 300u);
  t = tiny_json();
  t["pre_tokenizer"]["pretokenizers"][1]["pattern"] = {{"Regex", "(\x1b"}};
  EXPECT_CONTAINS(load_error(t.dump()), "regex '(\\x1b' does not compile");
}

}  // namespace
}  // namespace dsa::text

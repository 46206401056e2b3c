// parse_json_strict: what it accepts parses as nlohmann would; what it refuses (repeated keys,
// trailing text, overflowing numbers, too deep nesting, too long strings, too many values) is a
// dsa::Error naming the source, the byte offset and the limit, in printable text; and its time
// is linear in the input.
#include <gtest/gtest.h>

#include <chrono>
#include <ctime>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/json_strict.h"
#include "core/printable.h"

namespace dsa {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

// Sanitizer and Debug builds run several times slower; a quadratic parse is still far beyond
// either limit (100,000 keys took minutes).
#if defined(NDEBUG) && !defined(__SANITIZE_ADDRESS__)
constexpr auto kLinearTimeLimit = std::chrono::seconds(1);
#else
constexpr auto kLinearTimeLimit = std::chrono::seconds(10);
#endif

// The message of the dsa::Error that parsing `text` as "in.json" raises ("" when it parses).
std::string error_of(const std::string& text, std::string_view key_kind = "key") {
  try {
    parse_json_strict(text, "in.json", key_kind);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string ordered_error_of(const std::string& text) {
  try {
    parse_ordered_json_strict(text, "in.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_CONTAINS(text, part) \
  EXPECT_NE(std::string(text).find(part), std::string::npos) << "in: " << (text)

TEST(JsonStrict, ParsesLikeNlohmann) {
  const std::string text =
      R"( {"a": [1, -2, 3.5, 1e300, 18446744073709551615, -9223372036854775808, true, false,)"
      R"( null, "\u00e9\ud83d\ude00\n", {}, []], "": {"x": {"y": [[], [{}]]}}, "b": "z"} )";
  EXPECT_EQ(parse_json_strict(text, "in.json"), json::parse(text));
  EXPECT_EQ(parse_ordered_json_strict(text, "in.json"), ordered_json::parse(text));
  // ordered_json keeps the keys in the order they were written.
  EXPECT_EQ(parse_ordered_json_strict(R"({"z": 1, "a": 2, "m": 3})", "in.json").dump(),
            R"({"z":1,"a":2,"m":3})");
  EXPECT_EQ(parse_json_strict("7", "in.json"), json(7));
  EXPECT_EQ(parse_json_strict("\"s\"", "in.json"), json("s"));
}

TEST(JsonStrict, RefusesTrailingText) {
  for (const std::string text : {"{} x", "{}{}", "[1]]", "1 2", "\"a\" \"b\"", "null,"}) {
    EXPECT_CONTAINS(error_of(text), "in.json: invalid JSON at byte ");
    EXPECT_CONTAINS(error_of(text), "expected end of input");
  }
  EXPECT_EQ(error_of("{} \n\t\r "), "");  // whitespace after the value is fine
  EXPECT_EQ(error_of("{} x"),
            "in.json: invalid JSON at byte 3, line 1, column 4: syntax error while parsing value - "
            "invalid literal; last read: '{} x'; expected end of input");
}

TEST(JsonStrict, RefusesNulBytes) {
  EXPECT_EQ(error_of(std::string("{}\0junk", 7)), "in.json: invalid JSON: NUL byte at offset 2");
}

TEST(JsonStrict, RefusesRepeatedKeysAtAnyDepth) {
  EXPECT_EQ(error_of(R"({"w": 1, "w": 2})", "tensor name"),
            "in.json: duplicate tensor name 'w' at byte 11");
  EXPECT_EQ(error_of(R"({"a": {"b": [0, {"k": 1, "k": 2}]}})"),
            "in.json: duplicate key 'k' in the object 'a.b[1]' at byte 27");
  EXPECT_EQ(ordered_error_of(R"({"w": 1, "w": 2})"), "in.json: duplicate key 'w' at byte 11");
  EXPECT_CONTAINS(ordered_error_of(R"([{"k": 1}, {"k": 1, "j": {"k": 2, "k": 3}}])"),
                  "duplicate key 'k' in the object '[1].j'");
  // The same key in sibling objects is no repetition.
  EXPECT_EQ(error_of(R"([{"k": 1}, {"k": 2}, {"a": {"k": 3}, "k": 4}])"), "");
  EXPECT_EQ(ordered_error_of(R"([{"k": 1}, {"k": 2}, {"a": {"k": 3}, "k": 4}])"), "");
}

TEST(JsonStrict, RefusesNumbersBeyondADouble) {
  for (const std::string& number :
       std::vector<std::string>{"1e400", "-1e400", "1" + std::string(400, '0') + ".0"}) {
    const std::string message = error_of(R"({"model": )" + number + "}");
    EXPECT_CONTAINS(message, "in.json: invalid JSON at byte ");
    EXPECT_CONTAINS(message, "number overflow");
    EXPECT_CONTAINS(ordered_error_of("[" + number + "]"), "number overflow");
  }
  // Integers beyond 64 bits but within a double's range are read as doubles, as nlohmann does.
  EXPECT_EQ(parse_json_strict("[123456789012345678901234567890]", "in.json")[0].get<double>(),
            123456789012345678901234567890.0);
}

TEST(JsonStrict, LimitsNestingDepth) {
  const auto nested = [](int depth) {
    return std::string(size_t(depth), '[') + std::string(size_t(depth), ']');
  };
  EXPECT_EQ(error_of(nested(kMaxJsonDepth)), "");
  // The refused '[' is the 257th, at offset 256.
  EXPECT_EQ(error_of(nested(kMaxJsonDepth + 1)),
            "in.json: JSON nested deeper than 256 levels at byte 256");
  const std::string objects = [] {
    std::string text;
    for (int i = 0; i <= kMaxJsonDepth; ++i) text += "{\"a\":";
    return text + "1" + std::string(size_t(kMaxJsonDepth) + 1, '}');
  }();
  EXPECT_CONTAINS(error_of(objects), "JSON nested deeper than 256 levels");
  EXPECT_CONTAINS(ordered_error_of(objects), "JSON nested deeper than 256 levels");

  const auto start = std::chrono::steady_clock::now();
  EXPECT_CONTAINS(error_of(nested(100000)), "JSON nested deeper than 256 levels at byte 256");
  EXPECT_CONTAINS(ordered_error_of(std::string(10000000, '[')), "nested deeper");
  EXPECT_LT(std::chrono::steady_clock::now() - start, kLinearTimeLimit);
}

TEST(JsonStrict, LimitsStringLength) {
  const std::string longest(kMaxJsonStringBytes, 'x');
  EXPECT_EQ(error_of("[\"" + longest + "\"]"), "");
  const std::string message = error_of("[\"" + longest + "y\"]");
  EXPECT_EQ(message,
            "in.json: JSON string of 16777217 bytes, over the limit of 16777216 bytes at "
            "byte 16777219");
  EXPECT_CONTAINS(error_of("{\"" + longest + "y\": 1}"), "over the limit of 16777216 bytes");
}

TEST(JsonStrict, LimitsTheNumberOfValues) {
  // The array itself is one value, so kMaxJsonValues zeros are one value too many. The offset is
  // that of the ']' after the last zero: the lexer reads one byte past a number to find its end.
  std::string text = "[0";
  text.reserve(2 * kMaxJsonValues + 8);
  for (size_t i = 1; i < kMaxJsonValues; ++i) text += ",0";
  EXPECT_EQ(error_of(text + "]"),
            "in.json: JSON document of more than 8388608 values, the limit at byte 16777216");
}

TEST(JsonStrict, ErrorsArePrintableAndShort) {
  // nlohmann quotes the raw bytes it last read; the message escapes them.
  const std::string invalid_utf8 = error_of("{\"w\xff\": 1}");
  EXPECT_CONTAINS(invalid_utf8, "in.json: invalid JSON at byte 3, line 1, column 4: ");
  EXPECT_CONTAINS(invalid_utf8, "\\xff");
  EXPECT_EQ(printable(invalid_utf8), invalid_utf8);
  // Raw control bytes inside a string are invalid JSON too.
  const std::string control = error_of("{\"a\x1b\x07\": 1}");
  EXPECT_CONTAINS(control, "invalid JSON");
  EXPECT_EQ(printable(control), control);
  // A repeated key is quoted escaped and cut short.
  const std::string key = "\\u001b\\u0007" + std::string(1000, 'k') + "\\u00ff";
  const std::string repeated = error_of("{\"" + key + "\": 1, \"" + key + "\": 2}");
  EXPECT_CONTAINS(repeated, "in.json: duplicate key '\\x1b\\x07kkk");
  EXPECT_LT(repeated.size(), 300u);
  EXPECT_EQ(printable(repeated), repeated);
  // An unterminated string of megabytes is not echoed whole.
  for (const char filler : {'a', '\xff'}) {
    const std::string unterminated = error_of("[\"" + std::string(5 << 20, filler));
    EXPECT_CONTAINS(unterminated, "invalid JSON");
    EXPECT_LT(unterminated.size(), 800u) << unterminated.size();
    EXPECT_EQ(printable(unterminated), unterminated);
  }
}

// A header of 100,000 zero-size tensors (6 MB) took 153 s with the callback parse.
std::string many_tensors(size_t count) {
  std::string text = "{";
  for (size_t i = 0; i < count; ++i) {
    if (i > 0) text += ',';
    text += "\"tensor." + std::to_string(i) + "\":{\"dtype\":\"F32\",\"shape\":[0]," +
            "\"data_offsets\":[0,0]}";
  }
  return text + "}";
}

TEST(JsonStrict, TimeIsLinearInTheInput) {
  const std::string tensors = many_tensors(100000);
  std::string keys = "{";
  for (int i = 0; i < 100000; ++i) keys += (i ? ",\"k" : "\"k") + std::to_string(i) + "\":0";
  keys += "}";
  std::string numbers = "{\"parameters\":[0";  // a chat request's 6 MB `parameters` array
  for (int i = 0; i < 3000000; ++i) numbers += ",0";
  numbers += "]}";

  // CPU time, so that other processes on the machine do not count.
  const auto cpu_time = [] {
    return std::chrono::duration<double>(double(std::clock()) / CLOCKS_PER_SEC);
  };
  for (const std::string* text :
       std::initializer_list<const std::string*>{&tensors, &keys, &numbers}) {
    auto start = cpu_time();
    const json parsed = parse_json_strict(*text, "in.json");
    EXPECT_LT(cpu_time() - start, kLinearTimeLimit) << text->size() << " bytes";
    start = cpu_time();
    const ordered_json ordered = parse_ordered_json_strict(*text, "in.json");
    EXPECT_LT(cpu_time() - start, kLinearTimeLimit) << text->size() << " bytes, ordered";
    EXPECT_EQ(parsed.size(), ordered.size());
  }
  EXPECT_EQ(parse_ordered_json_strict(keys, "in.json").begin().key(), "k0");
}

}  // namespace
}  // namespace dsa

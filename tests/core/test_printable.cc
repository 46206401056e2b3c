// printable() and describe_json(): what error messages quote from files is escaped and bounded.
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "core/json_describe.h"
#include "core/printable.h"

namespace dsa {
namespace {

// True when `text` holds no byte below 0x20, no DEL and no C1 control, and is valid UTF-8 (in
// which case printable() leaves it as it is).
bool is_printable(const std::string& text) { return printable(text) == text; }

TEST(Printable, KeepsPrintableTextAsItIs) {
  EXPECT_EQ(printable("model.layers.0.weight"), "model.layers.0.weight");
  EXPECT_EQ(printable("<｜begin▁of▁sentence｜> é 😀 \\E( \\x41"),
            "<｜begin▁of▁sentence｜> é 😀 \\E( \\x41");
  EXPECT_EQ(printable(""), "");
}

TEST(Printable, EscapesControlBytes) {
  EXPECT_EQ(printable("a\x1b[31mb\x07"), "a\\x1b[31mb\\x07");
  EXPECT_EQ(printable("tab\there\nnew\rline"), "tab\\there\\nnew\\rline");
  EXPECT_EQ(printable(std::string("nul\0end", 7)), "nul\\x00end");
  EXPECT_EQ(printable("del\x7f"), "del\\x7f");
  EXPECT_EQ(printable("c1 \xc2\x85 \xc2\x9b \xc2\xa0"),
            "c1 \\u0085 \\u009b \xc2\xa0");  // NBSP kept
}

TEST(Printable, EscapesEveryByteOfInvalidUtf8) {
  EXPECT_EQ(printable("\xff"), "\\xff");
  EXPECT_EQ(printable("a\x80z"), "a\\x80z");                         // a stray continuation byte
  EXPECT_EQ(printable("\xc0\xaf"), "\\xc0\\xaf");                    // overlong '/'
  EXPECT_EQ(printable("\xe0\x80\xaf"), "\\xe0\\x80\\xaf");           // overlong, three bytes
  EXPECT_EQ(printable("\xed\xa0\x80"), "\\xed\\xa0\\x80");           // a UTF-16 surrogate
  EXPECT_EQ(printable("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // above U+10FFFF
  EXPECT_EQ(printable("\xe4\xb8"), "\\xe4\\xb8");                    // cut short at the end
  EXPECT_EQ(printable("\xe4\xb8x"), "\\xe4\\xb8x");
}

TEST(Printable, IsIdempotentAndAlwaysPrintable) {
  std::string all_bytes;
  for (int b = 0; b < 256; ++b) all_bytes += char(b);
  const std::string once = printable(all_bytes);
  EXPECT_TRUE(is_printable(once));
  EXPECT_EQ(printable(once), once);
}

TEST(PrintableExcerpt, CutsLongTextAtACharacterBoundary) {
  EXPECT_EQ(printable_excerpt("short", 10), "short");
  EXPECT_EQ(printable_excerpt("0123456789abc", 10), "0123456789...");
  // "é" is two bytes: the cut never splits it, so the excerpt stays valid UTF-8.
  EXPECT_EQ(printable_excerpt("éééééé", 5), "éé...");
  // An escape counts as the bytes it prints.
  EXPECT_EQ(printable_excerpt("\x1b\x1b\x1b", 9), "\\x1b\\x1b...");
  const std::string huge(10 << 20, '\xff');
  const std::string excerpt = printable_excerpt(huge);
  EXPECT_LE(excerpt.size(), kDefaultExcerptBytes + 3);
  EXPECT_TRUE(is_printable(excerpt));
}

TEST(DescribeJson, ShowsSmallValuesInFull) {
  const auto value = nlohmann::json::parse(R"({"a": [1, 2.5, null, true], "b": "x"})");
  EXPECT_EQ(describe_json(value), R"({"a": [1, 2.5, null, true], "b": "x"})");
  EXPECT_EQ(describe_json(nlohmann::json("ctl\x1b")), "\"ctl\\x1b\"");
  EXPECT_EQ(describe_json(nlohmann::ordered_json::parse(R"({"z": 1, "a": 2})")),
            R"({"z": 1, "a": 2})");
}

TEST(DescribeJson, BoundsLongAndDeepValuesInSizeAndTime) {
  nlohmann::json deep = nlohmann::json::array();
  for (int i = 0; i < 100000; ++i) {
    nlohmann::json outer = nlohmann::json::array();
    outer.push_back(std::move(deep));
    deep = std::move(outer);
  }
  nlohmann::json wide = nlohmann::json::array();
  for (int i = 0; i < 1000000; ++i) wide.push_back(i);
  const nlohmann::json long_string = std::string(1 << 20, 'x');
  const auto start = std::chrono::steady_clock::now();
  for (const nlohmann::json* value :
       std::initializer_list<const nlohmann::json*>{&deep, &wide, &long_string}) {
    const std::string text = describe_json(*value);
    EXPECT_LE(text.size(), 83u) << text;
    EXPECT_TRUE(text.ends_with("...")) << text;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(100));
  EXPECT_EQ(describe_json(wide, 10), "[0, 1, 2, ...");
}

}  // namespace
}  // namespace dsa

// The output parser on whole model outputs: megabytes of tool calls fed at once are parsed
// completely, in time linear in their size (it used to be quadratic: 2.9 MB took 10.9 s, from
// rescanning the rest of the text for every absent marker at every tag and from a linear search
// for duplicate parameter names), and with the same result however the text is cut.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "text/chat_encoding.h"
#include "text/output_parser.h"

namespace dsa::text {
namespace {

const std::string kEos = "<｜end▁of▁sentence｜>";

std::string param(const std::string& name, const std::string& is_string, const std::string& value) {
  return "<｜DSML｜parameter name=\"" + name + "\" string=\"" + is_string + "\">" + value +
         "</｜DSML｜parameter>\n";
}

// About `bytes` of completion: one tool block of short calls with repeated tool and parameter
// names filling half of it, then one call with distinct parameters filling the rest, then EOS.
struct BigCompletion {
  std::string text;
  size_t calls = 0;
  size_t wide_call_parameters = 0;
};

BigCompletion big_completion(size_t bytes) {
  BigCompletion out;
  out.text = "Calling the tools.\n\n<｜DSML｜function_calls>\n";
  while (out.text.size() < bytes / 2) {
    const std::string i = std::to_string(out.calls);
    out.text += "<｜DSML｜invoke name=\"tool_" + std::to_string(out.calls % 5) + "\">\n" +
                param("city", "true", "Paris <b>" + i + "</b>") + param("n", "false", i) +
                param("opts", "false", "{\"deep\": [1, 2, {\"x\": null}]}") + "</｜DSML｜invoke>\n";
    ++out.calls;
  }
  out.text += "<｜DSML｜invoke name=\"wide\">\n";
  while (out.text.size() < bytes) {
    const std::string p = std::to_string(out.wide_call_parameters++);
    out.text += param("p" + p, "false", p);
  }
  out.text += "</｜DSML｜invoke>\n</｜DSML｜function_calls>" + kEos;
  ++out.calls;
  return out;
}

double seconds_to_parse(const std::string& text) {
  const auto start = std::chrono::steady_clock::now();
  const ParsedCompletion parsed = parse_completion(text, ThinkingMode::kChat);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_TRUE(parsed.errors.empty());
  return seconds;
}

// The fastest of a few runs: the least disturbed by other work on the machine.
double best_seconds_to_parse(const std::string& text) {
  double best = 1e9;
  for (int run = 0; run < 5; ++run) best = std::min(best, seconds_to_parse(text));
  return best;
}

TEST(OutputParserScaling, MegabytesFedAtOnceAreParsedCompletely) {
  const BigCompletion big = big_completion(2900000);
  const auto start = std::chrono::steady_clock::now();
  const ParsedCompletion parsed = parse_completion(big.text, ThinkingMode::kChat);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_TRUE(parsed.errors.empty()) << parsed.errors.front();
  EXPECT_EQ(parsed.content, "Calling the tools.");
  ASSERT_EQ(parsed.tool_calls.size(), big.calls);
  for (const ParsedToolCall& call : parsed.tool_calls) EXPECT_TRUE(call.complete) << call.name;
  EXPECT_EQ(parsed.tool_calls[7].name, "tool_2");
  EXPECT_EQ(parsed.tool_calls[7].arguments,
            R"({"city": "Paris <b>7</b>", "n": 7, "opts": {"deep": [1, 2, {"x": null}]}})");
  // nlohmann::json, not the ordered Json: its key lookup is linear, so parsing 29,000 keys would
  // take most of a second.
  const nlohmann::json wide = nlohmann::json::parse(parsed.tool_calls.back().arguments);
  EXPECT_EQ(wide.size(), big.wide_call_parameters);
  EXPECT_EQ(wide["p12345"], 12345);
#if defined(NDEBUG) && !defined(__SANITIZE_ADDRESS__)
  EXPECT_LT(seconds, 1.0) << big.text.size() << " bytes";  // optimized builds only: the
                                                           // sanitizer build is ~10x slower
#else
  (void)seconds;
#endif
}

// Time for 4x the input below 8x the time (linear: 4x; quadratic: 16x). Holds in any build type.
TEST(OutputParserScaling, ParseTimeGrowsLinearly) {
  const std::string small = big_completion(512 << 10).text;
  const std::string large = big_completion(2048 << 10).text;
  const double small_seconds = best_seconds_to_parse(small);
  const double large_seconds = best_seconds_to_parse(large);
  EXPECT_LT(large_seconds, 8 * small_seconds)
      << small.size() << " bytes: " << small_seconds << " s, " << large.size()
      << " bytes: " << large_seconds << " s";
}

TEST(OutputParserScaling, AnyChunkingOfABigCompletionGivesTheSameResult) {
  const std::string text = big_completion(64 << 10).text;
  const ParsedCompletion whole = parse_completion(text, ThinkingMode::kChat);
  std::mt19937 rng(7);
  for (const size_t max_piece : {size_t(1), size_t(7), size_t(300), size_t(5000)}) {
    OutputParser parser(ThinkingMode::kChat);
    ParsedCompletion pieces;
    for (size_t at = 0; at < text.size();) {
      const size_t length = std::min(text.size() - at, 1 + rng() % max_piece);
      for (const ParserEvent& e : parser.feed(std::string_view(text).substr(at, length))) {
        apply_event(pieces, e);
      }
      at += length;
    }
    for (const ParserEvent& e : parser.finish()) apply_event(pieces, e);
    SCOPED_TRACE(max_piece);
    EXPECT_EQ(pieces.content, whole.content);
    EXPECT_EQ(pieces.errors, whole.errors);
    ASSERT_EQ(pieces.tool_calls.size(), whole.tool_calls.size());
    for (size_t i = 0; i < whole.tool_calls.size(); ++i) {
      EXPECT_EQ(pieces.tool_calls[i].name, whole.tool_calls[i].name);
      EXPECT_EQ(pieces.tool_calls[i].arguments, whole.tool_calls[i].arguments);
      EXPECT_EQ(pieces.tool_calls[i].complete, whole.tool_calls[i].complete);
    }
  }
}

TEST(OutputParserScaling, DuplicateFoundAmongManyParameters) {
  std::string text = "<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"f\">\n";
  for (int p = 0; p < 5000; ++p) text += param("p" + std::to_string(p), "false", "1");
  text += param("p4321", "true", "again") + "</｜DSML｜invoke>\n</｜DSML｜function_calls>";
  const ParsedCompletion parsed = parse_completion(text, ThinkingMode::kChat);
  ASSERT_EQ(parsed.errors.size(), 1u);
  EXPECT_NE(parsed.errors[0].find("duplicate parameter \"p4321\""), std::string::npos)
      << parsed.errors[0];
  ASSERT_EQ(parsed.tool_calls.size(), 1u);
  EXPECT_FALSE(parsed.tool_calls[0].complete);
}

}  // namespace
}  // namespace dsa::text

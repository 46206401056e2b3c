// The streaming reasoning / DSML tool-call parser. Expected results for well-formed completions
// are what DeepSeek's parse_message_from_completion_text returns for the same text.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "text/chat_encoding.h"
#include "text/output_parser.h"

namespace dsa::text {
namespace {

using Kind = ParserEvent::Kind;

const std::string kEos = "<｜end▁of▁sentence｜>";
const std::string kOpen = "\n\n<｜DSML｜function_calls>\n";
const std::string kClose = "</｜DSML｜function_calls>";

std::string invoke(const std::string& name, const std::string& parameters) {
  return "<｜DSML｜invoke name=\"" + name + "\">\n" + parameters + "</｜DSML｜invoke>\n";
}

std::string param(const std::string& name, const std::string& is_string, const std::string& value) {
  return "<｜DSML｜parameter name=\"" + name + "\" string=\"" + is_string + "\">" + value +
         "</｜DSML｜parameter>\n";
}

// The reference's own example shape: reasoning, content, two invokes (one without arguments).
const std::string kWeatherCompletion =
    "reason about it</think>Some text" + kOpen +
    invoke("get_weather",
           param("location", "true", "San Francisco") + param("date", "true", "2024-01-16")) +
    "<｜DSML｜invoke name=\"now\">\n\n</｜DSML｜invoke>\n" + kClose + kEos;

const std::string kTypedCompletion =
    kOpen +
    invoke("f", param("n", "false", "3") + param("flags", "false", "[1,2]") +
                    param("o", "false", "{\"a\": true}") +
                    param("s", "true",
                          "tab\t\"q\"\\ é\n\x01"
                          "end")) +
    kClose + kEos;

// Feeds `text` cut at the given offsets (ascending), then finishes.
ParsedCompletion parse_split(const std::string& text, ThinkingMode mode,
                             const std::vector<size_t>& cuts) {
  OutputParser parser(mode);
  ParsedCompletion out;
  size_t begin = 0;
  std::vector<size_t> ends = cuts;
  ends.push_back(text.size());
  for (const size_t end : ends) {
    for (const ParserEvent& e : parser.feed(std::string_view(text).substr(begin, end - begin))) {
      apply_event(out, e);
    }
    begin = end;
  }
  for (const ParserEvent& e : parser.finish()) apply_event(out, e);
  return out;
}

ParsedCompletion parse_bytewise(const std::string& text, ThinkingMode mode) {
  std::vector<size_t> cuts;
  for (size_t i = 1; i < text.size(); ++i) cuts.push_back(i);
  return parse_split(text, mode, cuts);
}

void expect_same(const ParsedCompletion& a, const ParsedCompletion& b, const std::string& how) {
  EXPECT_EQ(a.reasoning, b.reasoning) << how;
  EXPECT_EQ(a.content, b.content) << how;
  EXPECT_EQ(a.errors, b.errors) << how;
  ASSERT_EQ(a.tool_calls.size(), b.tool_calls.size()) << how;
  for (size_t i = 0; i < a.tool_calls.size(); ++i) {
    EXPECT_EQ(a.tool_calls[i].name, b.tool_calls[i].name) << how;
    EXPECT_EQ(a.tool_calls[i].arguments, b.tool_calls[i].arguments) << how;
    EXPECT_EQ(a.tool_calls[i].complete, b.tool_calls[i].complete) << how;
  }
}

TEST(OutputParser, WellFormedThinkingCompletionMatchesReference) {
  const ParsedCompletion r = parse_completion(kWeatherCompletion, ThinkingMode::kThinking);
  EXPECT_TRUE(r.errors.empty());
  EXPECT_EQ(r.reasoning, "reason about it");
  EXPECT_EQ(r.content, "Some text");
  ASSERT_EQ(r.tool_calls.size(), 2u);
  EXPECT_EQ(r.tool_calls[0].name, "get_weather");
  EXPECT_EQ(r.tool_calls[0].arguments, R"({"location": "San Francisco", "date": "2024-01-16"})");
  EXPECT_TRUE(r.tool_calls[0].complete);
  EXPECT_EQ(r.tool_calls[1].name, "now");
  EXPECT_EQ(r.tool_calls[1].arguments, "{}");
  EXPECT_TRUE(r.tool_calls[1].complete);
}

TEST(OutputParser, NonStringArgumentsAreVerbatimJson) {
  const ParsedCompletion r = parse_completion(kTypedCompletion, ThinkingMode::kChat);
  EXPECT_TRUE(r.errors.empty());
  EXPECT_EQ(r.content, "");
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_EQ(r.tool_calls[0].arguments,
            R"({"n": 3, "flags": [1,2], "o": {"a": true}, "s": "tab\t\"q\"\\ é\n\u0001end"})");
}

TEST(OutputParser, ExactEventSequence) {
  OutputParser parser(ThinkingMode::kThinking);
  std::vector<ParserEvent> events =
      parser.feed("r</think>c" + kOpen + invoke("f", param("a", "true", "v")) + kClose + kEos);
  const std::vector<ParserEvent> tail = parser.finish();
  EXPECT_TRUE(tail.empty());
  const std::vector<ParserEvent> expected = {
      {Kind::kReasoning, "r", -1},    {Kind::kContent, "c", -1},
      {Kind::kToolCallBegin, "f", 0}, {Kind::kToolCallArguments, R"({"a": "v"})", 0},
      {Kind::kToolCallEnd, "", 0},
  };
  EXPECT_EQ(events, expected);
}

TEST(OutputParser, ThinkingModeStartsInsideReasoning) {
  const ParsedCompletion thinking = parse_completion("a</think>b" + kEos, ThinkingMode::kThinking);
  EXPECT_EQ(thinking.reasoning, "a");
  EXPECT_EQ(thinking.content, "b");
  // In chat mode </think> has no meaning: it is content.
  const ParsedCompletion chat = parse_completion("a</think>b" + kEos, ThinkingMode::kChat);
  EXPECT_EQ(chat.reasoning, "");
  EXPECT_EQ(chat.content, "a</think>b");
  // Reasoning cut off by the length limit stays reasoning, without an error.
  const ParsedCompletion cut = parse_completion("still thinking", ThinkingMode::kThinking);
  EXPECT_EQ(cut.reasoning, "still thinking");
  EXPECT_TRUE(cut.errors.empty());
}

// Inputs of every kind for the split-invariance test: well formed, malformed and truncated.
std::vector<std::pair<std::string, ThinkingMode>> split_corpus() {
  return {
      {kWeatherCompletion, ThinkingMode::kThinking},
      {kTypedCompletion, ThinkingMode::kChat},
      {"plain answer with é and 😀" + kEos, ThinkingMode::kChat},
      {"x\n\n<｜DSML｜function_callsoops" + kOpen + invoke("g", "") + kClose, ThinkingMode::kChat},
      {"t" + kOpen + invoke("f", "<｜DSML｜parameter name=\"a\">v</｜DSML｜parameter>\n") + kClose,
       ThinkingMode::kChat},
      {"t" + kOpen + "<｜DSML｜invoke name=\"f\">\n" + param("a", "true", "partial <｜DSML｜par"),
       ThinkingMode::kChat},
      {"r</think>" + kOpen + invoke("f", param("j", "false", "not json") + param("j", "true", "x")),
       ThinkingMode::kThinking},
      {"c" + kOpen + invoke("f", param("a", "true", "v")) + kClose + "\nafter" + kEos + "junk",
       ThinkingMode::kChat},
      {"c\n<｜DSML｜function_calls>" + invoke("f", param("v", "false", "[1, \"é\"]")) + kClose,
       ThinkingMode::kChat},
      {"<｜DSML｜function_calls>\n" + invoke("f", param("s", "true", "a" + kEos + "b")),
       ThinkingMode::kChat},
  };
}

TEST(OutputParser, EverySplitGivesTheWholeTextResult) {
  for (const auto& [text, mode] : split_corpus()) {
    const ParsedCompletion whole = parse_completion(text, mode);
    expect_same(parse_bytewise(text, mode), whole, "1-byte pieces of: " + text);
    for (size_t cut = 1; cut < text.size(); ++cut) {
      expect_same(parse_split(text, mode, {cut}), whole,
                  "cut at " + std::to_string(cut) + " of: " + text);
    }
    std::mt19937 rng(1234);
    for (int trial = 0; trial < 20; ++trial) {
      std::vector<size_t> cuts;
      size_t at = 0;
      while (true) {
        at += 1 + rng() % 12;
        if (at >= text.size()) break;
        cuts.push_back(at);
      }
      expect_same(parse_split(text, mode, cuts), whole, "random pieces of: " + text);
    }
  }
}

TEST(OutputParser, HoldsBackOnlyPossibleMarkerPrefixes) {
  // Reasoning, content and a long string argument, fed byte by byte; while inside them (not
  // inside a tag) the parser holds at most a marker's length minus one.
  const std::vector<std::pair<std::string, bool>> parts = {
      {"thinking ~~~ </thin k " + std::string(200, 'r'), true},
      {"</think>", false},
      {std::string(300, 'c') + "\n\n<｜DSML｜funct <｜end▁of▁", true},
      {kOpen + "<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"s\" string=\"true\">",
       false},
      {std::string(500, 'v') + "</｜DSML｜parameter x é", true},
      {"</｜DSML｜parameter>\n</｜DSML｜invoke>\n" + kClose, false},
      {"after", true},
  };
  OutputParser parser(ThinkingMode::kThinking);
  ParsedCompletion result;
  for (const auto& [part, is_text] : parts) {
    for (const char c : part) {
      for (const ParserEvent& e : parser.feed(std::string_view(&c, 1))) apply_event(result, e);
      if (is_text) {
        ASSERT_LE(parser.held_bytes(), OutputParser::kMaxHoldback) << part;
      }
    }
  }
  for (const ParserEvent& e : parser.finish()) apply_event(result, e);
  EXPECT_TRUE(result.errors.empty());
  EXPECT_EQ(result.content.size(), 300 + std::string("\n\n<｜DSML｜funct <｜end▁of▁").size() + 5);
  ASSERT_EQ(result.tool_calls.size(), 1u);
  EXPECT_TRUE(result.tool_calls[0].complete);
}

TEST(OutputParser, HeldTextIsReleasedWhenItIsNoMarker) {
  OutputParser parser(ThinkingMode::kChat);
  std::vector<ParserEvent> events = parser.feed("abc\n\n<｜DS");
  EXPECT_EQ(events, (std::vector<ParserEvent>{{Kind::kContent, "abc", -1}}));
  EXPECT_EQ(parser.held_bytes(), std::string("\n\n<｜DS").size());
  events = parser.feed("X");
  EXPECT_EQ(events, (std::vector<ParserEvent>{{Kind::kContent, "\n\n<｜DSX", -1}}));
  EXPECT_EQ(parser.held_bytes(), 0u);
}

TEST(OutputParser, HoldsBackUnfinishedUtf8) {
  OutputParser parser(ThinkingMode::kChat);
  const std::string e_acute = "é";  // 2 bytes
  EXPECT_TRUE(parser.feed(e_acute.substr(0, 1)).empty());
  EXPECT_EQ(parser.feed(e_acute.substr(1)), (std::vector<ParserEvent>{{Kind::kContent, "é", -1}}));
  // At the end, an unfinished sequence is passed on as it is.
  EXPECT_TRUE(parser.feed("\xF0\x9F").empty());
  EXPECT_EQ(parser.finish(), (std::vector<ParserEvent>{{Kind::kContent, "\xF0\x9F", -1}}));
}

TEST(OutputParser, TruncatedMarkup) {
  // Only a marker prefix at the end: ordinary content.
  ParsedCompletion r = parse_completion("text\n\n<｜DSML｜func", ThinkingMode::kChat);
  EXPECT_EQ(r.content, "text\n\n<｜DSML｜func");
  EXPECT_TRUE(r.errors.empty());

  // A block that ends before any tool call: its text becomes content, with an error.
  const std::string unopened = "text\n\n<｜DSML｜function_calls>\n<｜DSML｜inv";
  r = parse_completion(unopened, ThinkingMode::kChat);
  EXPECT_EQ(r.content, unopened);
  EXPECT_TRUE(r.tool_calls.empty());
  // The offset is where the unfinished tag starts.
  EXPECT_EQ(r.errors, std::vector<std::string>{
                          "malformed tool-call markup at byte " +
                          std::to_string(unopened.size() - std::string("<｜DSML｜inv").size()) +
                          ": the text ended inside a tool-call block"});

  // A tool call cut inside a string value: it began and stays unfinished.
  r = parse_completion("text" + kOpen + "<｜DSML｜invoke name=\"f\">\n" +
                           "<｜DSML｜parameter name=\"a\" string=\"true\">partial",
                       ThinkingMode::kChat);
  EXPECT_EQ(r.content, "text");
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_EQ(r.tool_calls[0].name, "f");
  EXPECT_EQ(r.tool_calls[0].arguments, R"({"a": "partial)");
  EXPECT_FALSE(r.tool_calls[0].complete);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_NE(r.errors[0].find("the text ended inside a tool-call block (tool call 0 \"f\" left "
                             "unfinished)"),
            std::string::npos);
}

TEST(OutputParser, MalformedParameterTags) {
  // No string attribute.
  const std::string bad_param = "<｜DSML｜parameter name=\"a\">v</｜DSML｜parameter>\n";
  ParsedCompletion r =
      parse_completion("t" + kOpen + invoke("f", bad_param) + kClose, ThinkingMode::kChat);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_NE(r.errors[0].find("in <｜DSML｜parameter tag: expected string=\" but found \">\""),
            std::string::npos)
      << r.errors[0];
  EXPECT_NE(r.errors[0].find("(tool call 0 \"f\" left unfinished)"), std::string::npos);
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_FALSE(r.tool_calls[0].complete);
  EXPECT_EQ(r.tool_calls[0].arguments, "");
  // The unparsed markup is kept as content.
  EXPECT_EQ(r.content, "t\n" + bad_param + "</｜DSML｜invoke>\n" + kClose);

  r = parse_completion(kOpen + invoke("f", param("a", "maybe", "v")) + kClose, ThinkingMode::kChat);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_NE(r.errors[0].find("string=\"maybe\" is neither \"true\" nor \"false\""),
            std::string::npos);

  r = parse_completion(kOpen + invoke("f", param("a", "true", "1") + param("a", "true", "2")),
                       ThinkingMode::kChat);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_NE(r.errors[0].find("duplicate parameter \"a\""), std::string::npos);
  EXPECT_EQ(r.tool_calls[0].arguments, R"({"a": "1")");

  // An over-long tag cannot hold the stream forever.
  for (const std::string end : {"", "\">\n</｜DSML｜invoke>", "<"}) {
    r = parse_completion(kOpen + "<｜DSML｜invoke name=\"" + std::string(2000, 'n') + end,
                         ThinkingMode::kChat);
    ASSERT_EQ(r.errors.size(), 1u);
    EXPECT_NE(r.errors[0].find("tag longer than 1024 bytes"), std::string::npos) << r.errors[0];
    EXPECT_EQ(r.errors,
              parse_bytewise(kOpen + "<｜DSML｜invoke name=\"" + std::string(2000, 'n') + end,
                             ThinkingMode::kChat)
                  .errors);
  }
}

TEST(OutputParser, ErrorNamesTheByteOffset) {
  const std::string text = "ab" + kOpen + "<｜DSML｜foo>";
  const ParsedCompletion r = parse_completion(text, ThinkingMode::kChat);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0], "malformed tool-call markup at byte " + std::to_string(2 + kOpen.size()) +
                             ": expected <｜DSML｜invoke or </｜DSML｜function_calls> but found "
                             "\"<｜DSML｜f\"");
  EXPECT_EQ(r.content, text);
}

TEST(OutputParser, UnknownAndNestedTags) {
  // Unknown tags in content are text.
  ParsedCompletion r =
      parse_completion("<b>bold</b> <tool_call>x</tool_call>", ThinkingMode::kChat);
  EXPECT_EQ(r.content, "<b>bold</b> <tool_call>x</tool_call>");
  EXPECT_TRUE(r.errors.empty());
  // Markup inside a string value is part of the value.
  r = parse_completion(
      kOpen + invoke("f", param("code", "true", "<｜DSML｜invoke name=\"x\">\n<think>")) + kClose,
      ThinkingMode::kChat);
  EXPECT_TRUE(r.errors.empty());
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_EQ(r.tool_calls[0].arguments, R"({"code": "<｜DSML｜invoke name=\"x\">\n<think>"})");
  // An invoke inside an invoke is malformed.
  r = parse_completion(kOpen + invoke("f", invoke("g", "")) + kClose, ThinkingMode::kChat);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_NE(r.errors[0].find("expected <｜DSML｜parameter or </｜DSML｜invoke>"),
            std::string::npos);
}

TEST(OutputParser, NonStringValueThatIsNotJsonBecomesAString) {
  const ParsedCompletion r = parse_completion(
      kOpen + invoke("f", param("q", "false", "hello world") + param("n", "false", " 7 ")) + kClose,
      ThinkingMode::kChat);
  EXPECT_TRUE(r.errors.empty());
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_EQ(r.tool_calls[0].arguments, R"({"q": "hello world", "n":  7 })");
  EXPECT_TRUE(Json::accept(r.tool_calls[0].arguments));
  // nlohmann would stop reading at the NUL and accept "3"; the value is not JSON.
  const ParsedCompletion nul =
      parse_completion(kOpen + invoke("f", param("n", "false", std::string("3\0x", 3))) + kClose,
                       ThinkingMode::kChat);
  ASSERT_EQ(nul.tool_calls.size(), 1u);
  EXPECT_EQ(nul.tool_calls[0].arguments, R"({"n": "3\u0000x"})");
}

TEST(OutputParser, RecoversAfterAMalformedBlock) {
  const ParsedCompletion r = parse_completion(
      "x\n\n<｜DSML｜function_callsoops" + kOpen + invoke("g", "") + kClose, ThinkingMode::kChat);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_NE(r.errors[0].find("expected \">\" after <｜DSML｜function_calls"), std::string::npos);
  EXPECT_EQ(r.content, "x\n\n<｜DSML｜function_callsoops");
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_EQ(r.tool_calls[0].name, "g");
  EXPECT_EQ(r.tool_calls[0].arguments, "{}");
  EXPECT_TRUE(r.tool_calls[0].complete);
}

TEST(OutputParser, EndOfSentence) {
  // Text after <｜end▁of▁sentence｜> is reported once and dropped.
  ParsedCompletion r = parse_completion("done" + kEos + "junk", ThinkingMode::kChat);
  EXPECT_EQ(r.content, "done");
  EXPECT_EQ(r.errors, std::vector<std::string>{"text after " + kEos + " at byte " +
                                               std::to_string(4 + kEos.size()) + " was ignored"});
  // An end of sentence inside a parameter value leaves the call unfinished.
  r = parse_completion(kOpen + "<｜DSML｜invoke name=\"f\">\n" +
                           "<｜DSML｜parameter name=\"n\" string=\"false\">12" + kEos,
                       ThinkingMode::kChat);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_NE(r.errors[0].find(kEos + " inside parameter \"n\""), std::string::npos);
  EXPECT_EQ(r.content, "12");
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_FALSE(r.tool_calls[0].complete);
}

TEST(OutputParser, ParsesWhatTheEncoderRenders) {
  // An assistant turn rendered by the encoder parses back to arguments equal to Python's
  // json.dumps of the original arguments, for values of every JSON kind.
  const auto request = parse_chat_request(
      R"([{"role": "user", "content": "q"},
          {"role": "assistant", "reasoning_content": "why", "content": "Calling.",
           "tool_calls": [{"function": {"name": "f", "arguments":
             {"s": "x \"y\"\n\t\\ é", "n": -3, "f": 1e-07, "b": false, "z": null,
              "l": [1, "two", {"k": []}], "o": {"nested": {"deep": 0.5}}, "e": ""}}},
                          {"function": {"name": "g", "arguments": "{}"}}]}])",
      "inline");
  const std::string prompt = encode_messages(
      request.messages, ChatEncodeOptions{.mode = ThinkingMode::kThinking, .first_message = 1});
  const ParsedCompletion r = parse_completion(prompt, ThinkingMode::kThinking);
  EXPECT_TRUE(r.errors.empty());
  EXPECT_EQ(r.reasoning, "why");
  EXPECT_EQ(r.content, "Calling.");
  ASSERT_EQ(r.tool_calls.size(), 2u);
  EXPECT_EQ(r.tool_calls[0].arguments,
            python_json_dumps(request.messages[1].tool_calls[0].arguments));
  EXPECT_EQ(r.tool_calls[1].arguments, "{}");
}

}  // namespace
}  // namespace dsa::text

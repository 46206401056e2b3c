// Python json.dumps(ensure_ascii=False) reproduction and the chat request parser. Expected texts
// were printed by CPython 3.11's json module and repr() for the same inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/error.h"
#include "text/chat_json.h"
#include "text/chat_messages.h"

namespace dsa::text {
namespace {

TEST(PythonFloatRepr, MatchesCPythonRepr) {
  const std::pair<double, const char*> cases[] = {
      {0.0, "0.0"},
      {-0.0, "-0.0"},
      {1.0, "1.0"},
      {1.5, "1.5"},
      {0.1, "0.1"},
      {1e16, "1e+16"},  // 17 digits before the point: exponent form
      {1e15, "1000000000000000.0"},
      {1.2345678901234568e+17, "1.2345678901234568e+17"},
      {0.0001, "0.0001"},  // decimal exponent -4: still fixed
      {1e-05, "1e-05"},    // -5: exponent form, two exponent digits
      {1.5e-07, "1.5e-07"},
      {5e-324, "5e-324"},
      {1.7976931348623157e+308, "1.7976931348623157e+308"},
      {2.5e-05, "2.5e-05"},
      {100.0, "100.0"},
      {1e+22, "1e+22"},
      {0.30000000000000004, "0.30000000000000004"},
      {3.14159, "3.14159"},
      {-2.5e+20, "-2.5e+20"},
      {12345.678, "12345.678"},
      {9007199254740992.0, "9007199254740992.0"},
      {999999999999999.9, "999999999999999.9"},
      {9999999999999998.0, "9999999999999998.0"},
      {0.001234, "0.001234"},
      {2.2250738585072014e-308, "2.2250738585072014e-308"},
      {1.0 / 3.0, "0.3333333333333333"},
      {2.0 / 3.0, "0.6666666666666666"},
      {1e+100, "1e+100"},
      {1.23e-18, "1.23e-18"},
  };
  for (const auto& [value, expected] : cases) {
    EXPECT_EQ(python_float_repr(value), expected) << "value " << value;
  }
  EXPECT_EQ(python_float_repr(std::numeric_limits<double>::infinity()), "Infinity");
  EXPECT_EQ(python_float_repr(-std::numeric_limits<double>::infinity()), "-Infinity");
  EXPECT_EQ(python_float_repr(std::nan("")), "NaN");
}

TEST(PythonJsonDumps, SeparatorsEscapesKeyOrderAndNumbers) {
  const Json value = Json::parse(
      R"({"b": "\u0000\u001f\u007f\b\f\n\r\t\"\\\/é😀\u2028", "a": [1, -2, 3.0, null, true, false, {}, [], 1E5, 2.50, -0], "": 18446744073709551615, "neg": -9223372036854775808, "dup": 1, "k": {"z": 0.1, "a": "x"}, "dup": 2})");
  // Control characters as \uXXXX in lower case except the named ones; DEL, non-ASCII and
  // U+2028 raw; '/' unescaped; a duplicate key keeps its first position and its last value.
  const std::string expected =
      "{\"b\": \"\\u0000\\u001f\x7f\\b\\f\\n\\r\\t\\\"\\\\/é😀\u2028\", "
      "\"a\": [1, -2, 3.0, null, true, false, {}, [], 100000.0, 2.5, 0], "
      "\"\": 18446744073709551615, \"neg\": -9223372036854775808, \"dup\": 2, "
      "\"k\": {\"z\": 0.1, \"a\": \"x\"}}";
  EXPECT_EQ(python_json_dumps(value), expected);
}

TEST(PythonJsonDumps, EscapingPiecesEqualsEscapingWhole) {
  const std::string text = "a\"b\\c\nd\x01 é";
  std::string whole;
  append_python_json_escaped(whole, text);
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    std::string pieces;
    append_python_json_escaped(pieces, std::string_view(text).substr(0, cut));
    append_python_json_escaped(pieces, std::string_view(text).substr(cut));
    EXPECT_EQ(pieces, whole) << "cut at " << cut;
  }
}

// Runs parse_chat_request and returns the dsa::Error message ("" when it did not throw).
std::string parse_error(const std::string& json) {
  try {
    parse_chat_request(json, "req.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ParseChatRequest, ReadsOpenAiFields) {
  const ChatRequest request = parse_chat_request(
      R"({"model": "x", "messages": [
          {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
          {"role": "assistant", "content": null, "reasoning_content": "r",
           "tool_calls": [{"id": "c1", "type": "function",
                           "function": {"name": "f", "arguments": "{\"z\": 1, \"a\": [2]}"}}]},
          {"role": "tool", "tool_call_id": "c1", "content": "out"}],
          "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
          "response_format": {"type": "json_object"},
          "chat_template_kwargs": {"thinking": true}})",
      "req.json");
  ASSERT_EQ(request.messages.size(), 4u);  // an empty system message was put in front
  const ChatMessage& system = request.messages[0];
  EXPECT_EQ(system.role, ChatRole::kSystem);
  EXPECT_EQ(system.content, "");
  ASSERT_EQ(system.tools.size(), 1u);
  EXPECT_EQ(python_json_dumps(system.tools[0]), R"({"name": "f", "parameters": {}})");
  EXPECT_EQ(python_json_dumps(system.response_format), R"({"type": "json_object"})");
  EXPECT_EQ(request.messages[1].content, "a\nb");
  const ChatMessage& assistant = request.messages[2];
  EXPECT_FALSE(assistant.content.has_value());
  EXPECT_EQ(assistant.reasoning_content, "r");
  ASSERT_EQ(assistant.tool_calls.size(), 1u);
  EXPECT_EQ(assistant.tool_calls[0].id, "c1");
  EXPECT_EQ(assistant.tool_calls[0].name, "f");
  EXPECT_EQ(python_json_dumps(assistant.tool_calls[0].arguments), R"({"z": 1, "a": [2]})");
  EXPECT_EQ(request.messages[3].role, ChatRole::kTool);
  EXPECT_EQ(request.thinking, true);
}

TEST(ParseChatRequest, BareArrayAndPlainTextResponseFormat) {
  const ChatRequest bare = parse_chat_request(R"([{"role": "user", "content": "hi"}])", "a.json");
  ASSERT_EQ(bare.messages.size(), 1u);
  EXPECT_FALSE(bare.thinking.has_value());
  // {"type": "text"} is OpenAI's default and adds nothing (no system message either).
  const ChatRequest text_format = parse_chat_request(
      R"({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "text"}})",
      "b.json");
  EXPECT_EQ(text_format.messages.size(), 1u);
}

TEST(ParseChatRequest, RejectsBadInputNamingTheField) {
  EXPECT_NE(parse_error("{"), "");
  EXPECT_NE(parse_error("{").find("req.json: invalid JSON"), std::string::npos);
  EXPECT_NE(parse_error(R"({"model": "x"})").find("request without \"messages\""),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"messages": {}})").find("messages: expected an array of messages"),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"messages": [{"content": "x"}]})")
                .find("messages[0]: message without \"role\""),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"messages": [{"role": "robot", "content": "x"}]})")
                .find("messages[0].role: unknown role \"robot\""),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"messages": [{"role": "user", "content": 5}]})")
                .find("messages[0].content: expected a string or an array of parts, got number"),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})")
                .find("messages[0].content[0]: only {\"type\": \"text\"} content parts"),
            std::string::npos);
  EXPECT_NE(
      parse_error(
          R"({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{bad"}}]}]})")
          .find("messages[0].tool_calls[0].function.arguments: invalid JSON"),
      std::string::npos);
  EXPECT_NE(
      parse_error(
          R"({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]}]})")
          .find("messages[0].tool_calls[0].function.arguments: arguments must be a JSON object, "
                "got array"),
      std::string::npos);
  EXPECT_NE(
      parse_error(
          R"({"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}]})")
          .find("messages[0].tool_calls[0].function: function without \"name\""),
      std::string::npos);
  EXPECT_NE(parse_error(R"({"messages": [], "tools": [{"type": "function"}]})")
                .find("tools[0]: expected {\"type\": \"function\", \"function\": {...}}"),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"messages": [], "chat_template_kwargs": {"thinking": "yes"}})")
                .find("chat_template_kwargs.thinking: expected true or false"),
            std::string::npos);
  EXPECT_NE(
      parse_error(
          R"({"tools": [{"function": {}}], "messages": [{"role": "system", "content": "", "tools": [{"function": {}}]}]})")
          .find("tools: tools given both in the request and on messages[0]"),
      std::string::npos);
  EXPECT_NE(parse_error(std::string(R"([{"role": "user", "content": "x"}])") + '\0' + "junk")
                .find("req.json: invalid JSON: NUL byte at offset 34"),
            std::string::npos);
  // Numbers beyond double range, which Python would read as inf.
  EXPECT_NE(parse_error(R"({"messages": [], "x": 1e400})").find("invalid JSON"), std::string::npos);
}

TEST(ParseChatRequest, RejectsDeepNesting) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  const std::string message = parse_error(R"({"messages": [], "x": )" + deep + "}");
  EXPECT_NE(message.find("req.json: JSON nested deeper than 256 levels"), std::string::npos)
      << message;
}

}  // namespace
}  // namespace dsa::text

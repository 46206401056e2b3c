// The request reader of /v1/chat/completions and /v1/completions: what each field becomes, and
// that every bad field is a 400 naming it, with a message that is valid UTF-8 whatever the body
// held.
#include <gtest/gtest.h>

#include <string>

#include "server/api_error.h"
#include "server/completion_request.h"
#include "server/json_out.h"
#include "text/utf8.h"

namespace dsa::server {
namespace {

constexpr const char* kUser = R"("messages": [{"role": "user", "content": "hi"}])";

std::string chat_body(const std::string& fields) {
  return fields.empty() ? std::string("{") + kUser + "}"
                        : std::string("{") + kUser + ", " + fields + "}";
}

// The ApiError a body gets; fails the test when it is accepted.
ApiError chat_error(const std::string& body) {
  try {
    parse_chat_completion_request(body);
  } catch (const ApiError& e) {
    return e;
  }
  ADD_FAILURE() << "accepted: " << body;
  return ApiError(0, "");
}

TEST(CompletionRequest, DefaultsAreDsaRunsSamplingAndNoThinking) {
  const CompletionRequest r = parse_chat_completion_request(chat_body(""));
  const SamplerParams defaults;
  EXPECT_TRUE(r.chat);
  EXPECT_EQ(r.sampling.temperature, defaults.temperature);
  EXPECT_EQ(r.sampling.top_k, defaults.top_k);
  EXPECT_FALSE(r.seed.has_value());
  EXPECT_EQ(r.max_tokens, -1);
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.thinking);
  EXPECT_EQ(r.tool_choice, ToolChoice::kAuto);
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0].content, "hi");
}

TEST(CompletionRequest, ReadsSamplingStopAndLimits) {
  const CompletionRequest r = parse_chat_completion_request(chat_body(
      R"("model": "m", "temperature": 0, "top_p": 0.5, "top_k": -1, "min_p": 0.1,
         "seed": -3, "max_tokens": 7, "stop": ["a", "bc"], "stream": true,
         "stream_options": {"include_usage": true}, "n": 1, "logprobs": false,
         "presence_penalty": 0, "logit_bias": {}, "user": "ignored")"));
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(r.sampling.temperature, 0.0f);
  EXPECT_FLOAT_EQ(r.sampling.top_p, 0.5f);
  EXPECT_EQ(r.sampling.top_k, 0);  // -1 (vLLM's "off") is 0 (ours)
  EXPECT_FLOAT_EQ(r.sampling.min_p, 0.1f);
  EXPECT_EQ(r.seed, uint64_t(-3));
  EXPECT_EQ(r.max_tokens, 7);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"a", "bc"}));
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
}

TEST(CompletionRequest, MaxCompletionTokensWinsOverMaxTokens) {
  const CompletionRequest r =
      parse_chat_completion_request(chat_body(R"("max_tokens": 9, "max_completion_tokens": 4)"));
  EXPECT_EQ(r.max_tokens, 4);
  EXPECT_EQ(parse_chat_completion_request(chat_body(R"("stop": "x")")).stop,
            std::vector<std::string>{"x"});
}

TEST(CompletionRequest, ThinkingFromKwargsDeepSeekFieldOrReasoningEffort) {
  EXPECT_TRUE(
      parse_chat_completion_request(chat_body(R"("chat_template_kwargs": {"thinking": true})"))
          .thinking);
  EXPECT_FALSE(
      parse_chat_completion_request(chat_body(R"("chat_template_kwargs": {"thinking": false},
                                "reasoning_effort": "high")"))
          .thinking);
  EXPECT_TRUE(
      parse_chat_completion_request(chat_body(R"("thinking": {"type": "enabled"})")).thinking);
  EXPECT_TRUE(parse_chat_completion_request(chat_body(R"("reasoning_effort": "low")")).thinking);
  EXPECT_FALSE(parse_chat_completion_request(chat_body(R"("reasoning_effort": "none")")).thinking);
}

TEST(CompletionRequest, ReasoningOfEarlierTurnsIsReadUnderEitherName) {
  const CompletionRequest r = parse_chat_completion_request(R"({"messages": [
      {"role": "user", "content": "a"},
      {"role": "assistant", "content": "b", "reasoning": "because"},
      {"role": "user", "content": "c"}]})");
  ASSERT_EQ(r.messages.size(), 3u);
  EXPECT_EQ(r.messages[1].reasoning_content, "because");
}

TEST(CompletionRequest, ToolsAndToolChoice) {
  const std::string tools = R"("tools": [
      {"type": "function", "function": {"name": "get_weather", "description": "d",
       "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                      "required": ["city"]}}},
      {"type": "function", "function": {"name": "now"}}])";
  CompletionRequest r = parse_chat_completion_request(chat_body(tools));
  EXPECT_EQ(r.tool_names, (std::vector<std::string>{"get_weather", "now"}));
  ASSERT_EQ(r.messages.size(), 2u);  // the tools went onto a new system message
  EXPECT_EQ(r.messages[0].role, text::ChatRole::kSystem);
  EXPECT_EQ(r.messages[0].tools.size(), 2u);

  r = parse_chat_completion_request(chat_body(tools + R"(, "tool_choice": "required",
                                                        "parallel_tool_calls": false)"));
  EXPECT_EQ(r.tool_choice, ToolChoice::kRequired);
  EXPECT_FALSE(r.parallel_tool_calls);
  r = parse_chat_completion_request(
      chat_body(tools + R"(, "tool_choice": {"type": "function", "function": {"name": "now"}})"));
  EXPECT_EQ(r.tool_choice, ToolChoice::kNamed);
  EXPECT_EQ(r.tool_choice_name, "now");
  EXPECT_EQ(
      parse_chat_completion_request(chat_body(tools + R"(, "tool_choice": "none")")).tool_choice,
      ToolChoice::kNone);
}

TEST(CompletionRequest, ResponseFormat) {
  EXPECT_EQ(parse_chat_completion_request(chat_body(R"("response_format": {"type": "text"})"))
                .response_format,
            ResponseFormat::kText);
  const CompletionRequest r =
      parse_chat_completion_request(chat_body(R"("response_format": {"type": "json_object"})"));
  EXPECT_EQ(r.response_format, ResponseFormat::kJsonObject);
  ASSERT_FALSE(r.messages.empty());
  EXPECT_FALSE(r.messages[0].response_format.is_null());  // rendered by the encoding
  EXPECT_EQ(parse_chat_completion_request(chat_body(R"("response_format": {"type": "json_schema",
                              "json_schema": {"name": "x", "schema": {"type": "object"}}})"))
                .response_format,
            ResponseFormat::kJsonSchema);
}

struct BadField {
  const char* fields;  // added to a valid chat body
  const char* param;   // the field the error must name
};

class BadChatField : public ::testing::TestWithParam<BadField> {};

TEST_P(BadChatField, Is400NamingTheField) {
  const ApiError e = chat_error(chat_body(GetParam().fields));
  EXPECT_EQ(e.status(), 400);
  EXPECT_EQ(e.param(), GetParam().param);
  EXPECT_NE(std::string(e.what()).find(GetParam().param), std::string::npos) << e.what();
}

INSTANTIATE_TEST_SUITE_P(
    Fields, BadChatField,
    ::testing::Values(
        BadField{R"("temperature": "hot")", "temperature"},
        BadField{R"("temperature": 2.5)", "temperature"},
        BadField{R"("temperature": -1)", "temperature"}, BadField{R"("top_p": 0)", "top_p"},
        BadField{R"("top_p": 1.5)", "top_p"}, BadField{R"("top_k": 1.5)", "top_k"},
        BadField{R"("top_k": -2)", "top_k"}, BadField{R"("min_p": 2)", "min_p"},
        BadField{R"("max_tokens": 0)", "max_tokens"},
        BadField{R"("max_tokens": "10")", "max_tokens"},
        BadField{R"("max_tokens": 18446744073709551615)", "max_tokens"},
        BadField{R"("max_completion_tokens": -5)", "max_completion_tokens"},
        BadField{R"("seed": 1.5)", "seed"}, BadField{R"("seed": "1")", "seed"},
        BadField{R"("stop": 3)", "stop"}, BadField{R"("stop": [""])", "stop[0]"},
        BadField{R"("stop": ["a", 1])", "stop[1]"},
        BadField{R"("stop": ["1","2","3","4","5","6","7","8","9","10","11","12","13","14","15",
                             "16","17"])",
                 "stop"},
        BadField{R"("n": 2)", "n"}, BadField{R"("n": "1")", "n"},
        BadField{R"("logprobs": true)", "logprobs"},
        BadField{R"("top_logprobs": 3)", "top_logprobs"},
        BadField{R"("presence_penalty": 0.5)", "presence_penalty"},
        BadField{R"("frequency_penalty": 9)", "frequency_penalty"},
        BadField{R"("logit_bias": {"5": 1})", "logit_bias"},
        BadField{R"("functions": [])", "functions"}, BadField{R"("stream": "yes")", "stream"},
        BadField{R"("stream_options": {"include_usage": true})", "stream_options"},
        BadField{R"("stream": true, "stream_options": {"include_usage": 1})",
                 "stream_options.include_usage"},
        BadField{R"("tools": {})", "tools"}, BadField{R"("tools": [1])", "tools[0]"},
        BadField{R"("tools": [{"type": "function"}])", "tools[0].function"},
        BadField{R"("tools": [{"type": "retrieval", "function": {"name": "f"}}])", "tools[0].type"},
        BadField{R"("tools": [{"type": "function", "function": {"name": "a\"b"}}])",
                 "tools[0].function.name"},
        BadField{R"("tools": [{"type": "function", "function": {"name": ""}}])",
                 "tools[0].function.name"},
        BadField{R"("tools": [{"type": "function", "function": {"name": "f"}},
                              {"type": "function", "function": {"name": "f"}}])",
                 "tools[1].function.name"},
        BadField{R"("tools": [{"type": "function", "function": {"name": "f", "parameters": 3}}])",
                 "tools[0].function.parameters"},
        BadField{R"("tools": [{"type": "function", "function": {"name": "f",
                               "parameters": {"type": "object", "properties": []}}}])",
                 "tools[0].function.parameters.properties"},
        BadField{R"("tools": [{"type": "function", "function": {"name": "f",
                               "parameters": {"type": "object", "required": [1]}}}])",
                 "tools[0].function.parameters.required[0]"},
        BadField{R"("tool_choice": "always")", "tool_choice"},
        BadField{R"("tool_choice": "required")", "tool_choice"},  // no tools
        BadField{R"("tools": [{"type": "function", "function": {"name": "f"}}],
                    "tool_choice": {"type": "function", "function": {"name": "g"}})",
                 "tool_choice"},
        BadField{R"("parallel_tool_calls": 1)", "parallel_tool_calls"},
        BadField{R"("response_format": {"type": "xml"})", "response_format.type"},
        BadField{R"("response_format": {"type": "json_schema"})", "response_format.json_schema"},
        BadField{R"("chat_template_kwargs": {"thinking": "yes"})", "chat_template_kwargs.thinking"},
        BadField{R"("reasoning_effort": "max")", "reasoning_effort"},
        BadField{R"("model": 5)", "model"}));

TEST(CompletionRequest, BadMessagesAreNamedByTheirPath) {
  for (const char* body : {
           R"({})",
           R"({"messages": {}})",
           R"({"messages": []})",
           R"({"messages": [{"role": "robot", "content": "x"}]})",
           R"({"messages": [{"content": "x"}]})",
           R"({"messages": [{"role": "user", "content": 5}]})",
           R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
           R"({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f",
               "arguments": "{not json"}}]}]})",
       }) {
    const ApiError e = chat_error(body);
    EXPECT_EQ(e.status(), 400) << body;
    EXPECT_NE(std::string(e.what()).find("messages"), std::string::npos) << e.what();
  }
}

TEST(CompletionRequest, HostileBodiesGetValidUtf8Messages) {
  const std::string bodies[] = {
      "",
      "{",
      "[]",
      "null",
      "{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}",
      "{\"messages\": [{\"role\": \"\x1b[31m\xc0\", \"content\": \"x\"}]}",
      std::string("{\"messages\": [{\"role\": \"user\", \"content\": \"a") + '\0' + "b\"}]}",
      std::string(300, '[') + std::string(300, ']'),
      "{\"messages\": [], \"messages\": []}",
      "{\"temperature\": 1e400}",
      "{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"\xe2\x80\xae\"}}], " +
          std::string(kUser) + "}",
  };
  for (const std::string& body : bodies) {
    const ApiError e = chat_error(body);
    EXPECT_EQ(e.status(), 400) << body;
    const std::string json = error_body(e);
    EXPECT_TRUE(text::is_valid_utf8(json)) << json;
    EXPECT_TRUE(Json::accept(json)) << json;
    EXPECT_EQ(json.find('\x1b'), std::string::npos) << json;
  }
}

TEST(CompletionRequest, CompletionsPrompt) {
  const CompletionRequest r =
      parse_completion_request(R"({"prompt": "Once", "max_tokens": 3, "logprobs": 0})");
  EXPECT_FALSE(r.chat);
  EXPECT_EQ(r.prompt, "Once");
  EXPECT_EQ(r.max_tokens, 3);
  EXPECT_EQ(parse_completion_request(R"({"prompt": ["One"]})").prompt, "One");
  for (const char* body :
       {R"({})", R"({"prompt": ""})", R"({"prompt": [1, 2]})", R"({"prompt": "x", "echo": true})",
        R"({"prompt": "x", "best_of": 2})", R"({"prompt": "x", "logprobs": 2})",
        R"({"prompt": "x", "suffix": "y"})"}) {
    EXPECT_THROW(parse_completion_request(body), ApiError) << body;
  }
}

}  // namespace
}  // namespace dsa::server

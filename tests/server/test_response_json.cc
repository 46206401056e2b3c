// The JSON of replies and stream chunks, field by field as OpenAI's clients read them, the SSE
// framing, and error bodies that stay valid JSON whatever bytes their message quotes.
#include <gtest/gtest.h>

#include <string>

#include "server/api_error.h"
#include "server/response_json.h"
#include "text/utf8.h"

namespace dsa::server {
namespace {

const ReplyMeta kChat{true, "chatcmpl-x", "dsa-small", 1700000000};
const ReplyMeta kText{false, "cmpl-x", "dsa-small", 1700000000};

Delta text_delta(Delta::Kind kind, std::string text) {
  Delta d;
  d.kind = kind;
  d.text = std::move(text);
  return d;
}

const Json& only_choice(const Json& chunk) {
  EXPECT_EQ(chunk["choices"].size(), 1u);
  return chunk["choices"][0];
}

TEST(ResponseJson, ChunkHeadIsTheSameInEveryChunk) {
  for (const Json& chunk :
       {role_chunk(kChat), delta_chunk(kChat, text_delta(Delta::Kind::kContent, "a")),
        finish_chunk(kChat, "stop", {}), usage_chunk(kChat, {1, 2})}) {
    EXPECT_EQ(chunk["id"], "chatcmpl-x");
    EXPECT_EQ(chunk["object"], "chat.completion.chunk");
    EXPECT_EQ(chunk["created"], 1700000000);
    EXPECT_EQ(chunk["model"], "dsa-small");
  }
}

TEST(ResponseJson, RoleOnlyInTheFirstChunk) {
  const Json role = only_choice(role_chunk(kChat));
  EXPECT_EQ(role["delta"], (Json{{"role", "assistant"}}));
  EXPECT_TRUE(role["finish_reason"].is_null());
  const Json content = only_choice(delta_chunk(kChat, text_delta(Delta::Kind::kContent, "hi")));
  EXPECT_EQ(content["delta"], (Json{{"content", "hi"}}));
  EXPECT_FALSE(content["delta"].contains("role"));
}

TEST(ResponseJson, ReasoningUnderBothNames) {
  const Json d = only_choice(delta_chunk(kChat, text_delta(Delta::Kind::kReasoning, "hmm")));
  EXPECT_EQ(d["delta"]["reasoning_content"], "hmm");
  EXPECT_EQ(d["delta"]["reasoning"], "hmm");
  EXPECT_FALSE(d["delta"].contains("content"));
}

TEST(ResponseJson, ToolCallDeltas) {
  Delta first;
  first.kind = Delta::Kind::kToolCall;
  first.tool_call = ToolCallDelta{1, true, "call_a", "get_weather", ""};
  const Json call = only_choice(delta_chunk(kChat, first))["delta"]["tool_calls"][0];
  EXPECT_EQ(call["index"], 1);
  EXPECT_EQ(call["id"], "call_a");
  EXPECT_EQ(call["type"], "function");
  EXPECT_EQ(call["function"]["name"], "get_weather");
  EXPECT_EQ(call["function"]["arguments"], "");
  EXPECT_FALSE(call["function"].contains("id"));  // llama.cpp's rule: no id inside function

  Delta args;
  args.kind = Delta::Kind::kToolCall;
  args.tool_call = ToolCallDelta{1, false, "", "", "{\"city\": \"Paris\"}"};
  const Json more = only_choice(delta_chunk(kChat, args))["delta"]["tool_calls"][0];
  EXPECT_EQ(more["index"], 1);
  EXPECT_FALSE(more.contains("id"));
  EXPECT_FALSE(more.contains("type"));
  EXPECT_FALSE(more["function"].contains("name"));
  EXPECT_EQ(more["function"]["arguments"], "{\"city\": \"Paris\"}");
}

TEST(ResponseJson, FinishAndUsageChunks) {
  const Json finish = only_choice(finish_chunk(kChat, "tool_calls", {}));
  EXPECT_EQ(finish["delta"], Json::object());
  EXPECT_EQ(finish["finish_reason"], "tool_calls");
  EXPECT_FALSE(finish.contains("warnings"));
  EXPECT_EQ(only_choice(finish_chunk(kChat, "stop", {"w"}))["warnings"], Json::array({"w"}));

  const Json usage = usage_chunk(kChat, {5, 7});
  EXPECT_EQ(usage["choices"], Json::array());
  EXPECT_EQ(usage["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(usage["usage"]["completion_tokens"], 7);
  EXPECT_EQ(usage["usage"]["total_tokens"], 12);
}

TEST(ResponseJson, SseFraming) {
  const std::string event = sse_event(role_chunk(kChat));
  ASSERT_TRUE(event.starts_with("data: {"));
  ASSERT_TRUE(event.ends_with("}\n\n"));
  EXPECT_EQ(event.find('\n'), event.size() - 2);  // one line: JSON never holds a raw line break
  EXPECT_TRUE(Json::accept(event.substr(6, event.size() - 8)));
  EXPECT_EQ(kSseDone, "data: [DONE]\n\n");
  const std::string multiline =
      sse_event(delta_chunk(kChat, text_delta(Delta::Kind::kContent, "a\nb\r\n\nc")));
  EXPECT_EQ(multiline.find('\n'), multiline.size() - 2);
}

TEST(ResponseJson, WholeChatCompletion) {
  AssembledReply reply;
  reply.content = "Hi.";
  Json body = completion_json(kChat, reply, "stop", {}, {3, 4});
  EXPECT_EQ(body["object"], "chat.completion");
  const Json& message = body["choices"][0]["message"];
  EXPECT_EQ(message["role"], "assistant");
  EXPECT_EQ(message["content"], "Hi.");
  EXPECT_FALSE(message.contains("reasoning_content"));
  EXPECT_FALSE(message.contains("tool_calls"));
  EXPECT_EQ(body["usage"]["total_tokens"], 7);

  reply = AssembledReply{"why", "", {{"call_1", "now", "{}"}}};
  body = completion_json(kChat, reply, "tool_calls", {"x"}, {1, 1});
  const Json& m = body["choices"][0]["message"];
  EXPECT_TRUE(m["content"].is_null());
  EXPECT_EQ(m["reasoning_content"], "why");
  EXPECT_EQ(m["reasoning"], "why");
  EXPECT_EQ(m["tool_calls"][0]["id"], "call_1");
  EXPECT_EQ(m["tool_calls"][0]["type"], "function");
  EXPECT_EQ(m["tool_calls"][0]["function"]["arguments"], "{}");
  EXPECT_EQ(body["choices"][0]["warnings"], Json::array({"x"}));
}

TEST(ResponseJson, TextCompletion) {
  AssembledReply reply;
  reply.content = "once";
  const Json body = completion_json(kText, reply, "length", {}, {1, 1});
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["choices"][0]["text"], "once");
  const Json chunk = delta_chunk(kText, text_delta(Delta::Kind::kContent, "a"));
  EXPECT_EQ(chunk["object"], "text_completion");
  EXPECT_EQ(chunk["choices"][0]["text"], "a");
}

TEST(ResponseJson, InvalidUtf8NeverBreaksTheJson) {
  // Model text is valid UTF-8 by construction; if it ever were not, the chunk must still be JSON.
  const std::string event =
      sse_event(delta_chunk(kChat, text_delta(Delta::Kind::kContent, "a\xff\xc0z")));
  EXPECT_TRUE(text::is_valid_utf8(event));
  EXPECT_TRUE(Json::accept(event.substr(6, event.size() - 8)));
}

TEST(ApiErrorJson, OpenAiShapeAndPrintableMessage) {
  const Json e = Json::parse(error_body(400, "bad \xff\x1b[2J byte", "messages[0]", ""));
  EXPECT_EQ(e["error"]["type"], "invalid_request_error");
  EXPECT_EQ(e["error"]["param"], "messages[0]");
  EXPECT_TRUE(e["error"]["code"].is_null());
  const std::string message = e["error"]["message"];
  EXPECT_TRUE(text::is_valid_utf8(message));
  EXPECT_EQ(message.find('\x1b'), std::string::npos);
  EXPECT_NE(message.find("\\xff"), std::string::npos) << message;

  for (const int status : {400, 401, 404, 405, 413, 429, 500, 503}) {
    const Json body = Json::parse(default_error_body(status));
    EXPECT_TRUE(body["error"]["message"].is_string()) << status;
    EXPECT_TRUE(body["error"]["type"].is_string()) << status;
  }
  EXPECT_EQ(error_type(401), "authentication_error");
  EXPECT_EQ(error_type(429), "rate_limit_error");
  EXPECT_EQ(error_type(503), "unavailable_error");
}

}  // namespace
}  // namespace dsa::server

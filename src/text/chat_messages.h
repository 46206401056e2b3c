// The conversation that the DeepSeek-V3.2 chat encoding renders: messages with roles, reasoning,
// tool calls and tool schemas, read from an OpenAI chat-completions request body.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "text/chat_json.h"

namespace dsa::text {

enum class ChatRole { kSystem, kUser, kAssistant, kTool, kDeveloper };

std::string_view role_name(ChatRole role);

// One call made by an assistant message.
struct ChatToolCall {
  std::string id;    // OpenAI's tool_call id; not rendered
  std::string name;  // function name
  Json arguments;    // a JSON object, keys in the order the caller wrote them
};

struct ChatMessage {
  ChatRole role = ChatRole::kUser;
  std::optional<std::string> content;            // absent or null in the request: nullopt
  std::optional<std::string> reasoning_content;  // assistant only
  std::vector<ChatToolCall> tool_calls;          // assistant only
  // Tool schemas rendered in this message (system or developer): the `function` objects of
  // OpenAI's [{"type": "function", "function": {...}}], in order. Empty: no tools prompt.
  std::vector<Json> tools;
  Json response_format;  // null when absent; rendered as "## Response Format" when non-empty
};

struct ChatRequest {
  std::vector<ChatMessage> messages;
  // chat_template_kwargs.thinking of the request, when given.
  std::optional<bool> thinking;
};

// Parses a chat request: an object with "messages" and optionally "tools", "response_format" and
// "chat_template_kwargs": {"thinking": bool}, or a bare array of messages. Request-level tools and
// response_format go onto the first message when it is a system message, else onto a new empty
// system message put in front (what SGLang does for this model). Message content is a string, or
// an array of {"type": "text", "text": ...} parts joined with "\n". Tool-call arguments are a JSON
// string (as OpenAI sends them) or an object. Throws dsa::Error naming `source` and the JSON path
// of the bad field.
ChatRequest parse_chat_request(std::string_view json_text, std::string_view source);

}  // namespace dsa::text

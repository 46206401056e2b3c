// DeepSeek-V3.2's chat encoding: renders a conversation as the exact prompt text of DeepSeek's
// encoding_dsv32.py `encode_messages` (byte for byte; the rules are in docs/chat-format.md).
#pragma once

#include <span>
#include <string>

#include "text/chat_messages.h"

namespace dsa::text {

enum class ThinkingMode {
  kChat,      // the prompt ends with <｜Assistant｜></think>: the model answers directly
  kThinking,  // the prompt ends with <｜Assistant｜><think>: the model reasons first
};

struct ChatEncodeOptions {
  ThinkingMode mode = ThinkingMode::kChat;
  // Render only messages[first_message:], with messages[:first_message] as context (the
  // reference's `context`): the rules still see the whole list. Lets a caller extend a prompt it
  // already has, e.g. append an assistant turn and its tool results inside one user turn.
  size_t first_message = 0;
  // Start with <｜begin▁of▁sentence｜> (only when first_message is 0, as in the reference).
  bool add_bos = true;
};

// The prompt text. Throws dsa::Error naming the message index for conversations the reference
// rejects: a tool message that does not answer a preceding assistant's tool call, a developer
// message without content, and in thinking mode an assistant message after the last user message
// with neither reasoning_content nor tool_calls.
std::string encode_messages(std::span<const ChatMessage> messages,
                            const ChatEncodeOptions& options);

// The "## Tools" system-prompt section for these function schemas (one JSON object per line).
std::string render_tools_prompt(std::span<const Json> functions);

// One DSML <｜DSML｜invoke> element for a tool call: each argument as a parameter, strings raw
// with string="true", other values as JSON with string="false".
std::string render_tool_call(const ChatToolCall& call);

}  // namespace dsa::text

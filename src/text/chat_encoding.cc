#include "text/chat_encoding.h"

#include <fmt/format.h>

#include <optional>

#include "core/error.h"
#include "text/dsml_tokens.h"

namespace dsa::text {
namespace {

// The tools section of the system prompt, up to the schemas; DeepSeek's TOOLS_SYSTEM_TEMPLATE
// with its DSML and think tokens filled in. The model was trained on exactly these bytes.
constexpr std::string_view kToolsPromptHead =
    R"(## Tools

You have access to a set of tools you can use to answer the user's question.
You can invoke functions by writing a "<｜DSML｜function_calls>" block like the following as part of your reply to the user:
<｜DSML｜function_calls>
<｜DSML｜invoke name="$FUNCTION_NAME">
<｜DSML｜parameter name="$PARAMETER_NAME" string="true|false">$PARAMETER_VALUE</｜DSML｜parameter>
...
</｜DSML｜invoke>
<｜DSML｜invoke name="$FUNCTION_NAME2">
...
</｜DSML｜invoke>
</｜DSML｜function_calls>

String and scalar parameters should be specified as is without any escaping or quotes, while lists and objects should use JSON format. The "string" attribute should be set to "true" for string type parameters and "false" for other types (numbers, booleans, arrays, objects).

If the thinking_mode is enabled, then after function results you should strongly consider outputting a thinking block. Here is an example:

<｜DSML｜function_calls>
...
</｜DSML｜function_calls>

<function_results>
...
</function_results>

<think>...thinking about results</think>

Here are the functions available in JSONSchema format:
<functions>
)";
constexpr std::string_view kToolsPromptTail = "\n</functions>\n";

constexpr std::string_view kResponseFormatHead =
    "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n";

// The index of the last user or developer message: reasoning after it is live, before it is
// history (rendered as if the turn had been non-thinking).
std::optional<size_t> last_user_index(std::span<const ChatMessage> messages) {
  for (size_t i = messages.size(); i-- > 0;) {
    if (messages[i].role == ChatRole::kUser || messages[i].role == ChatRole::kDeveloper) return i;
  }
  return std::nullopt;
}

// Python's truth value of a JSON value: the reference renders response_format `if` it is truthy.
bool python_truthy(const Json& value) {
  switch (value.type()) {
    case Json::value_t::boolean:
      return value.get<bool>();
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
    case Json::value_t::number_float:
      return value.get<double>() != 0.0;
    case Json::value_t::string:
      return !value.get_ref<const std::string&>().empty();
    case Json::value_t::array:
    case Json::value_t::object:
      return !value.empty();
    default:
      return false;
  }
}

// The tools prompt and response format that system and developer messages carry.
std::string render_attachments(const ChatMessage& message) {
  std::string out;
  if (!message.tools.empty()) out += "\n\n" + render_tools_prompt(message.tools);
  if (python_truthy(message.response_format)) {
    out += "\n\n";
    out += kResponseFormatHead;
    out += python_json_dumps(message.response_format);
  }
  return out;
}

const std::string& required_content(const ChatMessage& message, size_t index) {
  if (!message.content)
    fail("messages[{}] ({}): content is missing", index, role_name(message.role));
  return *message.content;
}

class Renderer {
 public:
  Renderer(std::span<const ChatMessage> messages, ThinkingMode mode)
      : messages_(messages),
        thinking_(mode == ThinkingMode::kThinking),
        last_user_(last_user_index(messages)) {}

  void render(size_t index, std::string& out) const {
    const ChatMessage& message = messages_[index];
    switch (message.role) {
      case ChatRole::kSystem:
        out += message.content.value_or("");
        out += render_attachments(message);
        break;
      case ChatRole::kUser:
        render_user_turn(index, required_content(message, index), out);
        break;
      case ChatRole::kDeveloper:
        if (!message.content || message.content->empty()) {
          fail("messages[{}] (developer): content is empty", index);
        }
        render_user_turn(
            index, render_attachments(message) + "\n\n# The user's message is: " + *message.content,
            out);
        break;
      case ChatRole::kTool:
        render_tool_result(index, out);
        break;
      case ChatRole::kAssistant:
        render_assistant(index, out);
        break;
    }
  }

 private:
  bool is_last_user(size_t index) const { return last_user_ && *last_user_ == index; }
  bool after_last_user(size_t index) const { return !last_user_ || index > *last_user_; }

  // The generation prompt opens reasoning only for the newest user turn in thinking mode.
  void render_user_turn(size_t index, const std::string& content, std::string& out) const {
    out += tokens::kUser;
    out += content;
    out += tokens::kAssistant;
    out += thinking_ && is_last_user(index) ? tokens::kThinkStart : tokens::kThinkEnd;
  }

  // The k-th consecutive tool message answers the k-th call of the assistant message before the
  // group; results are grouped in one <function_results> block.
  void render_tool_result(size_t index, std::string& out) const {
    size_t assistant = index;
    while (assistant > 0 && messages_[assistant - 1].role == ChatRole::kTool) --assistant;
    if (assistant == 0 || messages_[assistant - 1].role != ChatRole::kAssistant) {
      fail("messages[{}] (tool): a tool result must follow an assistant message with tool_calls",
           index);
    }
    --assistant;
    const size_t order = index - assistant;  // 1-based position in the group
    const size_t calls = messages_[assistant].tool_calls.size();
    if (order > calls) {
      fail("messages[{}] (tool): tool result {} answers no call: messages[{}] made {} tool call(s)",
           index, order, assistant, calls);
    }
    if (order == 1) out += "\n\n<function_results>";
    out += "\n<result>" + required_content(messages_[index], index) + "</result>";
    if (order == calls) {
      out += "\n</function_results>\n\n";
      // Tool results inside the newest user turn let the model think again.
      const bool live = !last_user_ || index >= *last_user_;
      out += thinking_ && live ? tokens::kThinkStart : tokens::kThinkEnd;
    }
  }

  void render_assistant(size_t index, std::string& out) const {
    const ChatMessage& message = messages_[index];
    // Reasoning is kept only after the last user message (inside the current tool loop); older
    // turns render as if they had been non-thinking.
    if (thinking_ && after_last_user(index)) {
      const bool has_reasoning = message.reasoning_content && !message.reasoning_content->empty();
      if (!has_reasoning && message.tool_calls.empty()) {
        fail(
            "messages[{}] (assistant): in thinking mode an assistant message after the last user "
            "message needs reasoning_content or tool_calls",
            index);
      }
      out += message.reasoning_content.value_or("");
      out += tokens::kThinkEnd;
    }
    out += message.content.value_or("");
    if (!message.tool_calls.empty()) {
      out += "\n\n";
      out += tokens::kFunctionCallsOpen;
      out += ">\n";
      for (size_t i = 0; i < message.tool_calls.size(); ++i) {
        if (i > 0) out += '\n';
        out += render_tool_call(message.tool_calls[i]);
      }
      out += '\n';
      out += tokens::kFunctionCallsClose;
    }
    out += tokens::kEos;
  }

  std::span<const ChatMessage> messages_;
  bool thinking_;
  std::optional<size_t> last_user_;
};

}  // namespace

std::string render_tools_prompt(std::span<const Json> functions) {
  std::string out(kToolsPromptHead);
  for (size_t i = 0; i < functions.size(); ++i) {
    if (i > 0) out += '\n';
    out += python_json_dumps(functions[i]);
  }
  out += kToolsPromptTail;
  return out;
}

std::string render_tool_call(const ChatToolCall& call) {
  DSA_CHECK(call.arguments.is_object(), "tool call arguments must be an object");
  std::string out = fmt::format("{} name=\"{}\">\n", tokens::kInvokeOpen, call.name);
  bool first = true;
  for (const auto& [key, value] : call.arguments.items()) {
    if (!first) out += '\n';
    first = false;
    const bool is_string = value.is_string();
    out += fmt::format("{} name=\"{}\" string=\"{}\">", tokens::kParameterOpen, key,
                       is_string ? "true" : "false");
    out += is_string ? value.get_ref<const std::string&>() : python_json_dumps(value);
    out += tokens::kParameterClose;
  }
  out += '\n';
  out += tokens::kInvokeClose;
  return out;
}

std::string encode_messages(std::span<const ChatMessage> messages,
                            const ChatEncodeOptions& options) {
  if (options.first_message > messages.size()) {
    fail("first_message {} is past the end of {} messages", options.first_message, messages.size());
  }
  const Renderer renderer(messages, options.mode);
  std::string out;
  if (options.add_bos && options.first_message == 0) out += tokens::kBos;
  for (size_t i = options.first_message; i < messages.size(); ++i) renderer.render(i, out);
  return out;
}

}  // namespace dsa::text

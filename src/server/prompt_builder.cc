#include "server/prompt_builder.h"

#include <fmt/format.h>

#include "core/error.h"
#include "server/api_error.h"
#include "text/chat_encoding.h"
#include "text/dsml_tokens.h"

namespace dsa::server {
namespace {

namespace tokens = text::tokens;

BuiltPrompt build_chat(const CompletionRequest& r) {
  BuiltPrompt out;
  std::vector<text::ChatMessage> messages = r.messages;
  if (r.tool_choice == ToolChoice::kNone) {
    for (text::ChatMessage& m : messages) m.tools.clear();
  }
  const text::ThinkingMode mode =
      r.thinking ? text::ThinkingMode::kThinking : text::ThinkingMode::kChat;
  const bool must_call =
      r.tool_choice == ToolChoice::kRequired || r.tool_choice == ToolChoice::kNamed;
  if (must_call && mode == text::ThinkingMode::kThinking && !messages.empty()) {
    // The request's tools sit on messages[0], a system message (text/chat_messages.h).
    text::ChatMessage& system = messages.front();
    std::string& content = system.content.emplace(system.content.value_or(""));
    if (!content.empty()) content += "\n\n";
    content += r.tool_choice == ToolChoice::kNamed
                   ? fmt::format("In this reply, call the function \"{}\".", r.tool_choice_name)
                   : std::string("In this reply, call at least one of the functions.");
  }
  text::ChatEncodeOptions options;
  options.mode = mode;
  try {
    out.text = text::encode_messages(messages, options);
  } catch (const Error& e) {
    bad_request("messages", e.what());
  }
  if (must_call && mode == text::ThinkingMode::kChat) {
    out.forced_prefix =
        fmt::format("\n\n{}>\n{} name=\"", tokens::kFunctionCallsOpen, tokens::kInvokeOpen);
    if (r.tool_choice == ToolChoice::kNamed) out.forced_prefix += r.tool_choice_name + "\">\n";
    out.text += out.forced_prefix;
  }
  out.assembler.mode = mode;
  ReplyPolicy& p = out.assembler.policy;
  p.allow_tool_calls = r.tool_choice != ToolChoice::kNone;
  p.declared = r.tool_names;
  p.required_name = r.tool_choice == ToolChoice::kNamed ? r.tool_choice_name : "";
  p.require_tool_call = must_call;
  p.parallel_tool_calls = r.parallel_tool_calls;
  p.expect_json = r.response_format != ResponseFormat::kText;
  return out;
}

}  // namespace

BuiltPrompt build_prompt(const CompletionRequest& r) {
  if (r.chat) return build_chat(r);
  BuiltPrompt out;
  out.text = r.prompt;
  out.add_bos = true;
  return out;  // assembler.mode stays nullopt: the reply is raw text
}

std::vector<int32_t> prompt_tokens(const BuiltPrompt& prompt, const text::Tokenizer& tokenizer) {
  std::vector<int32_t> ids = tokenizer.encode(prompt.text);
  const std::optional<int32_t> bos = tokenizer.bos_id();
  if (prompt.add_bos && bos && (ids.empty() || ids.front() != *bos)) ids.insert(ids.begin(), *bos);
  return ids;
}

}  // namespace dsa::server

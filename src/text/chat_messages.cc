#include "text/chat_messages.h"

#include <fmt/format.h>

#include "core/error.h"
#include "core/json_strict.h"
#include "core/printable.h"

namespace dsa::text {
namespace {

// Where a field sits, for error messages: "<source>: messages[2].tool_calls[0]".
struct Where {
  std::string_view source;
  std::string path;
  Where field(std::string_view name) const {
    return {source, path.empty() ? std::string(name) : fmt::format("{}.{}", path, name)};
  }
  Where item(size_t index) const { return {source, fmt::format("{}[{}]", path, index)}; }
};

[[noreturn]] void fail_at(const Where& where, std::string_view what) {
  if (where.path.empty()) fail("{}: {}", where.source, what);
  fail("{}: {}: {}", where.source, where.path, what);
}

std::string_view type_name(const Json& value) { return value.type_name(); }

// Strict and linear (core/json_strict.h): repeated keys, trailing text and nesting deeper than
// kMaxJsonDepth (rendering walks the JSON recursively) are refused, naming the field.
Json parse_json(std::string_view text, const Where& where) {
  const std::string source = where.path.empty() ? std::string(where.source)
                                                : fmt::format("{}: {}", where.source, where.path);
  return parse_ordered_json_strict(text, source);
}

const std::string& expect_string(const Json& value, const Where& where) {
  if (!value.is_string())
    fail_at(where, fmt::format("expected a string, got {}", type_name(value)));
  return value.get_ref<const std::string&>();
}

// A string, or OpenAI's array of content parts of which only text parts can be rendered.
std::optional<std::string> parse_content(const Json& message, const Where& where) {
  const auto it = message.find("content");
  if (it == message.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  const Where at = where.field("content");
  if (!it->is_array()) {
    fail_at(at, fmt::format("expected a string or an array of parts, got {}", type_name(*it)));
  }
  std::string text;
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& part = (*it)[i];
    const Where part_at = at.item(i);
    if (!part.is_object()) fail_at(part_at, "expected a content part object");
    const auto type = part.find("type");
    if (type == part.end() || *type != "text") {
      fail_at(part_at, "only {\"type\": \"text\"} content parts are supported");
    }
    const auto part_text = part.find("text");
    if (part_text == part.end()) fail_at(part_at, "text part without \"text\"");
    if (i > 0) text += '\n';
    text += expect_string(*part_text, part_at.field("text"));
  }
  return text;
}

ChatRole parse_role(const Json& message, const Where& where) {
  const auto it = message.find("role");
  if (it == message.end()) fail_at(where, "message without \"role\"");
  const std::string& role = expect_string(*it, where.field("role"));
  for (const ChatRole r : {ChatRole::kSystem, ChatRole::kUser, ChatRole::kAssistant,
                           ChatRole::kTool, ChatRole::kDeveloper}) {
    if (role == role_name(r)) return r;
  }
  fail_at(where.field("role"),
          fmt::format("unknown role \"{}\" (expected system, user, assistant, tool or developer)",
                      printable_excerpt(role)));
}

// OpenAI tools: [{"type": "function", "function": {...}}]; keeps the function objects. They are
// moved out of the parsed request, which is read once: a tool's schema may be megabytes.
std::vector<Json> parse_tools(Json& tools, const Where& where) {
  if (!tools.is_array()) fail_at(where, fmt::format("expected an array, got {}", type_name(tools)));
  std::vector<Json> functions;
  for (size_t i = 0; i < tools.size(); ++i) {
    Json& tool = tools[i];
    const auto function = tool.is_object() ? tool.find("function") : tool.end();
    if (!tool.is_object() || function == tool.end() || !function->is_object()) {
      fail_at(where.item(i), "expected {\"type\": \"function\", \"function\": {...}}");
    }
    functions.push_back(std::move(*function));
  }
  return functions;
}

ChatToolCall parse_tool_call(const Json& call, const Where& where) {
  if (!call.is_object()) fail_at(where, "expected a tool call object");
  ChatToolCall out;
  if (const auto id = call.find("id"); id != call.end() && !id->is_null()) {
    out.id = expect_string(*id, where.field("id"));
  }
  const auto function = call.find("function");
  if (function == call.end() || !function->is_object()) {
    fail_at(where, "tool call without a \"function\" object");
  }
  const Where fn = where.field("function");
  const auto name = function->find("name");
  if (name == function->end()) fail_at(fn, "function without \"name\"");
  out.name = expect_string(*name, fn.field("name"));
  const auto arguments = function->find("arguments");
  if (arguments == function->end()) fail_at(fn, "function without \"arguments\"");
  const Where args_at = fn.field("arguments");
  out.arguments =
      arguments->is_string() ? parse_json(arguments->get<std::string>(), args_at) : *arguments;
  if (!out.arguments.is_object()) {
    fail_at(args_at,
            fmt::format("arguments must be a JSON object, got {}", type_name(out.arguments)));
  }
  return out;
}

ChatMessage parse_message(Json& message, const Where& where) {
  if (!message.is_object()) {
    fail_at(where, fmt::format("expected a message object, got {}", type_name(message)));
  }
  ChatMessage out;
  out.role = parse_role(message, where);
  out.content = parse_content(message, where);
  if (const auto it = message.find("reasoning_content"); it != message.end() && !it->is_null()) {
    out.reasoning_content = expect_string(*it, where.field("reasoning_content"));
  }
  if (const auto it = message.find("tool_calls"); it != message.end() && !it->is_null()) {
    const Where calls_at = where.field("tool_calls");
    if (!it->is_array()) fail_at(calls_at, "expected an array");
    for (size_t i = 0; i < it->size(); ++i) {
      out.tool_calls.push_back(parse_tool_call((*it)[i], calls_at.item(i)));
    }
  }
  if (const auto it = message.find("tools"); it != message.end() && !it->is_null()) {
    out.tools = parse_tools(*it, where.field("tools"));
  }
  if (const auto it = message.find("response_format"); it != message.end()) {
    out.response_format = std::move(*it);
  }
  return out;
}

ChatMessage make_system_message() {
  ChatMessage message;
  message.role = ChatRole::kSystem;
  message.content = "";
  return message;
}

// Puts request-level tools / response_format on the leading system message.
void attach_to_system(ChatRequest& request, std::vector<Json> tools, Json response_format,
                      const Where& where) {
  if (tools.empty() && response_format.is_null()) return;
  auto& messages = request.messages;
  if (messages.empty() || messages.front().role != ChatRole::kSystem) {
    messages.insert(messages.begin(), make_system_message());
  }
  ChatMessage& system = messages.front();
  if (!tools.empty()) {
    if (!system.tools.empty()) {
      fail_at(where.field("tools"), "tools given both in the request and on messages[0]");
    }
    system.tools = std::move(tools);
  }
  if (!response_format.is_null()) {
    if (!system.response_format.is_null()) {
      fail_at(where.field("response_format"),
              "response_format given both in the request and on messages[0]");
    }
    system.response_format = std::move(response_format);
  }
}

}  // namespace

std::string_view role_name(ChatRole role) {
  switch (role) {
    case ChatRole::kSystem:
      return "system";
    case ChatRole::kUser:
      return "user";
    case ChatRole::kAssistant:
      return "assistant";
    case ChatRole::kTool:
      return "tool";
    case ChatRole::kDeveloper:
      return "developer";
  }
  return "?";
}

ChatRequest parse_chat_request(std::string_view json_text, std::string_view source) {
  const Where root{source, ""};
  Json body = parse_json(json_text, root);  // its tools and formats are moved out
  ChatRequest request;
  Json* messages = &body;
  if (body.is_object()) {
    const auto it = body.find("messages");
    if (it == body.end()) fail_at(root, "request without \"messages\"");
    messages = &*it;
  }
  const Where messages_at = body.is_object() ? root.field("messages") : root;
  if (!messages->is_array()) {
    fail_at(messages_at,
            fmt::format("expected an array of messages, got {}", type_name(*messages)));
  }
  for (size_t i = 0; i < messages->size(); ++i) {
    request.messages.push_back(parse_message((*messages)[i], messages_at.item(i)));
  }
  if (!body.is_object()) return request;

  std::vector<Json> tools;
  if (const auto it = body.find("tools"); it != body.end() && !it->is_null()) {
    tools = parse_tools(*it, root.field("tools"));
  }
  Json response_format;
  if (const auto it = body.find("response_format"); it != body.end() && !it->is_null()) {
    // {"type": "text"} is OpenAI's default, plain text: nothing to tell the model.
    const bool plain_text = it->is_object() && it->value("type", Json()) == "text";
    if (!plain_text) response_format = std::move(*it);
  }
  attach_to_system(request, std::move(tools), std::move(response_format), root);

  if (const auto kwargs = body.find("chat_template_kwargs"); kwargs != body.end()) {
    const Where kwargs_at = root.field("chat_template_kwargs");
    if (!kwargs->is_object()) fail_at(kwargs_at, "expected an object");
    if (const auto thinking = kwargs->find("thinking"); thinking != kwargs->end()) {
      if (!thinking->is_boolean()) fail_at(kwargs_at.field("thinking"), "expected true or false");
      request.thinking = thinking->get<bool>();
    }
  }
  return request;
}

}  // namespace dsa::text

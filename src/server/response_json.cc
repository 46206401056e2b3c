#include "server/response_json.h"

namespace dsa::server {
namespace {

Json chunk_head(const ReplyMeta& meta) {
  Json chunk = Json::object();
  chunk["id"] = meta.id;
  chunk["object"] = meta.chat ? "chat.completion.chunk" : "text_completion";
  chunk["created"] = meta.created;
  chunk["model"] = meta.model;
  return chunk;
}

// A chunk with its single choice: a chat `delta`, or a completion's `text`.
Json chunk_with(const ReplyMeta& meta, Json delta_or_text, const Json& finish_reason) {
  Json choice = Json::object();
  choice["index"] = 0;
  choice[meta.chat ? "delta" : "text"] = std::move(delta_or_text);
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = finish_reason;
  Json chunk = chunk_head(meta);
  chunk["choices"] = Json::array({std::move(choice)});
  return chunk;
}

Json tool_call_delta(const ToolCallDelta& t) {
  Json call = Json::object();
  call["index"] = t.index;
  Json function = Json::object();
  if (t.first) {
    call["id"] = t.id;
    call["type"] = "function";
    function["name"] = t.name;
  }
  function["arguments"] = t.arguments;
  call["function"] = std::move(function);
  return call;
}

}  // namespace

std::string sse_event(const Json& chunk) { return "data: " + dump_json(chunk) + "\n\n"; }

Json role_chunk(const ReplyMeta& meta) {
  return chunk_with(meta, Json{{"role", "assistant"}}, nullptr);
}

Json delta_chunk(const ReplyMeta& meta, const Delta& d) {
  if (!meta.chat) return chunk_with(meta, d.text, nullptr);
  Json delta = Json::object();
  switch (d.kind) {
    case Delta::Kind::kContent:
      delta["content"] = d.text;
      break;
    case Delta::Kind::kReasoning:
      // Both names: clients read one or the other (vLLM renamed the field; dify #33342).
      delta["reasoning_content"] = d.text;
      delta["reasoning"] = d.text;
      break;
    case Delta::Kind::kToolCall:
      delta["tool_calls"] = Json::array({tool_call_delta(d.tool_call)});
      break;
  }
  return chunk_with(meta, std::move(delta), nullptr);
}

Json finish_chunk(const ReplyMeta& meta, const std::string& finish_reason,
                  const std::vector<std::string>& warnings) {
  Json chunk = chunk_with(meta, meta.chat ? Json::object() : Json(""), finish_reason);
  if (!warnings.empty()) chunk["choices"][0]["warnings"] = warnings;
  return chunk;
}

Json usage_json(const Usage& u) {
  Json usage = Json::object();
  usage["prompt_tokens"] = u.prompt_tokens;
  usage["completion_tokens"] = u.completion_tokens;
  usage["total_tokens"] = u.prompt_tokens + u.completion_tokens;
  usage["prompt_tokens_details"] = Json{{"cached_tokens", u.cached_tokens}};
  return usage;
}

Json usage_chunk(const ReplyMeta& meta, const Usage& usage) {
  Json chunk = chunk_head(meta);
  chunk["choices"] = Json::array();
  chunk["usage"] = usage_json(usage);
  return chunk;
}

Json completion_json(const ReplyMeta& meta, const AssembledReply& reply,
                     const std::string& finish_reason, const std::vector<std::string>& warnings,
                     const Usage& usage) {
  Json choice = Json::object();
  choice["index"] = 0;
  if (meta.chat) {
    Json message = Json::object();
    message["role"] = "assistant";
    // OpenAI sends null content beside tool calls when the model wrote no text.
    message["content"] =
        reply.content.empty() && !reply.tool_calls.empty() ? Json(nullptr) : Json(reply.content);
    if (!reply.reasoning.empty()) {
      message["reasoning_content"] = reply.reasoning;
      message["reasoning"] = reply.reasoning;
    }
    if (!reply.tool_calls.empty()) {
      Json calls = Json::array();
      for (const AssembledToolCall& c : reply.tool_calls) {
        calls.push_back(Json{{"id", c.id},
                             {"type", "function"},
                             {"function", Json{{"name", c.name}, {"arguments", c.arguments}}}});
      }
      message["tool_calls"] = std::move(calls);
    }
    choice["message"] = std::move(message);
  } else {
    choice["text"] = reply.content;
  }
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = finish_reason;
  if (!warnings.empty()) choice["warnings"] = warnings;
  Json body = Json::object();
  body["id"] = meta.id;
  body["object"] = meta.chat ? "chat.completion" : "text_completion";
  body["created"] = meta.created;
  body["model"] = meta.model;
  body["choices"] = Json::array({std::move(choice)});
  body["usage"] = usage_json(usage);
  return body;
}

}  // namespace dsa::server

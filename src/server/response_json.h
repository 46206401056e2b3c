// The JSON of OpenAI replies, whole and streamed, and the SSE framing of a stream.
//
// A chat stream is, in order (docs/server.md):
//   role_chunk                 delta {"role": "assistant"}: the only chunk with a role
//   delta_chunk...             one per delta: content, reasoning (as both reasoning_content and
//                              reasoning), or a tool-call piece; text is never empty
//   finish_chunk               delta {}, finish_reason, and "warnings" when there are any
//   usage_chunk                choices [] and usage, only with stream_options.include_usage
//   data: [DONE]
// An error after the stream began goes out as a chunk holding only an "error" object (what the
// openai clients turn into an exception), then data: [DONE].
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "server/json_out.h"
#include "server/stream_assembler.h"

namespace dsa::server {

struct ReplyMeta {
  bool chat = true;  // chat.completion(.chunk); false: text_completion
  std::string id;    // the same in every chunk of a stream
  std::string model;
  int64_t created = 0;  // Unix seconds
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;  // of the prompt, found in the prefix cache
};

// "data: <json>\n\n"
std::string sse_event(const Json& chunk);
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";

Json role_chunk(const ReplyMeta& meta);
Json delta_chunk(const ReplyMeta& meta, const Delta& delta);
Json finish_chunk(const ReplyMeta& meta, const std::string& finish_reason,
                  const std::vector<std::string>& warnings);
Json usage_chunk(const ReplyMeta& meta, const Usage& usage);

Json usage_json(const Usage& usage);

// A whole reply: a chat.completion, or a text_completion (the reply's content as "text").
Json completion_json(const ReplyMeta& meta, const AssembledReply& reply,
                     const std::string& finish_reason, const std::vector<std::string>& warnings,
                     const Usage& usage);

}  // namespace dsa::server

// Drives one submitted job to its HTTP reply: the job's text goes through a StreamAssembler and
// out as one chat.completion / text_completion, or as SSE chunks while it is generated.
#pragma once

#include <cstdint>
#include <memory>

#include "server/engine.h"
#include "server/http_server.h"
#include "server/prompt_builder.h"
#include "server/response_json.h"

namespace dsa::server {

struct ReplyJob {
  ReplyMeta meta;
  AssemblerOptions assembler;
  std::string forced_prefix;  // read by the assembler before the model's text
  std::shared_ptr<Job> job;
  int64_t prompt_tokens = 0;
  bool include_usage = false;
};

// Waits for the whole generation; 200 with the reply, or 500 when generation failed.
HttpResponse whole_reply(const ReplyJob& reply);

// Writes the SSE stream (response_json.h has its order). At the first failed write (the client
// is gone) it cancels the job and returns: generation stops at its next token.
void stream_reply(const ReplyJob& reply, ResponseStream& out);

}  // namespace dsa::server

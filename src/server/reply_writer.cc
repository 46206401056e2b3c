#include "server/reply_writer.h"

#include <fmt/format.h>

#include <algorithm>

#include "server/api_error.h"

namespace dsa::server {
namespace {

// The engine prefills only what its prefix cache did not hold (stats.prompt_tokens); the rest of
// the prompt was cached.
Usage usage_of(const ReplyJob& r, const GenerationStats& stats) {
  return Usage{r.prompt_tokens, stats.generated_tokens,
               std::max<int64_t>(0, r.prompt_tokens - stats.prompt_tokens)};
}

}  // namespace

HttpResponse whole_reply(const ReplyJob& r) {
  StreamAssembler assembler(r.assembler);
  AssembledReply reply;
  for (const Delta& d : assembler.feed(r.forced_prefix)) add_delta(reply, d);
  while (true) {
    JobEvent e = r.job->next();
    if (e.kind == JobEvent::Kind::kText) {
      for (const Delta& d : assembler.feed(e.text)) add_delta(reply, d);
      continue;
    }
    if (e.kind == JobEvent::Kind::kFailed) {
      return HttpResponse{500,
                          "application/json",
                          error_body(500, fmt::format("generation failed: {}", e.error)),
                          {},
                          nullptr};
    }
    for (const Delta& d : assembler.finish(e.stats.stop)) add_delta(reply, d);
    const Usage usage = usage_of(r, e.stats);
    const Json body =
        completion_json(r.meta, reply, assembler.finish_reason(), assembler.warnings(), usage);
    return HttpResponse{200, "application/json", dump_json(body), {}, nullptr};
  }
}

namespace {

void stream_events(const ReplyJob& r, ResponseStream& out) {
  const auto send = [&](const Json& chunk) {
    if (out.write(sse_event(chunk))) return true;
    r.job->cancel();
    return false;
  };
  const auto send_all = [&](const std::vector<Delta>& deltas) {
    for (const Delta& d : deltas) {
      if (!send(delta_chunk(r.meta, d))) return false;
    }
    return true;
  };
  // The role goes out at once: the client sees the reply start while the job waits or prefills.
  if (r.meta.chat && !send(role_chunk(r.meta))) return;
  StreamAssembler assembler(r.assembler);
  if (!send_all(assembler.feed(r.forced_prefix))) return;
  while (true) {
    JobEvent e = r.job->next();
    if (e.kind == JobEvent::Kind::kText) {
      if (!send_all(assembler.feed(e.text))) return;
      continue;
    }
    if (e.kind == JobEvent::Kind::kFailed) {
      // OpenAI's clients throw on a chunk holding an "error" object.
      if (send(error_json(500, fmt::format("generation failed: {}", e.error)))) {
        out.write(kSseDone);
      }
      return;
    }
    if (!send_all(assembler.finish(e.stats.stop))) return;
    if (!send(finish_chunk(r.meta, assembler.finish_reason(), assembler.warnings()))) return;
    if (r.include_usage && !send(usage_chunk(r.meta, usage_of(r, e.stats)))) {
      return;
    }
    out.write(kSseDone);
    return;
  }
}

}  // namespace

void stream_reply(const ReplyJob& r, ResponseStream& out) {
  // This runs on the connection's thread after the handler returned, out of reach of the API's
  // error handling; an exception escaping it would end the process.
  std::string problem;
  try {
    stream_events(r, out);
    return;
  } catch (const std::bad_alloc&) {
    problem = "out of memory";
  } catch (const std::exception& e) {
    problem = e.what();
  }
  r.job->cancel();
  if (out.write(sse_event(error_json(500, fmt::format("internal error: {}", problem))))) {
    out.write(kSseDone);
  }
}

}  // namespace dsa::server

// Feeds arbitrary bytes to the server's request parser and SSE writer (`dsa serve`). The input is
// a request body, optionally followed by a NUL byte and a model reply. The first byte picks the
// route (bit 0: chat or text completion) and the reply's piece sizes (bits 1-7 seed them).
//
// Checked: a refused request is an ApiError whose message and JSON body are printable; an
// accepted one builds a prompt (or is refused the same way). The reply, fed in pieces to the
// request's StreamAssembler, becomes SSE events that each frame exactly one valid JSON object,
// and the assembled deltas agree with the whole reply written as one completion. Anything else
// (another exception, a crash, a sanitizer report) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/error.h"
#include "core/printable.h"
#include "server/api_error.h"
#include "server/completion_request.h"
#include "server/prompt_builder.h"
#include "server/response_json.h"
#include "server/stream_assembler.h"
#include "text/utf8.h"

namespace {

using namespace dsa::server;

void check_printable(std::string_view text) {
  if (dsa::printable(text) != text) std::abort();
}

// One SSE event: "data: " + a JSON object that parses + "\n\n", as valid UTF-8.
void check_event(const std::string& event) {
  constexpr std::string_view kData = "data: ";
  if (!event.starts_with(kData) || !event.ends_with("\n\n")) std::abort();
  const std::string_view json(event.data() + kData.size(), event.size() - kData.size() - 2);
  if (json.find('\n') != std::string_view::npos) std::abort();  // one line per event
  if (!dsa::text::is_valid_utf8(json) || !Json::accept(json)) std::abort();
}

void stream_reply(const BuiltPrompt& prompt, std::string_view reply, uint32_t seed, bool chat) {
  AssemblerOptions options = prompt.assembler;
  int calls = 0;
  options.make_call_id = [&calls] { return "call_" + std::to_string(calls++); };
  StreamAssembler assembler(options);
  const ReplyMeta meta{.chat = chat, .id = "fuzz", .model = "fuzz", .created = 0};
  check_event(sse_event(role_chunk(meta)));
  AssembledReply assembled;
  const auto emit = [&](const std::vector<Delta>& deltas) {
    for (const Delta& delta : deltas) {
      if (delta.kind != Delta::Kind::kToolCall && delta.text.empty()) std::abort();
      check_event(sse_event(delta_chunk(meta, delta)));
      add_delta(assembled, delta);
    }
  };
  emit(assembler.feed(prompt.forced_prefix));
  size_t at = 0;
  while (at < reply.size()) {
    seed = seed * 1103515245u + 12345u;
    const size_t length = 1 + (seed >> 16) % 64;
    emit(assembler.feed(reply.substr(at, length)));
    at += std::min(length, reply.size() - at);
  }
  emit(assembler.finish(dsa::StopReason::kEos));
  for (const std::string& warning : assembler.warnings()) check_printable(warning);
  check_event(sse_event(finish_chunk(meta, assembler.finish_reason(), assembler.warnings())));
  check_event(sse_event(usage_chunk(meta, Usage{.prompt_tokens = 1, .completion_tokens = 1})));
  const std::string whole = dump_json(
      completion_json(meta, assembled, assembler.finish_reason(), assembler.warnings(), Usage{}));
  if (!dsa::text::is_valid_utf8(whole) || !Json::accept(whole)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool chat = (data[0] & 1) == 0;
  const uint32_t seed = data[0] >> 1;
  std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  std::string_view reply;
  if (const size_t nul = body.find('\0'); nul != std::string_view::npos) {
    reply = body.substr(nul + 1);
    body = body.substr(0, nul);
  }
  try {
    const CompletionRequest request =
        chat ? parse_chat_completion_request(body) : parse_completion_request(body);
    const BuiltPrompt prompt = build_prompt(request);
    stream_reply(prompt, reply, seed, chat);
  } catch (const ApiError& e) {
    check_printable(e.what());
    check_printable(e.param());
    const std::string error = error_body(e);
    if (!dsa::text::is_valid_utf8(error) || !Json::accept(error)) std::abort();
  }
  return 0;
}

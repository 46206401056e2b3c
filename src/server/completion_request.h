// The body of POST /v1/chat/completions and POST /v1/completions, read and checked. Every field
// is checked for its type and range, and a field we cannot honour (n > 1, logprobs, penalties,
// logit_bias...) is refused rather than ignored: a client that asks for it would otherwise get a
// reply it did not ask for without knowing. Errors are ApiError 400 naming the field.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/sampler.h"
#include "text/chat_messages.h"

namespace dsa::server {

enum class ToolChoice { kAuto, kNone, kRequired, kNamed };
enum class ResponseFormat { kText, kJsonObject, kJsonSchema };

struct CompletionRequest {
  bool chat = true;   // /v1/chat/completions; false: /v1/completions
  std::string model;  // the requested model name; "" when absent

  // Chat only. The conversation, with request-level tools and response_format attached to the
  // system message as the V3.2 encoding renders them (text/chat_messages.h).
  std::vector<text::ChatMessage> messages;
  bool thinking = false;  // chat_template_kwargs.thinking, else reasoning_effort; default off
  std::vector<std::string> tool_names;  // the declared functions, in order
  ToolChoice tool_choice = ToolChoice::kAuto;
  std::string tool_choice_name;  // the function of a named tool_choice
  bool parallel_tool_calls = true;
  ResponseFormat response_format = ResponseFormat::kText;

  // Completions only: the raw prompt text.
  std::string prompt;

  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  SamplerParams sampling;      // dsa run's defaults unless given; the seed is not set here
  std::optional<uint64_t> seed;
  int64_t max_tokens = -1;  // -1: until EOS, a stop string or the end of the context
  std::vector<std::string> stop;
  bool ignore_eos = false;  // llama.cpp's extension: never stop at EOS (benchmarks, tests)
};

// The largest number of stop strings and the longest one, in bytes.
inline constexpr size_t kMaxStopStrings = 16;
inline constexpr size_t kMaxStopBytes = 256;

CompletionRequest parse_chat_completion_request(std::string_view body);
CompletionRequest parse_completion_request(std::string_view body);

}  // namespace dsa::server

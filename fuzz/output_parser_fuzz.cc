// Feeds arbitrary text to the streaming output parser. The first byte picks the mode (bit 0) and
// the piece sizes (bits 1-7 seed them); the rest is the completion. Checked: feeding in pieces
// gives exactly what feeding the whole text gives, every held byte is released by finish(), and
// for valid UTF-8 input every finished tool call's arguments are valid JSON.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "text/output_parser.h"
#include "text/utf8.h"

namespace {

using dsa::text::ParsedCompletion;

bool same(const ParsedCompletion& a, const ParsedCompletion& b) {
  if (a.reasoning != b.reasoning || a.content != b.content || a.errors != b.errors ||
      a.tool_calls.size() != b.tool_calls.size()) {
    return false;
  }
  for (size_t i = 0; i < a.tool_calls.size(); ++i) {
    const auto& x = a.tool_calls[i];
    const auto& y = b.tool_calls[i];
    if (x.name != y.name || x.arguments != y.arguments || x.complete != y.complete) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto mode =
      (data[0] & 1) ? dsa::text::ThinkingMode::kThinking : dsa::text::ThinkingMode::kChat;
  uint32_t seed = data[0] >> 1;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);

  const ParsedCompletion whole = dsa::text::parse_completion(text, mode);

  dsa::text::OutputParser parser(mode);
  ParsedCompletion pieces;
  size_t at = 0;
  while (at < text.size()) {
    seed = seed * 1103515245u + 12345u;
    const size_t length = 1 + (seed >> 16) % 8;
    for (const auto& event : parser.feed(text.substr(at, length))) apply_event(pieces, event);
    at += std::min(length, text.size() - at);
  }
  for (const auto& event : parser.finish()) apply_event(pieces, event);
  if (parser.held_bytes() != 0) std::abort();
  if (!same(whole, pieces)) std::abort();

  if (dsa::text::is_valid_utf8(text)) {
    for (const auto& call : whole.tool_calls) {
      const bool has_nul = call.arguments.find('\0') != std::string::npos;  // nlohmann stops there
      if (call.complete && (has_nul || !dsa::text::Json::accept(call.arguments))) std::abort();
    }
  }
  return 0;
}

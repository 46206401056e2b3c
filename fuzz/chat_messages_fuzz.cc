// Feeds arbitrary bytes to the chat request parser and renders what it accepts in both modes. A
// dsa::Error is the expected answer to bad input, and the parser's messages are printable (no
// control bytes, valid UTF-8); any other exception, a crash or a sanitizer report is a bug. A
// rendered prompt always starts with <｜begin▁of▁sentence｜>.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/error.h"
#include "core/printable.h"
#include "text/chat_encoding.h"
#include "text/dsml_tokens.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const dsa::text::ChatRequest request = dsa::text::parse_chat_request(text, "fuzz-input");
    for (const auto mode : {dsa::text::ThinkingMode::kChat, dsa::text::ThinkingMode::kThinking}) {
      try {
        const std::string prompt = dsa::text::encode_messages(
            request.messages, dsa::text::ChatEncodeOptions{.mode = mode});
        if (!prompt.starts_with(dsa::text::tokens::kBos)) std::abort();
      } catch (const dsa::Error&) {
      }
    }
  } catch (const dsa::Error& e) {
    if (dsa::printable(e.what()) != e.what()) std::abort();
  }
  return 0;
}

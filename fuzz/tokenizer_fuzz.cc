// Fuzzes the tokenizer. The first byte picks what the rest of the input is:
//   even: a tokenizer.json text; loading it must either succeed or throw dsa::Error with a
//         printable message (no control bytes, valid UTF-8), and a loaded tokenizer must encode
//         and decode a fixed sample without crashing;
//   odd:  text to encode with a small tokenizer trained in-process (DeepSeek's pre-tokenizer and
//         chat tokens); decode(encode(text)) must give back the text with invalid UTF-8 repaired.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/error.h"
#include "core/printable.h"
#include "text/bpe_trainer.h"
#include "text/tokenizer.h"
#include "text/utf8.h"

namespace {

const dsa::text::Tokenizer& trained_tokenizer() {
  static const dsa::text::Tokenizer tokenizer = [] {
    dsa::text::BpeTrainer trainer({.vocab_size = 400, .min_frequency = 2});
    trainer.add_text(
        "The quick brown fox jumps over the lazy dog. 1234567 3.14159 def f(x): return x * 2\n"
        "深度求索 稀疏注意力 <think>reasoning</think>\n"
        "\t  tabs and   spaces\r\n emoji 🙂🙂 👍🏽");
    return dsa::text::Tokenizer::from_json_text(trainer.train_to_json(), "fuzz-trained");
  }();
  return tokenizer;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  if (data[0] % 2 == 0) {
    try {
      const auto tokenizer = dsa::text::Tokenizer::from_json_text(rest, "fuzz-input");
      const auto ids = tokenizer.encode("Hello, 世界! <think> 12345");
      tokenizer.decode(ids);
    } catch (const dsa::Error& e) {
      // Rejected with a message: the expected outcome for most inputs.
      if (dsa::printable(e.what()) != e.what()) std::abort();
    }
    return 0;
  }
  const auto& tokenizer = trained_tokenizer();
  for (bool allow_special : {true, false}) {
    const auto ids = tokenizer.encode(rest, allow_special);
    if (tokenizer.decode(ids) != dsa::text::sanitize_utf8(rest)) std::abort();
  }
  return 0;
}

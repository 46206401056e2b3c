// The pre-tokenizer of a Hugging Face tokenizer.json: a sequence of Split steps with regexes
// (behavior "Isolated": both the matches and the text between them become pieces), each applied
// to every piece of the step before. Regexes run in PCRE2 (UTF + UCP + JIT); HF runs them in
// Oniguruma, whose `\s` is 9..13, U+0085 and \p{Z}, so `\s` and `\S` are rewritten to that set.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace dsa::text {

// A byte range [begin, end) of the text being split.
struct TextSpan {
  uint32_t begin = 0;
  uint32_t end = 0;
};

// Rewrites Oniguruma-only syntax of an HF regex into PCRE2 syntax (today: `\s`, `\S`).
// Throws dsa::Error for `\S` inside a character class, which has no PCRE2 equivalent.
std::string translate_hf_regex(std::string_view pattern);

class RegexSplitStep {
 public:
  // `pattern` in HF (Oniguruma) syntax; throws dsa::Error naming the pattern on a compile error.
  explicit RegexSplitStep(std::string_view pattern);
  ~RegexSplitStep();
  RegexSplitStep(RegexSplitStep&&) noexcept;
  RegexSplitStep& operator=(RegexSplitStep&&) noexcept;

  const std::string& pattern() const { return pattern_; }
  // Appends the pieces of text[span] to `out`. The text must be valid UTF-8.
  void split(std::string_view text, TextSpan span, std::vector<TextSpan>& out) const;

 private:
  struct Compiled;
  std::string pattern_;
  std::unique_ptr<Compiled> compiled_;
};

class PreTokenizer {
 public:
  PreTokenizer() = default;  // no steps: the whole text is one piece
  explicit PreTokenizer(const std::vector<std::string>& patterns);

  bool empty() const { return steps_.empty(); }
  const std::vector<RegexSplitStep>& steps() const { return steps_; }
  // Replaces `out` with the pre-tokens of `text` (valid UTF-8, under 4 GiB), in order.
  void split(std::string_view text, std::vector<TextSpan>& out) const;

 private:
  std::vector<RegexSplitStep> steps_;
};

// The three Split regexes of DeepSeek-V3's tokenizer.json, in order (digits in runs of up to 3,
// CJK runs, then words / punctuation / whitespace).
const std::vector<std::string>& deepseek_v3_split_patterns();

}  // namespace dsa::text

#include "text/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <limits>

#include "core/error.h"
#include "core/printable.h"
#include "text/utf8.h"

namespace dsa::text {
namespace {

// Oniguruma's Unicode `\s`: U+0009..U+000D, U+0085 and the separators (Zs, Zl, Zp).
constexpr std::string_view kWhitespaceItems = "\\t\\n\\x0B\\f\\r\\x{85}\\p{Z}";

struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};

}  // namespace

std::string translate_hf_regex(std::string_view pattern) {
  std::string out;
  bool in_class = false;
  size_t class_start = 0;  // index just after '[' or "[^": a ']' there is a literal
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[++i];
      if (e == 's') {
        out += in_class ? std::string(kWhitespaceItems) : "[" + std::string(kWhitespaceItems) + "]";
      } else if (e == 'S') {
        if (in_class) {
          fail("regex '{}': \\S inside a character class is not supported",
               printable_excerpt(pattern));
        }
        out += "[^" + std::string(kWhitespaceItems) + "]";
      } else {
        out += c;
        out += e;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      class_start = i + 1;
      if (class_start < pattern.size() && pattern[class_start] == '^') ++class_start;
    } else if (in_class && c == ']' && i != class_start) {
      in_class = false;
    }
    out += c;
  }
  return out;
}

struct RegexSplitStep::Compiled {
  pcre2_code* code = nullptr;
  ~Compiled() { pcre2_code_free(code); }
};

RegexSplitStep::RegexSplitStep(std::string_view pattern)
    : pattern_(pattern), compiled_(std::make_unique<Compiled>()) {
  const std::string translated = translate_hf_regex(pattern);
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  compiled_->code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                    PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
  if (!compiled_->code) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    fail("regex '{}' does not compile (as PCRE2 '{}'): {} at offset {}", printable_excerpt(pattern),
         printable_excerpt(translated), reinterpret_cast<const char*>(message), error_offset);
  }
  // JIT is an optimisation: without it (an unsupported CPU) pcre2_match still works.
  pcre2_jit_compile(compiled_->code, PCRE2_JIT_COMPLETE);
}

RegexSplitStep::~RegexSplitStep() = default;
RegexSplitStep::RegexSplitStep(RegexSplitStep&&) noexcept = default;
RegexSplitStep& RegexSplitStep::operator=(RegexSplitStep&&) noexcept = default;

void RegexSplitStep::split(std::string_view text, TextSpan span, std::vector<TextSpan>& out) const {
  // One match-data block per thread and pattern size: pcre2_match needs writable scratch.
  thread_local std::unique_ptr<pcre2_match_data, MatchDataDeleter> match_data(
      pcre2_match_data_create(8, nullptr));
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data() + span.begin);
  const size_t length = span.end - span.begin;
  size_t search_from = 0;
  size_t piece_start = 0;
  while (search_from < length) {
    // The subject is the piece alone, so lookarounds never see the neighbouring pieces (as HF).
    const int rc = pcre2_match(compiled_->code, subject, length, search_from, PCRE2_NO_UTF_CHECK,
                               match_data.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof(message));
      fail("regex '{}' failed while matching: {}", printable_excerpt(pattern_),
           reinterpret_cast<const char*>(message));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match_data.get());
    const size_t match_begin = ovector[0];
    const size_t match_end = ovector[1];
    if (match_end == match_begin) {  // an empty match splits nothing; step over one character
      size_t next = match_end;
      next_code_point(std::string_view(text.data() + span.begin, length), next);
      search_from = next;
      continue;
    }
    if (match_begin > piece_start) {
      out.push_back({span.begin + static_cast<uint32_t>(piece_start),
                     span.begin + static_cast<uint32_t>(match_begin)});
    }
    out.push_back({span.begin + static_cast<uint32_t>(match_begin),
                   span.begin + static_cast<uint32_t>(match_end)});
    piece_start = search_from = match_end;
  }
  if (piece_start < length) {
    out.push_back({span.begin + static_cast<uint32_t>(piece_start), span.end});
  }
}

PreTokenizer::PreTokenizer(const std::vector<std::string>& patterns) {
  steps_.reserve(patterns.size());
  for (const auto& pattern : patterns) steps_.emplace_back(pattern);
}

void PreTokenizer::split(std::string_view text, std::vector<TextSpan>& out) const {
  DSA_CHECK(text.size() < std::numeric_limits<uint32_t>::max(), "text of {} bytes is too long",
            text.size());
  out.clear();
  if (text.empty()) return;
  out.push_back({0, static_cast<uint32_t>(text.size())});
  thread_local std::vector<TextSpan> next;
  for (const auto& step : steps_) {
    next.clear();
    for (const TextSpan span : out) step.split(text, span, next);
    out.swap(next);
  }
}

const std::vector<std::string>& deepseek_v3_split_patterns() {
  static const std::vector<std::string> patterns = {
      "\\p{N}{1,3}",
      "[\u4E00-\u9FA5\u3040-\u309F\u30A0-\u30FF]+",
      "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+"
      "|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
      "| ?[\\p{P}\\p{S}]+[\r\n]*"
      "|\\s*[\r\n]+"
      "|\\s+(?!\\S)"
      "|\\s+",
  };
  return patterns;
}

}  // namespace dsa::text

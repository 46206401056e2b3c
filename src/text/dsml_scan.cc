#include "text/dsml_scan.h"

#include <fmt/format.h>

#include <algorithm>

#include "text/utf8.h"

namespace dsa::text {

std::optional<MarkerMatch> find_first_marker(std::string_view text,
                                             std::span<const std::string_view> markers) {
  // One pass over the text, stopping at the first byte where a marker starts. Searching for each
  // marker in turn would scan the whole text for every marker that is absent, at every call: the
  // parser calls this once per tag, which made a long completion fed at once quadratic.
  std::string first_bytes;
  for (const std::string_view marker : markers) {
    if (!marker.empty() && first_bytes.find(marker.front()) == std::string::npos) {
      first_bytes += marker.front();
    }
  }
  for (size_t position = text.find_first_of(first_bytes); position != std::string_view::npos;
       position = text.find_first_of(first_bytes, position + 1)) {
    const std::string_view rest = text.substr(position);
    for (size_t i = 0; i < markers.size(); ++i) {
      if (!markers[i].empty() && rest.starts_with(markers[i])) return MarkerMatch{position, i};
    }
  }
  return std::nullopt;
}

size_t partial_marker_suffix(std::string_view text, std::span<const std::string_view> markers) {
  size_t longest = 0;
  for (const std::string_view marker : markers) {
    const size_t max_length = std::min(text.size(), marker.size() - 1);
    for (size_t length = max_length; length > longest; --length) {
      if (text.substr(text.size() - length) == marker.substr(0, length)) {
        longest = length;
        break;
      }
    }
  }
  return longest;
}

std::string_view utf8_prefix(std::string_view text, size_t max_bytes) {
  const std::string_view prefix = text.substr(0, max_bytes);
  return prefix.substr(0, prefix.size() - incomplete_utf8_tail(prefix));
}

bool is_markup_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

namespace {

// Walks a header left to right. The first step that fails, or that runs out of text before it can
// decide, stops the walk: later steps do nothing, and result() reports that step.
class HeaderCursor {
 public:
  explicit HeaderCursor(std::string_view text) : text_(text) {}

  void skip_space() {
    if (status_ != MatchStatus::kMatched) return;
    while (pos_ < text_.size() && is_markup_space(text_[pos_])) ++pos_;
  }

  void literal(std::string_view expected) {
    if (status_ != MatchStatus::kMatched) return;
    const std::string_view rest = text_.substr(pos_);
    size_t same = 0;
    while (same < rest.size() && same < expected.size() && rest[same] == expected[same]) ++same;
    if (same == expected.size()) {
      pos_ += same;
    } else if (same == rest.size()) {
      status_ = MatchStatus::kNeedMore;
    } else {
      mismatch(expected, pos_, same + 1);  // the text up to the byte that differs
    }
  }

  // The text up to the next double quote, which is consumed. A name never spans a tag: '<', '>'
  // or a line break before the quote means the quote is missing.
  void quoted_rest(std::string& out) {
    if (status_ != MatchStatus::kMatched) return;
    const size_t end = text_.find_first_of("\"<>\n", pos_);
    if (end == std::string_view::npos) {
      status_ = MatchStatus::kNeedMore;
      return;
    }
    if (text_[end] != '"') return mismatch("a closing quote", end, 1);
    out = std::string(text_.substr(pos_, end - pos_));
    pos_ = end + 1;
  }

  // Fails the walk with its own problem text.
  void reject(std::string problem) {
    if (status_ != MatchStatus::kMatched) return;
    status_ = MatchStatus::kMismatch;
    problem_ = std::move(problem);
  }

  HeaderMatch result(HeaderMatch match) const {
    match.status = status_;
    match.length = pos_;
    match.problem = problem_;
    if (status_ == MatchStatus::kNeedMore && text_.size() >= kMaxHeaderBytes) {
      match.status = MatchStatus::kMismatch;
      match.problem = fmt::format("tag longer than {} bytes", kMaxHeaderBytes);
    }
    return match;
  }

 private:
  // The problem text quotes `length` bytes from `from`: what was seen up to the deciding byte, so
  // that the message does not depend on how much text had arrived.
  void mismatch(std::string_view expected, size_t from, size_t length) {
    status_ = MatchStatus::kMismatch;
    problem_ = fmt::format("expected {} but found \"{}\"", expected,
                           utf8_prefix(text_.substr(from), std::min<size_t>(length, 24)));
  }

  std::string_view text_;
  size_t pos_ = 0;
  MatchStatus status_ = MatchStatus::kMatched;
  std::string problem_;
};

}  // namespace

HeaderMatch match_invoke_header(std::string_view text) {
  HeaderCursor cursor(text.substr(0, kMaxHeaderBytes));
  HeaderMatch match;
  cursor.skip_space();
  cursor.literal("name=\"");
  cursor.quoted_rest(match.name);
  cursor.skip_space();
  cursor.literal(">");
  return cursor.result(std::move(match));
}

HeaderMatch match_parameter_header(std::string_view text) {
  HeaderCursor cursor(text.substr(0, kMaxHeaderBytes));
  HeaderMatch match;
  std::string flag;
  cursor.skip_space();
  cursor.literal("name=\"");
  cursor.quoted_rest(match.name);
  cursor.skip_space();
  cursor.literal("string=\"");
  cursor.quoted_rest(flag);
  if (flag != "true" && flag != "false") {  // no-op when the walk already stopped
    cursor.reject(
        fmt::format("string=\"{}\" is neither \"true\" nor \"false\"", utf8_prefix(flag, 24)));
  }
  match.is_string = flag == "true";
  cursor.skip_space();
  cursor.literal(">");
  return cursor.result(std::move(match));
}

}  // namespace dsa::text

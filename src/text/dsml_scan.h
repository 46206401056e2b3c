// Scanning helpers for the streaming output parser: finding markers in text that arrives in
// pieces, and matching the headers of DSML <｜DSML｜invoke> and <｜DSML｜parameter> tags.
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace dsa::text {

struct MarkerMatch {
  size_t position = 0;  // byte offset of the match in the text
  size_t marker = 0;    // index into the marker list
};

// The earliest occurrence of any marker; at equal positions the one listed first. Linear in the
// bytes up to the match (the whole text when there is none), whatever the markers.
std::optional<MarkerMatch> find_first_marker(std::string_view text,
                                             std::span<const std::string_view> markers);

// The length of the longest suffix of `text` that is a proper prefix of some marker: the bytes to
// hold back because the next piece may complete a marker.
size_t partial_marker_suffix(std::string_view text, std::span<const std::string_view> markers);

// The first `max_bytes` bytes of `text` less an unfinished UTF-8 sequence at their end (for
// quoting text in messages).
std::string_view utf8_prefix(std::string_view text, size_t max_bytes);

enum class MatchStatus { kNeedMore, kMatched, kMismatch };

struct HeaderMatch {
  MatchStatus status = MatchStatus::kNeedMore;
  size_t length = 0;       // bytes of the header, when matched
  std::string name;        // the name attribute
  bool is_string = false;  // parameter headers: string="true"
  std::string problem;     // what did not match, when mismatched
};

// A header must be complete within this many bytes (the parser holds a header until it is
// complete). Only this much of the text is looked at, so the verdict on a long header is the same
// whether it arrived whole or in pieces.
inline constexpr size_t kMaxHeaderBytes = 1024;

// The rest of an invoke tag after "<｜DSML｜invoke": ws* name="NAME" ws* >
HeaderMatch match_invoke_header(std::string_view text);

// The rest of a parameter tag after "<｜DSML｜parameter":
//   ws* name="KEY" ws* string="(true|false)" ws* >
HeaderMatch match_parameter_header(std::string_view text);

// Space, tab, CR or LF.
bool is_markup_space(char c);

}  // namespace dsa::text

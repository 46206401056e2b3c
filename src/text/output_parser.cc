#include "text/output_parser.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <utility>

#include "core/error.h"
#include "text/chat_json.h"
#include "text/dsml_scan.h"
#include "text/dsml_tokens.h"
#include "text/utf8.h"

namespace dsa::text {
namespace {

using Kind = ParserEvent::Kind;

constexpr std::array<std::string_view, 2> kReasoningMarkers = {tokens::kThinkEnd, tokens::kEos};
// The template puts "\n\n" before a tool block; one or none is accepted too. The line breaks are
// part of the markup, not of the content.
constexpr std::array<std::string_view, 4> kContentMarkers = {
    "\n\n<｜DSML｜function_calls", "\n<｜DSML｜function_calls", tokens::kFunctionCallsOpen,
    tokens::kEos};
constexpr std::array<std::string_view, 2> kValueMarkers = {tokens::kParameterClose, tokens::kEos};

constexpr size_t longest_marker() {
  size_t longest = 0;
  for (const auto& markers : {std::span<const std::string_view>(kReasoningMarkers),
                              std::span<const std::string_view>(kContentMarkers),
                              std::span<const std::string_view>(kValueMarkers)}) {
    for (const std::string_view marker : markers) longest = std::max(longest, marker.size());
  }
  return longest;
}
static_assert(OutputParser::kMaxHoldback == longest_marker() - 1);

size_t common_prefix(std::string_view a, std::string_view b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

// nlohmann's lexer takes a NUL byte for the end of input; raw NUL is never valid JSON.
bool is_json_text(std::string_view text) {
  return text.find('\0') == std::string_view::npos && Json::accept(text);
}

bool is_delta(Kind kind) {
  return kind == Kind::kReasoning || kind == Kind::kContent || kind == Kind::kToolCallArguments;
}

}  // namespace

OutputParser::OutputParser(ThinkingMode mode)
    : state_(mode == ThinkingMode::kThinking ? State::kReasoning : State::kContent) {}

std::vector<ParserEvent> OutputParser::feed(std::string_view piece) {
  DSA_CHECK(!finished_, "OutputParser::feed after finish");
  buffer_.append(piece);
  while (step()) {
  }
  // Drop consumed bytes once they dominate, so long completions stay linear.
  if (start_ > 4096 && start_ * 2 > buffer_.size()) {
    buffer_.erase(0, start_);
    start_ = 0;
  }
  return std::exchange(events_, {});
}

std::vector<ParserEvent> OutputParser::finish() {
  DSA_CHECK(!finished_, "OutputParser::finish called twice");
  finished_ = true;
  for (;;) {
    while (step()) {
    }
    const bool in_block =
        state_ != State::kReasoning && state_ != State::kContent && state_ != State::kDone;
    if (!in_block) break;
    fail_markup("the text ended inside a tool-call block");
  }
  if (state_ != State::kDone) {
    emit(state_ == State::kReasoning ? Kind::kReasoning : Kind::kContent, pending());
    consume(pending().size());
    commit();
  }
  return std::exchange(events_, {});
}

bool OutputParser::step() {
  switch (state_) {
    case State::kReasoning:
      return step_text(Kind::kReasoning);
    case State::kContent:
      return step_text(Kind::kContent);
    case State::kBlockOpen:
      return step_block_open();
    case State::kBlock:
    case State::kInvoke:
      return step_tag_choice();
    case State::kInvokeHeader:
    case State::kParamHeader:
      return step_header();
    case State::kStringValue:
    case State::kJsonValue:
      return step_value();
    case State::kDone:
      if (!pending().empty() && !reported_trailing_text_) {
        reported_trailing_text_ = true;
        emit(Kind::kError,
             fmt::format("text after {} at byte {} was ignored", tokens::kEos, offset_));
      }
      consume(pending().size());
      commit();
      return false;
  }
  return false;
}

bool OutputParser::step_text(Kind kind) {
  const std::span<const std::string_view> markers =
      kind == Kind::kReasoning ? std::span<const std::string_view>(kReasoningMarkers)
                               : std::span<const std::string_view>(kContentMarkers);
  const std::string_view text = pending();
  const auto match = find_first_marker(text, markers);
  if (!match) {
    size_t end = text.size() - partial_marker_suffix(text, markers);
    end -= incomplete_utf8_tail(text.substr(0, end));
    emit(kind, text.substr(0, end));
    consume(end);
    commit();
    return false;
  }
  emit(kind, text.substr(0, match->position));
  consume(match->position);
  commit();
  const std::string_view marker = markers[match->marker];
  consume(marker.size());
  if (marker == tokens::kEos) {
    commit();
    state_ = State::kDone;
  } else if (marker == tokens::kThinkEnd) {
    commit();
    state_ = State::kContent;
  } else {
    state_ = State::kBlockOpen;  // the marker stays in pending_raw_ until a tool call begins
  }
  return true;
}

bool OutputParser::step_block_open() {
  if (pending().empty()) return false;
  if (pending().front() != '>') {
    fail_markup(fmt::format("expected \">\" after {}", tokens::kFunctionCallsOpen));
    return true;
  }
  consume(1);
  state_ = State::kBlock;
  return true;
}

// Between tags: either of two tags may come next, after optional white space.
bool OutputParser::step_tag_choice() {
  const std::string_view text = pending();
  size_t spaces = 0;
  while (spaces < text.size() && is_markup_space(text[spaces])) ++spaces;
  consume(spaces);
  const std::string_view rest = pending();
  if (rest.empty()) return false;

  const bool in_block = state_ == State::kBlock;
  const std::string_view open = in_block ? tokens::kInvokeOpen : tokens::kParameterOpen;
  const std::string_view close = in_block ? tokens::kFunctionCallsClose : tokens::kInvokeClose;
  if (rest.starts_with(open)) {
    consume(open.size());
    state_ = in_block ? State::kInvokeHeader : State::kParamHeader;
    return true;
  }
  if (rest.starts_with(close)) {
    consume(close.size());
    if (in_block) {
      state_ = State::kContent;
    } else {
      emit(Kind::kToolCallArguments, parameter_names_.empty() ? "{}" : "}", open_tool_index_);
      emit(Kind::kToolCallEnd, "", open_tool_index_);
      open_tool_index_ = -1;
      state_ = State::kBlock;
    }
    commit();
    return true;
  }
  const size_t same = std::max(common_prefix(rest, open), common_prefix(rest, close));
  if (same == rest.size()) return false;  // a tag still arriving
  // Quote the text up to the byte that rules out both tags: the same however the text was cut.
  fail_markup(
      fmt::format("expected {} or {} but found \"{}\"", open, close, utf8_prefix(rest, same + 1)));
  return true;
}

bool OutputParser::step_header() {
  const bool invoke = state_ == State::kInvokeHeader;
  const HeaderMatch match =
      invoke ? match_invoke_header(pending()) : match_parameter_header(pending());
  if (match.status == MatchStatus::kNeedMore) return false;
  const std::string_view tag = invoke ? tokens::kInvokeOpen : tokens::kParameterOpen;
  if (match.status == MatchStatus::kMismatch) {
    fail_markup(fmt::format("in {} tag: {}", tag, match.problem));
    return true;
  }
  if (invoke) {
    consume(match.length);
    open_tool_index_ = next_tool_index_++;
    open_tool_name_ = match.name;
    parameter_names_.clear();
    emit(Kind::kToolCallBegin, match.name, open_tool_index_);
    commit();
    state_ = State::kInvoke;
    return true;
  }
  if (parameter_names_.count(match.name) != 0) {
    fail_markup(fmt::format("duplicate parameter \"{}\"", match.name));
    return true;
  }
  consume(match.length);
  std::string prefix = parameter_names_.empty() ? "{" : ", ";
  append_python_json_string(prefix, match.name);
  prefix += ": ";
  if (match.is_string) prefix += '"';
  emit(Kind::kToolCallArguments, prefix, open_tool_index_);
  parameter_names_.insert(match.name);
  last_parameter_name_ = match.name;
  commit();
  state_ = match.is_string ? State::kStringValue : State::kJsonValue;
  return true;
}

// A parameter value up to its closing tag. String values go out escaped as they arrive; JSON
// values are held in pending_raw_ until the tag, then checked.
bool OutputParser::step_value() {
  const std::string_view text = pending();
  const auto match = find_first_marker(text, kValueMarkers);
  size_t end = match ? match->position : text.size() - partial_marker_suffix(text, kValueMarkers);
  if (!match) end -= incomplete_utf8_tail(text.substr(0, end));
  if (state_ == State::kStringValue) {
    std::string escaped;
    append_python_json_escaped(escaped, text.substr(0, end));
    emit(Kind::kToolCallArguments, escaped, open_tool_index_);
    consume(end);
    commit();
  } else {
    consume(end);
  }
  if (!match) return false;
  if (kValueMarkers[match->marker] == tokens::kEos) {
    fail_markup(fmt::format("{} inside parameter \"{}\"", tokens::kEos, last_parameter_name_));
    return true;
  }
  if (state_ == State::kStringValue) {
    emit(Kind::kToolCallArguments, "\"", open_tool_index_);
  } else {
    const std::string_view value = pending_raw_;  // the header was committed before the value
    std::string json(value);
    if (!is_json_text(value)) {  // not JSON after all: keep the text as a string
      json.clear();
      append_python_json_string(json, value);
    }
    emit(Kind::kToolCallArguments, json, open_tool_index_);
  }
  consume(tokens::kParameterClose.size());
  commit();
  state_ = State::kInvoke;
  return true;
}

std::string_view OutputParser::pending() const { return std::string_view(buffer_).substr(start_); }

void OutputParser::consume(size_t bytes) {
  pending_raw_.append(buffer_, start_, bytes);
  start_ += bytes;
  offset_ += bytes;
}

void OutputParser::commit() { pending_raw_.clear(); }

void OutputParser::emit(Kind kind, std::string_view text, int tool_index) {
  if (is_delta(kind)) {
    if (text.empty()) return;
    if (!events_.empty() && events_.back().kind == kind &&
        events_.back().tool_index == tool_index) {
      events_.back().text += text;
      return;
    }
  }
  events_.push_back(ParserEvent{kind, std::string(text), tool_index});
}

void OutputParser::fail_markup(std::string_view problem) {
  std::string message = fmt::format("malformed tool-call markup at byte {}: {}", offset_, problem);
  if (open_tool_index_ >= 0) {
    message +=
        fmt::format(" (tool call {} \"{}\" left unfinished)", open_tool_index_, open_tool_name_);
  }
  emit(Kind::kError, message);
  emit(Kind::kContent, pending_raw_);
  commit();
  open_tool_index_ = -1;
  state_ = State::kContent;
}

void apply_event(ParsedCompletion& completion, const ParserEvent& event) {
  switch (event.kind) {
    case Kind::kReasoning:
      completion.reasoning += event.text;
      break;
    case Kind::kContent:
      completion.content += event.text;
      break;
    case Kind::kToolCallBegin:
      DSA_CHECK(event.tool_index == static_cast<int>(completion.tool_calls.size()),
                "tool call {} begun out of order", event.tool_index);
      completion.tool_calls.push_back(ParsedToolCall{event.text, "", false});
      break;
    case Kind::kToolCallArguments:
    case Kind::kToolCallEnd: {
      DSA_CHECK(event.tool_index >= 0 &&
                    event.tool_index < static_cast<int>(completion.tool_calls.size()),
                "event for unknown tool call {}", event.tool_index);
      ParsedToolCall& call = completion.tool_calls[static_cast<size_t>(event.tool_index)];
      if (event.kind == Kind::kToolCallEnd) {
        call.complete = true;
      } else {
        call.arguments += event.text;
      }
      break;
    }
    case Kind::kError:
      completion.errors.push_back(event.text);
      break;
  }
}

ParsedCompletion parse_completion(std::string_view text, ThinkingMode mode) {
  OutputParser parser(mode);
  ParsedCompletion completion;
  for (const ParserEvent& event : parser.feed(text)) apply_event(completion, event);
  for (const ParserEvent& event : parser.finish()) apply_event(completion, event);
  return completion;
}

}  // namespace dsa::text

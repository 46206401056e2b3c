// Parses what DeepSeek-V3.2 generates after a prompt: reasoning (up to </think>), content, and DSML
// tool calls, turned into OpenAI-style deltas as the text streams in. Grammar and policies are in
// docs/chat-format.md; in short:
//   completion := [reasoning "</think>"] content [tool-block content]* ["<｜end▁of▁sentence｜>"]
// Reasoning is present when the prompt ended with <think> (thinking mode). A tool block starts at
// "<｜DSML｜function_calls" (the one or two line breaks before it belong to the markup).
//
// The parser never throws on model output. Malformed or truncated markup produces a kError event
// naming what was expected and the byte offset, and the text that could not be parsed is passed on
// as content, so nothing the model wrote is lost. A tool call whose markup breaks after it began
// simply gets no kToolCallEnd.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "text/chat_encoding.h"

namespace dsa::text {

struct ParserEvent {
  enum class Kind {
    kReasoning,          // text: a piece of reasoning_content
    kContent,            // text: a piece of content
    kToolCallBegin,      // tool_index, text: the function name
    kToolCallArguments,  // tool_index, text: the next piece of the arguments JSON
    kToolCallEnd,        // tool_index: the arguments are complete
    kError,              // text: what was malformed and where
  };
  Kind kind = Kind::kContent;
  std::string text;
  int tool_index = -1;  // 0-based over the whole completion; -1 for other kinds

  bool operator==(const ParserEvent&) const = default;
};

// Incremental parser. Feed the decoded text in pieces of any size (token texts); each call
// returns the events that the new text settles. Text is held back only while it may be the start
// of a marker (at most kMaxHoldback bytes in reasoning, content and string arguments) or an
// unfinished UTF-8 character, so every emitted piece is whole UTF-8 when the input is.
//
// Tool-call arguments are emitted as a JSON object built from the parameters in order:
// string="true" values are streamed as JSON strings while they arrive; string="false" values are
// emitted whole at their closing tag, verbatim when they are valid JSON and otherwise as a JSON
// string of the raw text (so the arguments are always valid JSON).
class OutputParser {
 public:
  // The longest marker minus one byte (`<｜end▁of▁sentence｜>`, `\n\n<｜DSML｜function_calls`).
  static constexpr size_t kMaxHoldback = 26;

  // kThinking: the prompt ended with <think>, so the text starts inside reasoning.
  explicit OutputParser(ThinkingMode mode);

  std::vector<ParserEvent> feed(std::string_view piece);
  // End of the text: releases held text and reports unfinished markup. Call once, last.
  std::vector<ParserEvent> finish();

  // Bytes fed but not yet reflected in any event.
  size_t held_bytes() const { return pending().size() + pending_raw_.size(); }

 private:
  enum class State {
    kReasoning,     // before </think>
    kContent,       // plain text
    kBlockOpen,     // after "<｜DSML｜function_calls": expects '>'
    kBlock,         // between invokes: expects an invoke or the end of the block
    kInvokeHeader,  // after "<｜DSML｜invoke": name="N">
    kInvoke,        // between parameters: expects a parameter or the end of the invoke
    kParamHeader,   // after "<｜DSML｜parameter": name="K" string="B">
    kStringValue,   // a string="true" value, streamed
    kJsonValue,     // a string="false" value, held until its closing tag
    kDone,          // after <｜end▁of▁sentence｜>
  };

  // One step of the state machine over buffer_; false when it needs more text.
  bool step();
  bool step_text(ParserEvent::Kind kind);
  bool step_block_open();
  bool step_tag_choice();
  bool step_header();
  bool step_value();

  std::string_view pending() const;  // received, not yet consumed
  void consume(size_t bytes);        // moves bytes from pending() to pending_raw_
  void commit();                     // pending_raw_ is now reflected in events
  void emit(ParserEvent::Kind kind, std::string_view text, int tool_index = -1);
  // Reports malformed markup at the front of pending() and falls back to content: the consumed
  // markup in pending_raw_ becomes content, and scanning resumes as content where it failed.
  void fail_markup(std::string_view problem);

  State state_;
  std::string buffer_;  // received text; buffer_[start_:] is not consumed yet
  size_t start_ = 0;
  // Consumed markup that no event reflects yet: the tool block's opening before its first tool
  // call, a tag being parsed, a string="false" value before its closing tag.
  std::string pending_raw_;
  size_t offset_ = 0;  // byte offset of pending() in the whole completion
  std::vector<ParserEvent> events_;

  int next_tool_index_ = 0;
  int open_tool_index_ = -1;  // the tool call begun and not yet ended
  std::string open_tool_name_;
  // The open tool call's parameter names, for duplicates: a hash set, since a tool call may carry
  // any number of parameters and each one is checked against all before it.
  std::unordered_set<std::string> parameter_names_;
  std::string last_parameter_name_;  // the parameter whose value is being read
  bool reported_trailing_text_ = false;
  bool finished_ = false;
};

struct ParsedToolCall {
  std::string name;
  std::string arguments;  // JSON object text
  bool complete = false;  // its end was parsed
};

// A completion folded from parser events.
struct ParsedCompletion {
  std::string reasoning;
  std::string content;
  std::vector<ParsedToolCall> tool_calls;
  std::vector<std::string> errors;  // empty when the markup was well formed
};

// Adds one event to a completion (what a client does with OpenAI's streamed deltas).
void apply_event(ParsedCompletion& completion, const ParserEvent& event);

// Parses a whole completion: OutputParser fed `text` at once, then finished.
ParsedCompletion parse_completion(std::string_view text, ThinkingMode mode);

}  // namespace dsa::text

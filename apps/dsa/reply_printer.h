// Prints a reply of `dsa run` / `dsa chat` while it streams.
//
// Raw text (no chat encoding) goes to stdout as it is. A chat reply goes through OutputParser:
// content to stdout; reasoning dim on stdout when stdout is a terminal, else to stderr (so a pipe
// or file receives the answer alone and the reasoning still shows); a tool call as a line
// "[tool call NAME ARGUMENTS]" on stdout (not executed); malformed markup as a warning on stderr.
#pragma once

#include <cstdio>
#include <optional>
#include <string_view>

#include "text/chat_encoding.h"
#include "text/output_parser.h"

namespace dsa::cli {

class ReplyPrinter {
 public:
  // nullopt: raw text; else the mode the prompt was encoded in.
  explicit ReplyPrinter(std::optional<text::ThinkingMode> mode);

  void text(std::string_view piece);
  // Releases what the parser held back and ends the output line.
  void finish();
  // The reply as parsed so far (empty for raw text).
  const text::ParsedCompletion& completion() const { return completion_; }

 private:
  void print(const text::ParserEvent& event);
  void out(std::FILE* stream, std::string_view text);
  void end_reasoning();

  std::optional<text::OutputParser> parser_;
  text::ParsedCompletion completion_;
  bool terminal_;              // stdout is a terminal
  bool in_reasoning_ = false;  // reasoning printed, not yet closed
  char last_out_ = '\n';       // the last character written to stdout
  char last_err_ = '\n';       // ... and to stderr
};

}  // namespace dsa::cli

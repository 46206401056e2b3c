#include "reply_printer.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>

namespace dsa::cli {
namespace {

constexpr std::string_view kDim = "\x1b[2m";
constexpr std::string_view kNormal = "\x1b[0m";

}  // namespace

ReplyPrinter::ReplyPrinter(std::optional<text::ThinkingMode> mode)
    : terminal_(isatty(fileno(stdout)) == 1) {
  if (mode) parser_.emplace(*mode);
}

void ReplyPrinter::out(std::FILE* stream, std::string_view text) {
  if (text.empty()) return;
  std::fwrite(text.data(), 1, text.size(), stream);
  std::fflush(stream);
  (stream == stdout ? last_out_ : last_err_) = text.back();
}

void ReplyPrinter::end_reasoning() {
  if (!in_reasoning_) return;
  in_reasoning_ = false;
  if (terminal_) out(stdout, kNormal);
  out(terminal_ ? stdout : stderr, "\n");  // the answer starts on a line of its own
}

void ReplyPrinter::print(const text::ParserEvent& e) {
  using Kind = text::ParserEvent::Kind;
  text::apply_event(completion_, e);
  if (e.kind == Kind::kReasoning) {
    if (!in_reasoning_ && terminal_) out(stdout, kDim);
    in_reasoning_ = true;
    out(terminal_ ? stdout : stderr, e.text);
    return;
  }
  end_reasoning();
  switch (e.kind) {
    case Kind::kContent:
      out(stdout, e.text);
      break;
    case Kind::kToolCallBegin:
      if (last_out_ != '\n') out(stdout, "\n");
      out(stdout, fmt::format("[tool call {} ", e.text));
      break;
    case Kind::kToolCallArguments:
      out(stdout, e.text);
      break;
    case Kind::kToolCallEnd:
      out(stdout, "]\n");
      break;
    case Kind::kError:
      if (last_err_ != '\n') out(stderr, "\n");
      out(stderr, fmt::format("dsa: warning: the reply's markup: {}\n", e.text));
      break;
    case Kind::kReasoning:
      break;
  }
}

void ReplyPrinter::text(std::string_view piece) {
  if (!parser_) {
    out(stdout, piece);
    return;
  }
  for (const text::ParserEvent& e : parser_->feed(piece)) print(e);
}

void ReplyPrinter::finish() {
  if (parser_) {
    for (const text::ParserEvent& e : parser_->finish()) print(e);
    parser_.reset();
  }
  end_reasoning();
  if (last_out_ != '\n') out(stdout, "\n");
}

}  // namespace dsa::cli

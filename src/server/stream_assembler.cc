#include "server/stream_assembler.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "core/error.h"
#include "core/printable.h"
#include "server/ids.h"
#include "server/json_out.h"
#include "text/dsml_tokens.h"

namespace dsa::server {
namespace {

using Kind = text::ParserEvent::Kind;
namespace tokens = text::tokens;

}  // namespace

StreamAssembler::StreamAssembler(AssemblerOptions options) : options_(std::move(options)) {
  if (options_.mode) parser_.emplace(*options_.mode);
  if (!options_.make_call_id) options_.make_call_id = [] { return random_id("call_"); };
}

// The parser takes the text a byte at a time. Its events carry no offsets, and one byte settles
// at most one tag, so after each byte the raw text up to `reflected` is exactly what the events so
// far stand for: that is how a held call's markup is found again in raw_ (call_start, end_call,
// break_call). The parser's work per byte is small and bounded (it holds back at most a marker),
// which is nothing next to a forward pass per token.
std::vector<Delta> StreamAssembler::feed(std::string_view text) {
  if (!parser_) {
    raw_.append(text);
    emit_text(Delta::Kind::kContent, text);
    return std::exchange(out_, {});
  }
  for (const char c : text) {
    raw_.push_back(c);
    const std::vector<text::ParserEvent> events = parser_->feed(std::string_view(&c, 1));
    if (!events.empty()) process(events, raw_.size() - parser_->held_bytes());
  }
  return std::exchange(out_, {});
}

std::vector<Delta> StreamAssembler::finish(StopReason stop) {
  if (parser_) {
    process(parser_->finish(), raw_.size());
    if (held_) {  // the parser reports unfinished markup, so this is only a safety net
      const std::vector<text::ParserEvent> none;
      warnings_.push_back("the text ended inside a tool call");
      break_call(none, 0, raw_.size());
    }
  }
  if (stop == StopReason::kMaxTokens || stop == StopReason::kContextFull) {
    finish_reason_ = "length";
  } else {
    finish_reason_ = accepted_ > 0 ? "tool_calls" : "stop";
  }
  if (options_.policy.require_tool_call && accepted_ == 0) {
    warnings_.push_back(
        options_.policy.required_name.empty()
            ? "tool_choice is \"required\" but the reply has no valid tool call"
            : fmt::format("tool_choice names \"{}\" but the reply has no valid call to it",
                          options_.policy.required_name));
  }
  if (options_.policy.expect_json && !Json::accept(content_)) {
    warnings_.push_back(
        "response_format asks for JSON but the content is not valid JSON (the format is asked "
        "for in the prompt, not enforced while sampling)");
  }
  return std::exchange(out_, {});
}

void StreamAssembler::emit_text(Delta::Kind kind, std::string_view text) {
  if (text.empty()) return;
  if (kind == Delta::Kind::kContent) content_.append(text);
  if (!out_.empty() && out_.back().kind == kind) {
    out_.back().text.append(text);
    return;
  }
  Delta d;
  d.kind = kind;
  d.text = std::string(text);
  out_.push_back(std::move(d));
}

// `reflected`: the end of the raw text that these events account for (the parser holds back the
// rest). Events arrive in the order of the text.
void StreamAssembler::process(const std::vector<text::ParserEvent>& events, size_t reflected) {
  for (size_t i = 0; i < events.size(); ++i) {
    const text::ParserEvent& e = events[i];
    switch (e.kind) {
      case Kind::kReasoning:
        emit_text(Delta::Kind::kReasoning, e.text);
        break;
      case Kind::kContent:
        emit_text(Delta::Kind::kContent, e.text);
        break;
      case Kind::kToolCallBegin:
        DSA_CHECK(!held_, "a tool call began inside another");
        held_ = HeldCall{e.text, "", call_start(reflected)};
        break;
      case Kind::kToolCallArguments:
        DSA_CHECK(held_.has_value(), "tool-call arguments outside a call");
        held_->arguments += e.text;
        break;
      case Kind::kToolCallEnd:
        DSA_CHECK(held_.has_value(), "the end of a tool call that did not begin");
        end_call(reflected);
        break;
      case Kind::kError:
        warnings_.push_back(printable(e.text));
        if (held_) {
          break_call(events, i, reflected);
          // break_call emitted the content events that followed the error along with the
          // call's markup; skip them.
          while (i + 1 < events.size() && events[i + 1].kind == Kind::kContent) ++i;
        }
        break;
    }
  }
}

// Where the markup of the call that just began starts: at the block's opening (with the line
// breaks before it, which the parser counts as markup) for the block's first call, else at the
// call's own <｜DSML｜invoke. Both lie before `reflected`, since the call's header was parsed.
size_t StreamAssembler::call_start(size_t reflected) const {
  const std::string_view raw(raw_.data(), reflected);
  const size_t invoke = raw.rfind(tokens::kInvokeOpen);
  const size_t block = raw.rfind(tokens::kFunctionCallsOpen);
  size_t start = invoke;
  if (block != std::string_view::npos && block >= released_end_ &&
      (invoke == std::string_view::npos || block < invoke)) {
    start = block;
    for (int n = 0; n < 2 && start > released_end_ && raw[start - 1] == '\n'; ++n) --start;
  }
  if (start == std::string_view::npos || start < released_end_) start = released_end_;
  return std::min(start, reflected);
}

std::string StreamAssembler::rejection(const std::string& name) const {
  const ReplyPolicy& p = options_.policy;
  if (!p.allow_tool_calls) return "tool_choice is \"none\"";
  if (std::find(p.declared.begin(), p.declared.end(), name) == p.declared.end()) {
    return "the function is not among the request's tools";
  }
  if (!p.required_name.empty() && name != p.required_name) {
    return fmt::format("tool_choice names \"{}\"", p.required_name);
  }
  if (!p.parallel_tool_calls && accepted_ >= 1) return "parallel_tool_calls is false";
  return "";
}

void StreamAssembler::end_call(size_t reflected) {
  HeldCall call = std::move(*held_);
  held_.reset();
  // The call's markup ends with the </｜DSML｜invoke> the parser just read, which (a byte at a
  // time) ends at `reflected`.
  const size_t close_size = tokens::kInvokeClose.size();
  size_t end = reflected;
  if (reflected >= call.raw_start + close_size) {
    const size_t close = raw_.rfind(tokens::kInvokeClose, reflected - close_size);
    if (close != std::string::npos && close >= call.raw_start) end = close + close_size;
  }
  released_end_ = end;
  const std::string why = rejection(call.name);
  if (!why.empty()) {
    warnings_.push_back(fmt::format("a call to \"{}\" was returned as text: {}",
                                    printable_excerpt(call.name), why));
    emit_text(Delta::Kind::kContent,
              std::string_view(raw_).substr(call.raw_start, end - call.raw_start));
    return;
  }
  Delta first;
  first.kind = Delta::Kind::kToolCall;
  first.tool_call.index = accepted_;
  first.tool_call.first = true;
  first.tool_call.id = options_.make_call_id();
  first.tool_call.name = call.name;
  out_.push_back(std::move(first));
  Delta arguments;
  arguments.kind = Delta::Kind::kToolCall;
  arguments.tool_call.index = accepted_;
  arguments.tool_call.arguments = std::move(call.arguments);  // the parser always closes the JSON
  out_.push_back(std::move(arguments));
  ++accepted_;
}

// The held call's markup broke at events[error_index]. After the error the parser passes the
// text from the point of failure on as content, verbatim; the call's markup before that point
// went into events already (its begin and arguments) and is taken from raw_ instead. So the
// content events that follow the error start at offset `resume`, and raw_[raw_start, resume) is
// the part of the call the client has not seen.
void StreamAssembler::break_call(const std::vector<text::ParserEvent>& events, size_t error_index,
                                 size_t reflected) {
  const HeldCall call = std::move(*held_);
  held_.reset();
  std::string after;  // the content events right after the error
  size_t j = error_index + 1;
  for (; j < events.size() && events[j].kind == Kind::kContent; ++j) after += events[j].text;
  size_t resume;
  if (j == events.size()) {
    resume = reflected >= after.size() ? reflected - after.size() : call.raw_start;
  } else {
    // More markup follows in the same piece of text (rare: a long piece, or hostile text);
    // the content ends where that markup begins, so find it by its text.
    resume = after.empty() ? reflected : raw_.find(after, call.raw_start);
    if (resume == std::string::npos) resume = reflected;
  }
  resume = std::clamp(resume, call.raw_start, reflected);
  emit_text(Delta::Kind::kContent,
            std::string_view(raw_).substr(call.raw_start, resume - call.raw_start));
  emit_text(Delta::Kind::kContent, after);
  released_end_ = resume + after.size();
}

void add_delta(AssembledReply& reply, const Delta& delta) {
  switch (delta.kind) {
    case Delta::Kind::kReasoning:
      reply.reasoning += delta.text;
      break;
    case Delta::Kind::kContent:
      reply.content += delta.text;
      break;
    case Delta::Kind::kToolCall: {
      const ToolCallDelta& t = delta.tool_call;
      if (t.first) {
        DSA_CHECK(t.index == int(reply.tool_calls.size()), "tool call {} out of order", t.index);
        reply.tool_calls.push_back({t.id, t.name, ""});
      }
      DSA_CHECK(t.index >= 0 && t.index < int(reply.tool_calls.size()), "unknown tool call {}",
                t.index);
      reply.tool_calls[size_t(t.index)].arguments += t.arguments;
      break;
    }
  }
}

}  // namespace dsa::server

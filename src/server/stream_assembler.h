// Turns the text a model writes into the deltas of an OpenAI reply: reasoning, content and tool
// calls, through the incremental DSML parser (text/output_parser.h). The same assembler serves
// streamed replies (each delta becomes a chunk) and whole ones (the deltas are added up), so the
// two always agree.
//
// Tool calls. A call's deltas are held back until its closing </｜DSML｜invoke> has been parsed,
// and then go out in order: one delta with the index, id, type and name (and empty arguments),
// then the arguments. Holding it is what lets a call be judged before the client sees any of it:
//  - markup that breaks inside a call (or text that ends there) makes the call text: its markup,
//    byte for byte, is sent as content, and a warning says what was malformed. A broken call is
//    never sent as a call with `{}` or cut arguments;
//  - a well-formed call that the request does not allow (tool_choice "none", a function not
//    among the tools, another function than a named tool_choice, a second call when
//    parallel_tool_calls is false) is also sent as content, with a warning.
// The delay this costs is one call's markup: arguments are not streamed while the model writes
// them. Indices count the accepted calls (0, 1, ...), so parallel calls never share one.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/generator.h"
#include "text/chat_encoding.h"
#include "text/output_parser.h"

namespace dsa::server {

struct ToolCallDelta {
  int index = 0;
  bool first = false;     // the call's first delta: carries id, type "function" and the name
  std::string id;         // first delta only
  std::string name;       // first delta only
  std::string arguments;  // a piece of the arguments JSON; "" in the first delta
};

struct Delta {
  enum class Kind { kReasoning, kContent, kToolCall };
  Kind kind = Kind::kContent;
  std::string text;  // reasoning or content: never empty
  ToolCallDelta tool_call;
};

// What the request allows and asks of tool calls and the content (checked on the reply).
struct ReplyPolicy {
  bool allow_tool_calls = true;       // false: tool_choice "none"
  std::vector<std::string> declared;  // the request's functions
  std::string required_name;          // a named tool_choice
  bool require_tool_call = false;     // tool_choice "required" or named
  bool parallel_tool_calls = true;
  bool expect_json = false;  // response_format json_object / json_schema
};

struct AssemblerOptions {
  // The mode the prompt was encoded in; nullopt: raw text (/v1/completions), nothing parsed.
  std::optional<text::ThinkingMode> mode;
  ReplyPolicy policy;
  // Makes the id of each accepted tool call ("call_" + random by default).
  std::function<std::string()> make_call_id;
};

class StreamAssembler {
 public:
  explicit StreamAssembler(AssemblerOptions options);

  // The next piece of the model's text (or of a prefix forced on it); returns the deltas it
  // settles, in order, with adjacent text deltas of one kind merged.
  std::vector<Delta> feed(std::string_view text);
  // After the last piece: what the parser still held. `stop` is why generation ended.
  std::vector<Delta> finish(StopReason stop);

  // After finish(): "stop", "length" or "tool_calls".
  const std::string& finish_reason() const { return finish_reason_; }
  // Malformed markup and policy violations, in the order met; empty when all was well.
  const std::vector<std::string>& warnings() const { return warnings_; }
  int accepted_tool_calls() const { return accepted_; }

 private:
  struct HeldCall {
    std::string name;
    std::string arguments;
    size_t raw_start = 0;  // where its markup starts in raw_
  };

  void process(const std::vector<text::ParserEvent>& events, size_t reflected);
  void emit_text(Delta::Kind kind, std::string_view text);
  size_t call_start(size_t reflected) const;
  void end_call(size_t reflected);
  void break_call(const std::vector<text::ParserEvent>& events, size_t error_index,
                  size_t reflected);
  // Why a complete call cannot be accepted; "" when it can.
  std::string rejection(const std::string& name) const;

  AssemblerOptions options_;
  std::optional<text::OutputParser> parser_;
  std::string raw_;  // everything fed
  std::optional<HeldCall> held_;
  size_t released_end_ = 0;  // raw_ before this offset belongs to calls already settled
  int accepted_ = 0;
  std::string content_;  // all content, for the JSON check
  std::vector<Delta> out_;
  std::vector<std::string> warnings_;
  std::string finish_reason_;
};

// A whole reply, as a client adds up the deltas.
struct AssembledToolCall {
  std::string id;
  std::string name;
  std::string arguments;
};
struct AssembledReply {
  std::string reasoning;
  std::string content;
  std::vector<AssembledToolCall> tool_calls;
};
void add_delta(AssembledReply& reply, const Delta& delta);

}  // namespace dsa::server

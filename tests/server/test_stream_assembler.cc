// The stream assembler on scripted model text: reasoning and content, DSML tool calls (single,
// parallel, split anywhere), malformed and disallowed calls coming back as text with a warning,
// and hostile text. The tiny models of the tests cannot write DSML, so this is where the
// tool-call structure of streams is checked.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "server/stream_assembler.h"
#include "text/dsml_tokens.h"
#include "text/utf8.h"

namespace dsa::server {
namespace {

namespace tokens = text::tokens;

std::string invoke(const std::string& name, const std::string& params) {
  return std::string(tokens::kInvokeOpen) + " name=\"" + name + "\">\n" + params +
         std::string(tokens::kInvokeClose);
}
std::string param(const std::string& name, const std::string& value, bool is_string) {
  return std::string(tokens::kParameterOpen) + " name=\"" + name + "\" string=\"" +
         (is_string ? "true" : "false") + "\">" + value + std::string(tokens::kParameterClose) +
         "\n";
}
std::string block(const std::vector<std::string>& invokes) {
  std::string out = "\n\n" + std::string(tokens::kFunctionCallsOpen) + ">\n";
  for (const std::string& i : invokes) out += i + "\n";
  return out + std::string(tokens::kFunctionCallsClose);
}

AssemblerOptions options(std::optional<text::ThinkingMode> mode = text::ThinkingMode::kChat) {
  AssemblerOptions o;
  o.mode = mode;
  o.policy.declared = {"get_weather", "now"};
  auto counter = std::make_shared<int>(0);
  o.make_call_id = [counter] { return "call_" + std::to_string((*counter)++); };
  return o;
}

struct Assembled {
  std::vector<Delta> deltas;
  AssembledReply reply;
  std::string finish_reason;
  std::vector<std::string> warnings;
};

// Feeds `text` in pieces of `piece` bytes (0: all at once).
Assembled assemble(const std::string& text, AssemblerOptions o, size_t piece = 0,
                   StopReason stop = StopReason::kEos) {
  StreamAssembler a(std::move(o));
  Assembled run;
  const auto take = [&](std::vector<Delta> ds) {
    for (Delta& d : ds) {
      add_delta(run.reply, d);
      run.deltas.push_back(std::move(d));
    }
  };
  if (piece == 0) {
    take(a.feed(text));
  } else {
    for (size_t i = 0; i < text.size(); i += piece) take(a.feed(text.substr(i, piece)));
  }
  take(a.finish(stop));
  run.finish_reason = a.finish_reason();
  run.warnings = a.warnings();
  return run;
}

// The rules llama.cpp's server tests hold streams to (../shared/reference/ecosystem-anchors.md
// §7): no empty text delta; per tool-call index, a first delta with id, type and name, then
// arguments only; indices 0, 1, ... in order.
void expect_well_formed(const std::vector<Delta>& deltas) {
  int next_index = 0;
  for (const Delta& d : deltas) {
    if (d.kind != Delta::Kind::kToolCall) {
      EXPECT_FALSE(d.text.empty());
      EXPECT_TRUE(text::is_valid_utf8(d.text)) << d.text;
      continue;
    }
    const ToolCallDelta& t = d.tool_call;
    if (t.first) {
      EXPECT_EQ(t.index, next_index++);
      EXPECT_FALSE(t.id.empty());
      EXPECT_FALSE(t.name.empty());
      EXPECT_TRUE(t.arguments.empty());
    } else {
      EXPECT_EQ(t.index, next_index - 1) << "arguments must follow their call's first delta";
      EXPECT_TRUE(t.id.empty());
      EXPECT_TRUE(t.name.empty());
    }
  }
}

TEST(StreamAssembler, PlainContentAndReasoning) {
  Assembled r = assemble("Hello there.", options());
  EXPECT_EQ(r.reply.content, "Hello there.");
  EXPECT_EQ(r.reply.reasoning, "");
  EXPECT_EQ(r.finish_reason, "stop");
  EXPECT_TRUE(r.warnings.empty());

  r = assemble("Let me think.</think>The answer.", options(text::ThinkingMode::kThinking), 3);
  EXPECT_EQ(r.reply.reasoning, "Let me think.");
  EXPECT_EQ(r.reply.content, "The answer.");
  expect_well_formed(r.deltas);
}

TEST(StreamAssembler, LengthWhenTheTokenLimitStopped) {
  EXPECT_EQ(assemble("abc", options(), 0, StopReason::kMaxTokens).finish_reason, "length");
  EXPECT_EQ(assemble("abc", options(), 0, StopReason::kContextFull).finish_reason, "length");
  EXPECT_EQ(assemble("abc", options(), 0, StopReason::kStopString).finish_reason, "stop");
}

TEST(StreamAssembler, RawModeParsesNothing) {
  const std::string text = "a</think>b" + block({invoke("now", "")});
  const Assembled r = assemble(text, options(std::nullopt), 2);
  EXPECT_EQ(r.reply.content, text);
  EXPECT_TRUE(r.reply.tool_calls.empty());
}

TEST(StreamAssembler, OneToolCall) {
  const std::string text =
      "Checking." + block({invoke("get_weather", param("city", "Paris \"FR\"", true) +
                                                     param("days", "3", false))});
  for (const size_t piece : {size_t(0), size_t(1), size_t(5)}) {
    const Assembled r = assemble(text, options(), piece);
    EXPECT_EQ(r.reply.content, "Checking.") << piece;
    ASSERT_EQ(r.reply.tool_calls.size(), 1u) << piece;
    EXPECT_EQ(r.reply.tool_calls[0].name, "get_weather");
    EXPECT_EQ(r.reply.tool_calls[0].arguments, R"({"city": "Paris \"FR\"", "days": 3})");
    EXPECT_EQ(r.reply.tool_calls[0].id, "call_0");
    EXPECT_EQ(r.finish_reason, "tool_calls");
    EXPECT_TRUE(r.warnings.empty()) << r.warnings[0];
    expect_well_formed(r.deltas);
  }
}

TEST(StreamAssembler, ParallelCallsGetTheirOwnIndices) {
  const std::string text =
      block({invoke("get_weather", param("city", "Paris", true)),
             invoke("get_weather", param("city", "Oslo", true)), invoke("now", "\n")});
  const Assembled c = assemble(text, options(), 4);
  ASSERT_EQ(c.reply.tool_calls.size(), 3u);
  EXPECT_EQ(c.reply.tool_calls[0].arguments, R"({"city": "Paris"})");
  EXPECT_EQ(c.reply.tool_calls[1].arguments, R"({"city": "Oslo"})");
  EXPECT_EQ(c.reply.tool_calls[2].name, "now");
  EXPECT_EQ(c.reply.tool_calls[2].arguments, "{}");
  EXPECT_NE(c.reply.tool_calls[0].id, c.reply.tool_calls[1].id);
  EXPECT_EQ(c.reply.content, "");
  EXPECT_EQ(c.finish_reason, "tool_calls");
  expect_well_formed(c.deltas);
  // Before </think> it is all reasoning: DSML there is not a call.
  const Assembled r = assemble(text, options(text::ThinkingMode::kThinking), 0);
  EXPECT_TRUE(r.reply.tool_calls.empty());
  EXPECT_EQ(r.reply.reasoning, text);
}

TEST(StreamAssembler, ReasoningThenCallInThinkingMode) {
  const std::string text = "I should look.</think>" + block({invoke("now", "\n")});
  const Assembled r = assemble(text, options(text::ThinkingMode::kThinking), 1);
  EXPECT_EQ(r.reply.reasoning, "I should look.");
  ASSERT_EQ(r.reply.tool_calls.size(), 1u);
  EXPECT_EQ(r.finish_reason, "tool_calls");
}

TEST(StreamAssembler, EveryPieceSizeGivesTheSameReply) {
  const std::string text =
      "Sure: é漢🙂" +
      block({invoke("get_weather", param("city", "Zürich", true)), invoke("now", "")}) + " done";
  const Assembled whole = assemble(text, options());
  for (size_t piece = 1; piece <= text.size(); ++piece) {
    const Assembled r = assemble(text, options(), piece);
    EXPECT_EQ(r.reply.content, whole.reply.content) << piece;
    ASSERT_EQ(r.reply.tool_calls.size(), whole.reply.tool_calls.size()) << piece;
    for (size_t i = 0; i < r.reply.tool_calls.size(); ++i) {
      EXPECT_EQ(r.reply.tool_calls[i].arguments, whole.reply.tool_calls[i].arguments);
    }
    EXPECT_EQ(r.warnings, whole.warnings) << piece;
    expect_well_formed(r.deltas);
  }
}

TEST(StreamAssembler, MalformedCallComesBackAsItsOwnTextWithAWarning) {
  // The markup breaks inside the call, after its header and one parameter.
  const std::string broken = block({}).substr(0, 2 + tokens::kFunctionCallsOpen.size() + 2) +
                             invoke("get_weather", param("city", "Paris", true)).substr(0, 60) +
                             "### oops";
  const std::string text = "Intro." + broken + " tail";
  for (const size_t piece : {size_t(0), size_t(1), size_t(3)}) {
    const Assembled r = assemble(text, options(), piece);
    EXPECT_TRUE(r.reply.tool_calls.empty()) << piece;
    EXPECT_EQ(r.reply.content, text) << "the call's markup must come back byte for byte";
    ASSERT_FALSE(r.warnings.empty());
    EXPECT_NE(r.warnings[0].find("malformed"), std::string::npos) << r.warnings[0];
    EXPECT_EQ(r.finish_reason, "stop");
    expect_well_formed(r.deltas);
  }
}

TEST(StreamAssembler, CallCutByTheTokenLimitIsText) {
  const std::string text = "x" + block({invoke("get_weather", param("city", "Par", true))});
  const std::string cut = text.substr(0, text.size() - 40);
  const Assembled r = assemble(cut, options(), 1, StopReason::kMaxTokens);
  EXPECT_TRUE(r.reply.tool_calls.empty());
  EXPECT_EQ(r.reply.content, cut);
  EXPECT_EQ(r.finish_reason, "length");
  EXPECT_FALSE(r.warnings.empty());
}

TEST(StreamAssembler, DisallowedCallsAreTextWithAWarning) {
  const std::string call = invoke("get_weather", param("city", "Rome", true));
  const std::string text = block({call});

  AssemblerOptions none = options();
  none.policy.allow_tool_calls = false;
  Assembled r = assemble(text, none, 2);
  EXPECT_TRUE(r.reply.tool_calls.empty());
  EXPECT_NE(r.reply.content.find(call), std::string::npos) << r.reply.content;
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_NE(r.warnings[0].find("none"), std::string::npos);
  EXPECT_EQ(r.finish_reason, "stop");

  AssemblerOptions undeclared = options();
  undeclared.policy.declared = {"now"};
  r = assemble(text, undeclared, 0);
  EXPECT_TRUE(r.reply.tool_calls.empty());
  EXPECT_NE(r.reply.content.find("get_weather"), std::string::npos);

  AssemblerOptions named = options();
  named.policy.required_name = "now";
  named.policy.require_tool_call = true;
  r = assemble(text, named, 0);
  EXPECT_TRUE(r.reply.tool_calls.empty());
  EXPECT_EQ(r.warnings.size(), 2u);  // the wrong function, and no call to the named one

  AssemblerOptions single = options();
  single.policy.parallel_tool_calls = false;
  r = assemble(block({call, invoke("now", "")}), single, 1);
  ASSERT_EQ(r.reply.tool_calls.size(), 1u);
  EXPECT_EQ(r.reply.tool_calls[0].name, "get_weather");
  EXPECT_NE(r.reply.content.find(invoke("now", "")), std::string::npos) << r.reply.content;
  EXPECT_EQ(r.finish_reason, "tool_calls");
}

TEST(StreamAssembler, RequiredCallMissingAndJsonChecks) {
  AssemblerOptions required = options();
  required.policy.require_tool_call = true;
  EXPECT_EQ(assemble("no call", required).warnings.size(), 1u);

  AssemblerOptions json = options();
  json.policy.expect_json = true;
  EXPECT_TRUE(assemble(R"({"a": [1, 2]})", json, 1).warnings.empty());
  EXPECT_EQ(assemble("not json", json).warnings.size(), 1u);
}

TEST(StreamAssembler, ForcedPrefixThenModelText) {
  // What prompt_builder forces for a named tool_choice, then what a model would add.
  const std::string prefix = "\n\n" + std::string(tokens::kFunctionCallsOpen) + ">\n" +
                             std::string(tokens::kInvokeOpen) + " name=\"now\">\n";
  StreamAssembler a(options());
  EXPECT_TRUE(a.feed(prefix).empty());
  AssembledReply reply;
  for (const Delta& d : a.feed("\n" + std::string(tokens::kInvokeClose) + "\n" +
                               std::string(tokens::kFunctionCallsClose))) {
    add_delta(reply, d);
  }
  for (const Delta& d : a.finish(StopReason::kEos)) add_delta(reply, d);
  ASSERT_EQ(reply.tool_calls.size(), 1u);
  EXPECT_EQ(reply.tool_calls[0].name, "now");
  EXPECT_EQ(a.finish_reason(), "tool_calls");
}

// Random text over DSML's pieces: never a crash or an inconsistent delta, and when no call was
// settled (accepted or refused), the content is exactly the text.
TEST(StreamAssembler, HostileText) {
  const std::vector<std::string> pieces = {std::string(tokens::kFunctionCallsOpen),
                                           ">",
                                           "\n",
                                           "\n\n",
                                           std::string(tokens::kInvokeOpen),
                                           " name=\"",
                                           "now",
                                           "get_weather",
                                           "\">",
                                           std::string(tokens::kParameterOpen),
                                           " string=\"true\"",
                                           " string=\"false\"",
                                           std::string(tokens::kParameterClose),
                                           std::string(tokens::kInvokeClose),
                                           std::string(tokens::kFunctionCallsClose),
                                           "\"",
                                           "x",
                                           "{\"a\":",
                                           "é",
                                           "🙂",
                                           std::string(tokens::kDsml),
                                           "<",
                                           "</"};
  std::mt19937 rng(7);
  for (int trial = 0; trial < 400; ++trial) {
    std::string text;
    const int n = int(rng() % 40);
    for (int i = 0; i < n; ++i) text += pieces[rng() % pieces.size()];
    const size_t piece = 1 + rng() % 7;
    const Assembled r = assemble(text, options(), piece, StopReason::kMaxTokens);
    expect_well_formed(r.deltas);
    bool settled = !r.reply.tool_calls.empty();
    for (const std::string& w : r.warnings) {
      settled = settled || w.find("returned as text") != std::string::npos;
    }
    if (!settled) {
      EXPECT_EQ(r.reply.content, text) << "trial " << trial;
    }
  }
}

}  // namespace
}  // namespace dsa::server

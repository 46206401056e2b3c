// `dsa run` end to end on a tiny random model with a trained tokenizer: streaming and the summary
// line, repeatability with --seed, -f, the chat-encoded modes and the errors a user can cause.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cctype>
#include <string>

#include "cli/tiny_chat_model.h"
#include "support/test_util.h"
#include "text/chat_encoding.h"
#include "text/output_parser.h"

namespace dsa {
namespace {

using test::run_dsa;
using test::TempDir;

class RunCli : public test::TinyChatModelSuite {
 protected:
  static std::string run_args(const std::string& rest) {
    return fmt::format("run -m '{}' {}", model(), rest);
  }
};

TEST_F(RunCli, StreamsTextAndEndsWithTheSummaryLine) {
  const auto r = run_dsa(run_args("-p 'The quick brown fox' -n 8 --seed 3 --ignore-eos"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(r.out.empty());
  EXPECT_EQ(r.out.back(), '\n');
  EXPECT_NE(r.err.find("prompt: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("generation: 8 tokens in "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(" tok/s) | cache: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("/ 2048 tokens"), std::string::npos) << r.err;  // -c: max_position
  EXPECT_NE(r.err.find("stop: token limit"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("seed:"), std::string::npos);  // given, so not announced
}

TEST_F(RunCli, ASeedRepeatsTheRun) {
  const std::string args = run_args("-p 'The lazy dog' -n 16 --ignore-eos --temp 1.2 --top-k 0");
  const auto a = run_dsa(args + " --seed 7");
  const auto b = run_dsa(args + " --seed 7 -t 1");  // the thread count changes no logit
  const auto c = run_dsa(args + " --seed 8");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
  // Without --seed a random seed is drawn and printed.
  const auto d = run_dsa(args);
  ASSERT_EQ(d.exit_code, 0) << d.err;
  EXPECT_NE(d.err.find("seed: "), std::string::npos) << d.err;
}

TEST_F(RunCli, FileAndTextPromptsAgree) {
  TempDir tmp;
  test::write_text_file(tmp / "prompt.txt", "The quick brown fox");
  const auto a = run_dsa(run_args("-p 'The quick brown fox' -n 6 --temp 0"));
  const auto b =
      run_dsa(run_args(fmt::format("-f '{}' -n 6 --temp 0", (tmp / "prompt.txt").string())));
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(a.out, b.out);
}

// --think wraps the prompt in the chat encoding; the same tokens given as raw text generate the
// same text, which the parser splits: the answer on stdout, the reasoning on stderr (a pipe).
TEST_F(RunCli, ThinkingModeSplitsReasoningFromTheAnswer) {
  const std::string sampling = "-n 24 --seed 5 --temp 1.5 --top-k 0 --min-p 0";
  const auto think = run_dsa(run_args("--think -p 'hello' " + sampling));
  const auto raw = run_dsa(
      run_args("-p '<｜begin▁of▁sentence｜><｜User｜>hello<｜Assistant｜><think>' " + sampling));
  ASSERT_EQ(think.exit_code, 0) << think.err;
  ASSERT_EQ(raw.exit_code, 0) << raw.err;
  const auto rstrip = [](std::string s) {
    while (!s.empty() && s.back() == '\n') s.pop_back();  // dsa ends the output line
    return s;
  };
  const text::ParsedCompletion parsed =
      text::parse_completion(rstrip(raw.out), text::ThinkingMode::kThinking);
  ASSERT_TRUE(parsed.tool_calls.empty());
  ASSERT_FALSE(parsed.reasoning.empty());
  EXPECT_NE(think.err.find(parsed.reasoning), std::string::npos) << think.err;
  EXPECT_EQ(think.out.find(parsed.reasoning), std::string::npos);
  EXPECT_EQ(rstrip(think.out), parsed.content);

  const auto no_think = run_dsa(run_args("--no-think -p 'hello' -n 4 --temp 0"));
  ASSERT_EQ(no_think.exit_code, 0) << no_think.err;
  const auto both = run_dsa(run_args("--think --no-think -p 'hello'"));
  EXPECT_NE(both.exit_code, 0);
  EXPECT_NE(both.err.find("excludes"), std::string::npos) << both.err;
}

TEST_F(RunCli, StopStringsEndTheRun) {
  const std::string args =
      run_args("-p 'The quick' -n 24 --seed 2 --temp 1 --top-k 0 --ignore-eos");
  const auto free = run_dsa(args);
  ASSERT_EQ(free.exit_code, 0) << free.err;
  // Two letters of the text as the stop string (plain, so the shell passes them as they are).
  std::string stop;
  for (size_t i = 1; i + 1 < free.out.size() && stop.empty(); ++i) {
    if (std::isalpha(uint8_t(free.out[i])) && std::isalpha(uint8_t(free.out[i + 1]))) {
      stop = free.out.substr(i, 2);
    }
  }
  ASSERT_FALSE(stop.empty()) << "no two letters in a row in: " << free.out;
  const auto cut = run_dsa(args + fmt::format(" --stop zzzz --stop '{}'", stop));
  ASSERT_EQ(cut.exit_code, 0) << cut.err;
  EXPECT_EQ(cut.out, free.out.substr(0, free.out.find(stop)) + "\n");
  EXPECT_NE(cut.err.find("stop: stop string"), std::string::npos) << cut.err;
}

TEST_F(RunCli, BadInputIsAClearError) {
  TempDir tmp;
  const std::string no_tokenizer = (tmp / "bare").string();
  ASSERT_EQ(run_dsa(fmt::format("init-model --preset tiny -o '{}'", no_tokenizer)).exit_code, 0);
  struct Case {
    std::string args;
    std::string message;
  };
  const std::string long_prompt(200, 'x');
  const std::vector<Case> cases = {
      {run_args("-n 4"), "no prompt: give -p TEXT or -f FILE"},
      {run_args("-p a -f b"), "either as -p or as -f"},
      {run_args("-f /nonexistent/prompt.txt"), "cannot open prompt file /nonexistent/prompt.txt"},
      {fmt::format("run -m '{}' -p hi", (tmp / "missing").string()), "does not exist"},
      {fmt::format("run -m '{}' -p hi", no_tokenizer), "has no tokenizer.json"},
      {run_args("-p '" + long_prompt + "' -c 8"), "more than the context size of 8 tokens"},
      {run_args("-p hi -c 100000"), "exceeds the model's max_position_embeddings (2048)"},
      {run_args("-p hi --temp -1"), "temperature must be"},
      {run_args("-p hi --top-p 0"), "top_p must be"},
      {run_args("-p hi --min-p 2"), "min_p must be"},
      {run_args("-p hi --repeat-penalty 0"), "repeat_penalty must be"},
      {run_args("-p hi -n -5"), "-n must be -1"},
      {run_args("-p hi --attention fast"), "unknown attention mode 'fast'"},
      {run_args("-p hi --stop ''"), "may not be empty"},
  };
  for (const Case& c : cases) {
    const auto r = run_dsa(c.args);
    EXPECT_EQ(r.exit_code, 1) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.args << "\n" << r.err;
  }
  // Flags CLI11 rejects exit non-zero with its own message.
  const auto unknown = run_dsa(run_args("-p hi --bogus"));
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_NE(unknown.err.find("--bogus"), std::string::npos) << unknown.err;
  const auto not_a_number = run_dsa(run_args("-p hi --temp hot"));
  EXPECT_NE(not_a_number.exit_code, 0);
  EXPECT_NE(not_a_number.err.find("hot"), std::string::npos) << not_a_number.err;
}

}  // namespace
}  // namespace dsa

// `dsa chat` through a pipe on a tiny random model with a trained tokenizer: turns, the KV cache
// kept between them (a turn runs only its own tokens), the slash commands, thinking mode, a full
// context, and repeatability with --seed.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <regex>
#include <string>
#include <vector>

#include "cli/tiny_chat_model.h"
#include "support/test_util.h"
#include "text/tokenizer.h"

namespace dsa {
namespace {

using test::run_dsa;

class ChatCli : public test::TinyChatModelSuite {
 protected:
  static std::string chat(const std::string& flags) {
    return fmt::format("chat -m '{}' {}", model(), flags);
  }
  static int64_t token_count(const std::string& text) {
    return int64_t(text::Tokenizer::from_model_dir(model()).encode(text).size());
  }
};

struct StatsLine {
  int64_t prompt = -1;     // prompt tokens of the last reply
  int64_t generated = -1;  // its generated tokens
  int64_t replies = -1;
  int64_t context = -1;  // tokens in the context
};

// The /stats reports in `err`, in order.
std::vector<StatsLine> parse_stats(const std::string& err) {
  std::vector<StatsLine> out;
  const std::regex last(R"(last reply: (none|prompt: (\d+) tokens.*generation: (\d+) tokens))");
  const std::regex conversation(R"(conversation: replies (\d+), context (\d+) / \d+ tokens)");
  StatsLine current;
  size_t pos = 0;
  while (pos < err.size()) {
    size_t end = err.find('\n', pos);
    if (end == std::string::npos) end = err.size();
    const std::string line = err.substr(pos, end - pos);
    std::smatch m;
    if (std::regex_search(line, m, last) && line.rfind("last reply:", 0) == 0) {
      current = {};
      if (m[2].matched) {
        current.prompt = std::stoll(m[2]);
        current.generated = std::stoll(m[3]);
      }
    } else if (std::regex_search(line, m, conversation) && line.rfind("conversation:", 0) == 0) {
      current.replies = std::stoll(m[1]);
      current.context = std::stoll(m[2]);
      out.push_back(current);
    }
    pos = end + 1;
  }
  return out;
}

TEST_F(ChatCli, KeepsTheConversationInTheCacheAndResets) {
  const auto r = run_dsa(chat("-n 4 --seed 1 --ignore-eos"),
                         "hello there\n/stats\nhow are you\n/stats\n/reset\n/stats\nagain\n"
                         "/stats\n/quit\nnot read\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<StatsLine> s = parse_stats(r.err);
  ASSERT_EQ(s.size(), 4u) << r.err;
  // Turn 1: BOS and the first user turn.
  const int64_t p1 =
      token_count("<｜begin▁of▁sentence｜><｜User｜>hello there<｜Assistant｜></think>");
  EXPECT_EQ(s[0].prompt, p1);
  EXPECT_EQ(s[0].generated, 4);
  EXPECT_EQ(s[0].replies, 1);
  EXPECT_EQ(s[0].context, p1 + 4);
  // Turn 2 runs only the EOS that closes reply 1 (cut at -n, so not sampled) and its own turn.
  const int64_t p2 =
      token_count("<｜end▁of▁sentence｜><｜User｜>how are you<｜Assistant｜></think>");
  EXPECT_EQ(s[1].prompt, p2);
  EXPECT_EQ(s[1].replies, 2);
  EXPECT_EQ(s[1].context, p1 + 4 + p2 + 4);
  // /reset empties the context; the next turn starts with BOS again.
  EXPECT_EQ(s[2].prompt, -1);
  EXPECT_EQ(s[2].replies, 0);
  EXPECT_EQ(s[2].context, 0);
  EXPECT_EQ(s[3].prompt,
            token_count("<｜begin▁of▁sentence｜><｜User｜>again<｜Assistant｜></think>"));
  EXPECT_NE(r.err.find("conversation cleared"), std::string::npos);
  EXPECT_EQ(r.err.find("> "), std::string::npos);  // no prompt in a pipe
  EXPECT_FALSE(r.out.empty());

  // The same seed and input give the same replies.
  const auto again = run_dsa(chat("-n 4 --seed 1 --ignore-eos"),
                             "hello there\n/stats\nhow are you\n/stats\n/reset\n/stats\nagain\n"
                             "/stats\n/quit\nnot read\n");
  EXPECT_EQ(again.out, r.out);
}

TEST_F(ChatCli, ThinkingModeAndCommands) {
  const auto r = run_dsa(chat("-n 6 --seed 2 --temp 1.5 --top-k 0"),
                         "/help\n/think\nwhy\n/stats\n/no-think\nok\n/stats\n/bogus\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;                  // end of input ends the chat
  EXPECT_NE(r.err.find("/reset"), std::string::npos);  // the help text
  EXPECT_NE(r.err.find("thinking on"), std::string::npos);
  EXPECT_NE(r.err.find("thinking off"), std::string::npos);
  EXPECT_NE(r.err.find("unknown command /bogus"), std::string::npos);
  const std::vector<StatsLine> s = parse_stats(r.err);
  ASSERT_EQ(s.size(), 2u) << r.err;
  // A thinking turn ends with <think>; the next, non-thinking one with </think>.
  EXPECT_EQ(s[0].prompt, token_count("<｜begin▁of▁sentence｜><｜User｜>why<｜Assistant｜><think>"));
  // Turn 2 also runs the EOS that closes reply 1: sampled by it and not yet run, or added by
  // dsa when the reply was cut at -n.
  EXPECT_EQ(s[1].prompt, token_count("<｜User｜>ok<｜Assistant｜></think>") + 1);
  EXPECT_EQ(s[1].replies, 2);
}

TEST_F(ChatCli, AFullContextIsReportedAndResetRecovers) {
  const auto r = run_dsa(chat("-c 24 --seed 3 --ignore-eos"), "hi\nmore\n/reset\nhi\n/stats\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("the context is full"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("dsa: error: this turn needs"), std::string::npos) << r.err;
  const std::vector<StatsLine> s = parse_stats(r.err);
  ASSERT_EQ(s.size(), 1u) << r.err;
  EXPECT_EQ(s[0].context, 24);  // the reply after /reset filled the context again
  EXPECT_EQ(s[0].replies, 1);
}

TEST_F(ChatCli, BadFlagsAreErrors) {
  const auto r = run_dsa(chat("--top-k -3"), "hi\n");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("top_k must be"), std::string::npos) << r.err;
  const auto missing = run_dsa("chat -m /nonexistent/model", "hi\n");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("does not exist"), std::string::npos) << missing.err;
}

}  // namespace
}  // namespace dsa

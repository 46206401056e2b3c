// `dsa chat-template`: the official fixture through the binary, modes, --ids, and bad input.
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "support/test_util.h"
#include "text/tokenizer.h"

namespace dsa {
namespace {

std::string fixture_input() { return (test::data_dir() / "chat" / "test_input.json").string(); }

TEST(ChatTemplateCli, PrintsTheOfficialFixtureByteForByte) {
  const test::CommandResult r =
      test::run_dsa("chat-template --messages '" + fixture_input() + "' --thinking");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string expected = test::read_text_file(test::data_dir() / "chat" / "test_output.txt");
  expected.pop_back();  // the file ends with a newline that the prompt does not have
  EXPECT_EQ(r.out, expected);
}

TEST(ChatTemplateCli, ModeComesFromFlagThenRequestThenChat) {
  const std::string body =
      R"({"messages": [{"role": "user", "content": "hi"}], "chat_template_kwargs": {"thinking": true}})";
  const std::string prefix = "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜>";
  test::CommandResult r = test::run_dsa("chat-template --messages -", body);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, prefix + "<think>");
  r = test::run_dsa("chat-template --messages - --no-thinking", body);
  EXPECT_EQ(r.out, prefix + "</think>");
  r = test::run_dsa("chat-template --messages -", R"([{"role": "user", "content": "hi"}])");
  EXPECT_EQ(r.out, prefix + "</think>");
}

TEST(ChatTemplateCli, IdsAreTheTokenizationOfThePrompt) {
  const auto tokenizer_file = test::data_dir() / "tokenizer" / "trained_small" / "tokenizer.json";
  const std::string args = "chat-template --messages '" + fixture_input() +
                           "' --thinking --tokenizer '" + tokenizer_file.string() + "'";
  const test::CommandResult text = test::run_dsa(args);
  const test::CommandResult ids = test::run_dsa(args + " --ids");
  ASSERT_EQ(ids.exit_code, 0) << ids.err;
  std::istringstream in(ids.out);
  std::vector<int32_t> printed;
  for (int32_t id; in >> id;) printed.push_back(id);
  const text::Tokenizer tokenizer = text::Tokenizer::from_file(tokenizer_file);
  EXPECT_EQ(printed, tokenizer.encode(text.out));
  ASSERT_FALSE(printed.empty());
  EXPECT_EQ(printed.front(), tokenizer.token_id("<｜begin▁of▁sentence｜>"));
  EXPECT_EQ(printed.back(),
            tokenizer.token_id("<｜end▁of▁sentence｜>"));  // the last assistant turn
}

TEST(ChatTemplateCli, ErrorsNameTheProblem) {
  test::CommandResult r = test::run_dsa("chat-template --messages /nonexistent/m.json");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(
      r.err,
      "dsa: error: cannot open messages file /nonexistent/m.json: No such file or directory\n");

  r = test::run_dsa("chat-template --messages -", R"({"messages": [{"role": "bot"}]})");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("<stdin>: messages[0].role: unknown role \"bot\""), std::string::npos)
      << r.err;

  r = test::run_dsa("chat-template --messages -", R"([{"role": "tool", "content": "x"}])");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("messages[0] (tool): a tool result must follow an assistant message"),
            std::string::npos)
      << r.err;

  r = test::run_dsa("chat-template --messages - --ids", R"([{"role": "user", "content": "x"}])");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "dsa: error: chat-template --ids needs -m DIR or --tokenizer FILE\n");

  r = test::run_dsa("chat-template --messages - --thinking --no-thinking", "[]");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("excludes"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace dsa

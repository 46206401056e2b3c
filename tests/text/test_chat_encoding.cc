// The chat encoding against DeepSeek's own output: the official fixture (test_input.json ->
// test_output.txt) and our cases in tests/data/chat/cases, whose .txt files were rendered by
// DeepSeek's encoding_dsv32.py (see tests/data/chat/README.md).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "support/test_util.h"
#include "text/chat_encoding.h"
#include "text/dsml_tokens.h"

namespace dsa::text {
namespace {

std::filesystem::path chat_data() { return test::data_dir() / "chat"; }

ChatRequest load_request(const std::filesystem::path& path) {
  return parse_chat_request(test::read_text_file(path), path.string());
}

std::string encode(const std::vector<ChatMessage>& messages, ThinkingMode mode) {
  return encode_messages(messages, ChatEncodeOptions{.mode = mode});
}

// Where two texts first differ, for readable failures on long prompts.
std::string first_difference(const std::string& a, const std::string& b) {
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  return "first difference at byte " + std::to_string(i) + ": got \"" + a.substr(i, 40) +
         "\" expected \"" + b.substr(i, 40) + "\"";
}

TEST(ChatEncoding, OfficialFixtureThinkingModeIsByteIdentical) {
  const ChatRequest request = load_request(chat_data() / "test_input.json");
  std::string expected = test::read_text_file(chat_data() / "test_output.txt");
  ASSERT_EQ(expected.back(), '\n');  // DeepSeek's test strips the file's final newline
  expected.pop_back();
  const std::string prompt = encode(request.messages, ThinkingMode::kThinking);
  EXPECT_EQ(prompt, expected) << first_difference(prompt, expected);
}

TEST(ChatEncoding, OfficialFixtureChatMode) {
  const ChatRequest request = load_request(chat_data() / "test_input.json");
  const std::string expected = test::read_text_file(chat_data() / "test_output_chat.txt");
  const std::string prompt = encode(request.messages, ThinkingMode::kChat);
  EXPECT_EQ(prompt, expected) << first_difference(prompt, expected);
}

TEST(ChatEncoding, ReferenceCases) {
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(chat_data() / "cases")) {
    if (entry.path().extension() != ".json") continue;
    SCOPED_TRACE(entry.path().filename().string());
    const ChatRequest request = load_request(entry.path());
    ASSERT_TRUE(request.thinking.has_value() || entry.path().stem() == "response_format_chat");
    const ThinkingMode mode =
        request.thinking.value_or(false) ? ThinkingMode::kThinking : ThinkingMode::kChat;
    std::filesystem::path expected_path = entry.path();
    expected_path.replace_extension(".txt");
    const std::string expected = test::read_text_file(expected_path);
    const std::string prompt = encode(request.messages, mode);
    EXPECT_EQ(prompt, expected) << first_difference(prompt, expected);
    ++count;
  }
  EXPECT_EQ(count, 12);
}

TEST(ChatEncoding, GenerationPromptEnds) {
  const std::vector<ChatMessage> messages =
      parse_chat_request(R"([{"role": "user", "content": "hi"}])", "inline").messages;
  EXPECT_EQ(encode(messages, ThinkingMode::kChat),
            "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜></think>");
  EXPECT_EQ(encode(messages, ThinkingMode::kThinking),
            "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜><think>");
}

// Inside one user turn the prompt only grows (a server can reuse its KV cache across tool
// calls); a new user message rewrites the history instead.
TEST(ChatEncoding, AppendOnlyWithinAUserTurn) {
  const std::vector<ChatMessage> all = load_request(chat_data() / "test_input.json").messages;
  ASSERT_EQ(all.size(), 13u);
  ASSERT_EQ(all[8].role, ChatRole::kUser);
  for (size_t k = 9; k < all.size(); ++k) {
    const std::vector<ChatMessage> shorter(all.begin(), all.begin() + static_cast<long>(k));
    const std::vector<ChatMessage> longer(all.begin(), all.begin() + static_cast<long>(k) + 1);
    const std::string a = encode(shorter, ThinkingMode::kThinking);
    const std::string b = encode(longer, ThinkingMode::kThinking);
    EXPECT_TRUE(b.starts_with(a)) << "k = " << k << ": " << first_difference(b, a);
  }
  const std::vector<ChatMessage> first_turn(all.begin(), all.begin() + 8);
  EXPECT_FALSE(encode(all, ThinkingMode::kThinking)
                   .starts_with(encode(first_turn, ThinkingMode::kThinking)));
}

TEST(ChatEncoding, FirstMessageRendersTheTailWithFullContext) {
  const std::vector<ChatMessage> all = load_request(chat_data() / "test_input.json").messages;
  const std::string whole = encode(all, ThinkingMode::kThinking);
  for (size_t k = 0; k <= all.size(); ++k) {
    const std::string tail = encode_messages(
        all, ChatEncodeOptions{.mode = ThinkingMode::kThinking, .first_message = k});
    EXPECT_TRUE(whole.ends_with(tail)) << "first_message " << k;
    if (k > 0) {
      EXPECT_FALSE(tail.starts_with(tokens::kBos));
    }
  }
  const std::string no_bos =
      encode_messages(all, ChatEncodeOptions{.mode = ThinkingMode::kThinking, .add_bos = false});
  EXPECT_EQ(std::string(tokens::kBos) + no_bos, whole);
  EXPECT_THROW(encode_messages(all, ChatEncodeOptions{.first_message = all.size() + 1}), Error);
}

TEST(ChatEncoding, ContentPartsRenderLikeJoinedText) {
  const auto parts = parse_chat_request(
      R"([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])",
      "parts");
  const auto joined = parse_chat_request(R"([{"role": "user", "content": "a\nb"}])", "joined");
  EXPECT_EQ(encode(parts.messages, ThinkingMode::kChat),
            encode(joined.messages, ThinkingMode::kChat));
}

// Our choice where the reference fails with an index error: a developer message before the last
// user message renders like any user turn (reasoning state closed).
TEST(ChatEncoding, DeveloperMessageInHistory) {
  const auto request = parse_chat_request(
      R"([{"role": "developer", "content": "d"}, {"role": "assistant", "content": "a"},
          {"role": "user", "content": "u"}])",
      "dev");
  EXPECT_EQ(encode(request.messages, ThinkingMode::kThinking),
            "<｜begin▁of▁sentence｜><｜User｜>\n\n# The user's message is: d<｜Assistant｜></think>"
            "a<｜end▁of▁sentence｜><｜User｜>u<｜Assistant｜><think>");
}

std::string encode_error(const std::string& messages_json, ThinkingMode mode) {
  try {
    encode(parse_chat_request(messages_json, "inline").messages, mode);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ChatEncoding, RejectsConversationsTheReferenceRejects) {
  EXPECT_EQ(encode_error(R"([{"role": "tool", "content": "x"}])", ThinkingMode::kChat),
            "messages[0] (tool): a tool result must follow an assistant message with tool_calls");
  EXPECT_EQ(encode_error(R"([{"role": "user", "content": "q"}, {"role": "tool", "content": "x"}])",
                         ThinkingMode::kChat),
            "messages[1] (tool): a tool result must follow an assistant message with tool_calls");
  EXPECT_EQ(
      encode_error(R"([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                       {"role": "tool", "content": "x"}])",
                   ThinkingMode::kChat),
      "messages[2] (tool): tool result 1 answers no call: messages[1] made 0 tool call(s)");
  EXPECT_EQ(
      encode_error(
          R"([{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]},
              {"role": "tool", "content": "1"}, {"role": "tool", "content": "2"}])",
          ThinkingMode::kChat),
      "messages[2] (tool): tool result 2 answers no call: messages[0] made 1 tool call(s)");
  EXPECT_EQ(encode_error(R"([{"role": "developer", "content": ""}])", ThinkingMode::kChat),
            "messages[0] (developer): content is empty");
  EXPECT_EQ(encode_error(R"([{"role": "user"}])", ThinkingMode::kChat),
            "messages[0] (user): content is missing");
  EXPECT_EQ(encode_error(R"([{"role": "user", "content": "q"},
                             {"role": "assistant", "content": "no reasoning"}])",
                         ThinkingMode::kThinking),
            "messages[1] (assistant): in thinking mode an assistant message after the last user "
            "message needs reasoning_content or tool_calls");
  // The same conversation is fine in chat mode.
  EXPECT_EQ(encode_error(R"([{"role": "user", "content": "q"},
                             {"role": "assistant", "content": "no reasoning"}])",
                         ThinkingMode::kChat),
            "");
}

}  // namespace
}  // namespace dsa::text

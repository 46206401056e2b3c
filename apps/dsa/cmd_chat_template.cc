// `dsa chat-template`: renders a chat request as DeepSeek-V3.2's exact prompt text.
//
//   dsa chat-template --messages FILE [--thinking | --no-thinking] [--ids (-m DIR | --tokenizer F)]
//     FILE ("-": stdin) is an OpenAI chat request body ({"messages": [...], "tools": [...]}), or a
//     bare array of messages. The mode is the flag, else the request's
//     chat_template_kwargs.thinking, else chat. Prints the prompt with no newline added; with
//     --ids, its token ids on one line separated by spaces.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

#include "commands.h"
#include "core/error.h"
#include "core/file_read.h"
#include "text/chat_encoding.h"
#include "text/tokenizer.h"

namespace dsa::cli {
namespace {

struct ChatTemplateArgs {
  std::string messages_file;
  bool thinking = false;
  bool no_thinking = false;
  bool ids = false;
  std::string model_dir;
  std::string tokenizer_file;
};

std::string read_input(const std::string& path) {
  if (path == "-") {
    std::ostringstream text;  // whole buffers at a time: a request may be megabytes
    text << std::cin.rdbuf();
    return text.str();
  }
  return read_regular_file(path, "messages file");
}

void run_chat_template(const ChatTemplateArgs& args) {
  const bool has_tokenizer = !args.model_dir.empty() || !args.tokenizer_file.empty();
  if (args.ids && !has_tokenizer) fail("chat-template --ids needs -m DIR or --tokenizer FILE");
  const std::string source = args.messages_file == "-" ? "<stdin>" : args.messages_file;
  const text::ChatRequest request =
      text::parse_chat_request(read_input(args.messages_file), source);

  bool thinking = request.thinking.value_or(false);
  if (args.thinking) thinking = true;
  if (args.no_thinking) thinking = false;
  const std::string prompt = text::encode_messages(
      request.messages, text::ChatEncodeOptions{.mode = thinking ? text::ThinkingMode::kThinking
                                                                 : text::ThinkingMode::kChat});
  if (!args.ids) {
    std::cout << prompt << std::flush;
    return;
  }
  const text::Tokenizer tokenizer = args.tokenizer_file.empty()
                                        ? text::Tokenizer::from_model_dir(args.model_dir)
                                        : text::Tokenizer::from_file(args.tokenizer_file);
  fmt::print("{}\n", fmt::join(tokenizer.encode(prompt), " "));
}

}  // namespace

void register_chat_template(CLI::App& app) {
  auto args = std::make_shared<ChatTemplateArgs>();
  auto* cmd =
      app.add_subcommand("chat-template", "Render a chat request as the model's exact prompt text");
  cmd->add_option("--messages", args->messages_file,
                  "OpenAI chat request JSON (messages, tools) or an array of messages; - for stdin")
      ->required();
  auto* thinking =
      cmd->add_flag("--thinking", args->thinking, "Thinking mode: the prompt ends with <think>");
  auto* no_thinking =
      cmd->add_flag("--no-thinking", args->no_thinking, "Chat mode: the prompt ends with </think>");
  thinking->excludes(no_thinking);
  cmd->add_flag("--ids", args->ids, "Print the prompt's token ids instead of its text");
  auto* model =
      cmd->add_option("-m,--model", args->model_dir, "Model directory with tokenizer.json");
  auto* file = cmd->add_option("--tokenizer", args->tokenizer_file, "A tokenizer.json file");
  model->excludes(file);
  cmd->callback([args] { run_chat_template(*args); });
}

}  // namespace dsa::cli

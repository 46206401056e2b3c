// `dsa chat`: a conversation in the DeepSeek-V3.2 chat encoding. User turns are read from stdin
// a line at a time (a "> " prompt on stderr when stdin is a terminal; plain pipes work too), and
// each reply streams as it is made (reply_printer.h: reasoning shown apart from the answer).
//
//   dsa chat -m DIR [--think] [-n -1] [-c CTX] [sampling flags as dsa run]
//
// The KV cache is kept between turns: a turn runs only its own tokens (the previous reply's
// closing <｜end▁of▁sentence｜> when it has not run yet, then <｜User｜>...<｜Assistant｜> and
// <think> or </think>). Earlier turns stay in the cache as they were generated, reasoning
// included, where DeepSeek's encoder would re-render them without it: re-rendering would
// recompute the whole conversation every turn. Slash commands: see kHelp.
#include <fmt/format.h>
#include <unistd.h>

#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "commands.h"
#include "core/error.h"
#include "generation_options.h"
#include "reply_printer.h"
#include "text/chat_encoding.h"
#include "text/dsml_tokens.h"

namespace dsa::cli {
namespace {

constexpr std::string_view kHelp =
    "/reset     forget the conversation\n"
    "/think     reason before answering (from the next turn)\n"
    "/no-think  answer directly (from the next turn)\n"
    "/stats     speed of the last reply and context use\n"
    "/help      this list\n"
    "/quit      leave (as does end of input)\n";

struct ChatOptions {
  GenerationOptions generation;
  bool think = false;
};

class ChatSession {
 public:
  ChatSession(const ChatOptions& o, const LoadedModel& m)
      : model_(m),
        generator_(*m.model, m.tokenizer, m.context, *m.pool),
        sampler_(sampler_params(o.generation)),
        params_(generation_params(o.generation)),
        batch_(o.generation.batch),
        mode_(o.think ? text::ThinkingMode::kThinking : text::ThinkingMode::kChat) {}

  // Handles one line of input; false when the session ends.
  bool handle(const std::string& line) {
    if (line.empty()) return true;
    if (line.front() != '/') {
      turn(line);
      return true;
    }
    if (line == "/quit" || line == "/exit") return false;
    if (line == "/help") {
      fmt::print(stderr, "{}", kHelp);
    } else if (line == "/reset") {
      generator_.reset();
      sampler_.reset_history();
      messages_.clear();
      last_.reset();
      turns_ = 0;
      fmt::print(stderr, "conversation cleared\n");
    } else if (line == "/think" || line == "/no-think") {
      mode_ = line == "/think" ? text::ThinkingMode::kThinking : text::ThinkingMode::kChat;
      fmt::print(stderr, "thinking {}\n", line == "/think" ? "on" : "off");
    } else if (line == "/stats") {
      stats();
    } else {
      fmt::print(stderr, "unknown command {}; /help lists them\n", line);
    }
    return true;
  }

 private:
  void turn(const std::string& content) {
    text::ChatMessage user;
    user.content = content;
    messages_.push_back(std::move(user));
    text::ChatEncodeOptions options;
    options.mode = mode_;
    options.first_message = messages_.size() - 1;  // the earlier turns are in the cache
    std::string prompt = text::encode_messages(messages_, options);
    // Close the previous reply as the encoding does when it stopped before its EOS.
    const std::span<const int32_t> sequence = generator_.tokens();
    if (!sequence.empty() && !generator_.is_eos(sequence.back())) {
      prompt.insert(0, text::tokens::kEos);
    }
    const std::vector<int32_t> tokens = model_.tokenizer.encode(prompt);
    if (int64_t(tokens.size()) > generator_.free_tokens()) {
      messages_.pop_back();
      fmt::print(stderr,
                 "dsa: error: this turn needs {} tokens, but only {} of the context's {} are "
                 "free: /reset to start over (or raise -c)\n",
                 tokens.size(), generator_.free_tokens(), generator_.context_size());
      return;
    }
    ReplyPrinter printer(mode_);
    std::unique_ptr<ProgressBar> bar;
    GenerationCallbacks callbacks;
    callbacks.on_prefill = prefill_progress(bar, batch_);
    callbacks.on_text = [&](std::string_view text) { printer.text(text); };
    last_ = generator_.generate(tokens, sampler_, params_, callbacks);
    printer.finish();
    text::ChatMessage reply;
    reply.role = text::ChatRole::kAssistant;
    reply.content = printer.completion().content;
    if (mode_ == text::ThinkingMode::kThinking) {
      reply.reasoning_content = printer.completion().reasoning;
    }
    messages_.push_back(std::move(reply));
    ++turns_;
    if (last_->stop == StopReason::kContextFull) {
      fmt::print(stderr, "[the context is full: /reset to start over]\n");
    }
  }

  void stats() const {
    if (last_) {
      fmt::print(stderr, "last reply: {}\n", format_stats(*last_));
    } else {
      fmt::print(stderr, "last reply: none\n");
    }
    fmt::print(stderr, "conversation: replies {}, context {} / {} tokens, thinking {}\n", turns_,
               generator_.tokens().size(), generator_.context_size(),
               mode_ == text::ThinkingMode::kThinking ? "on" : "off");
  }

  const LoadedModel& model_;
  Generator generator_;
  Sampler sampler_;
  GenerationParams params_;
  int64_t batch_;
  text::ThinkingMode mode_;
  std::vector<text::ChatMessage> messages_;  // the conversation since the last reset
  std::optional<GenerationStats> last_;
  int64_t turns_ = 0;
};

void run_chat(const ChatOptions& o) {
  const LoadedModel m = load_model(o.generation);
  ChatSession session(o, m);
  const bool terminal = isatty(fileno(stdin)) == 1;
  if (terminal) fmt::print(stderr, "dsa chat: /help lists the commands\n");
  std::string line;
  while (true) {
    if (terminal) fmt::print(stderr, "> ");
    if (!std::getline(std::cin, line)) break;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!session.handle(line)) break;
  }
}

}  // namespace

void register_chat(CLI::App& app) {
  auto options = std::make_shared<ChatOptions>();
  options->generation.max_tokens = -1;
  CLI::App* cmd = app.add_subcommand("chat", "Chat with a model (user turns from stdin)");
  add_generation_options(cmd, options->generation,
                         "Tokens per reply at most (default -1: until EOS or the context is full)");
  cmd->add_flag("--think", options->think, "Start in thinking mode (default: non-thinking)");
  cmd->callback([options] { run_chat(*options); });
}

}  // namespace dsa::cli

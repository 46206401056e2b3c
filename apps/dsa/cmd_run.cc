// `dsa run`: generates from one prompt and streams the text, as llama-cli -p does.
//
//   dsa run -m DIR (-p PROMPT | -f FILE) [-n 128] [-c CTX] [--think | --no-think] [--stop STR]...
//           [--temp T] [--top-k K] [--top-p P] [--min-p P] [--repeat-penalty R]
//           [--repeat-last-n N] [--seed S] [--attention auto|sparse|dense] [-t THREADS]
//
// Without --think / --no-think the prompt is raw text, after a BOS token when the tokenizer has
// one (as DeepSeek's tokenizer_config asks); with them it is one user message in the V3.2 chat
// encoding, in thinking or non-thinking mode, and the reply is parsed (reply_printer.h). The
// summary line (docs/running.md) goes to stderr.
#include <fmt/format.h>

#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>

#include "commands.h"
#include "core/error.h"
#include "core/file_read.h"
#include "generation_options.h"
#include "reply_printer.h"
#include "text/chat_encoding.h"

namespace dsa::cli {
namespace {

struct RunOptions {
  GenerationOptions generation;
  std::string prompt;
  std::string file;
  bool think = false;
  bool no_think = false;
};

std::string prompt_text(const RunOptions& o) {
  if (!o.prompt.empty() && !o.file.empty()) fail("give the prompt either as -p or as -f, not both");
  if (o.file.empty()) {
    if (o.prompt.empty()) fail("no prompt: give -p TEXT or -f FILE");
    return o.prompt;
  }
  // Non-blocking open, regular files only, at most kMaxTextFileBytes (core/file_read.h).
  std::string text = read_regular_file(o.file, "prompt file");
  if (text.empty()) fail("-f: prompt file {} is empty", o.file);
  return text;
}

std::vector<int32_t> prompt_tokens(const std::string& prompt, const text::Tokenizer& tokenizer,
                                   std::optional<text::ThinkingMode> mode) {
  if (mode) {
    text::ChatMessage user;  // role: user
    user.content = prompt;
    text::ChatEncodeOptions options;
    options.mode = *mode;
    return tokenizer.encode(text::encode_messages({&user, 1}, options));
  }
  std::vector<int32_t> tokens = tokenizer.encode(prompt);
  const std::optional<int32_t> bos = tokenizer.bos_id();
  if (bos && (tokens.empty() || tokens.front() != *bos)) tokens.insert(tokens.begin(), *bos);
  return tokens;
}

void run_run(const RunOptions& o) {
  const std::string prompt = prompt_text(o);
  const LoadedModel m = load_model(o.generation);
  std::optional<text::ThinkingMode> mode;
  if (o.think) mode = text::ThinkingMode::kThinking;
  if (o.no_think) mode = text::ThinkingMode::kChat;
  const std::vector<int32_t> tokens = prompt_tokens(prompt, m.tokenizer, mode);
  if (int64_t(tokens.size()) > m.context) {
    fail("the prompt has {} tokens, more than the context size of {} tokens (-c)", tokens.size(),
         m.context);
  }
  Generator generator(*m.model, m.tokenizer, m.context, *m.pool);
  Sampler sampler(sampler_params(o.generation));
  ReplyPrinter printer(mode);
  std::unique_ptr<ProgressBar> bar;
  GenerationCallbacks callbacks;
  callbacks.on_prefill = prefill_progress(bar, o.generation.batch);
  callbacks.on_text = [&](std::string_view text) { printer.text(text); };
  const GenerationStats stats =
      generator.generate(tokens, sampler, generation_params(o.generation), callbacks);
  printer.finish();
  fmt::print(stderr, "{}\n", format_stats(stats));
}

}  // namespace

void register_run(CLI::App& app) {
  auto options = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand("run", "Generate text from a prompt, streaming it");
  add_generation_options(cmd, options->generation,
                         "Tokens to generate (default 128; -1: until EOS or the context is full)");
  cmd->add_option("-p,--prompt", options->prompt, "Prompt text");
  cmd->add_option("-f,--file", options->file, "Read the prompt text from a file");
  CLI::Option* think =
      cmd->add_flag("--think", options->think,
                    "Wrap the prompt as a user message, thinking mode (V3.2 encoding)");
  cmd->add_flag("--no-think", options->no_think,
                "Wrap the prompt as a user message, non-thinking mode")
      ->excludes(think);
  cmd->callback([options] { run_run(*options); });
}

}  // namespace dsa::cli

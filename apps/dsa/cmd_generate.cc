// `dsa generate`: greedy decoding, minimal (the full `dsa run` adds sampling, streaming text and
// statistics). Prints the generated token ids on one line, or with --text their decoded text.
//
//   dsa generate -m DIR (--tokens "ID ..." | -p TEXT) [-n N] [-c CTX] [--chunk C]
//                [--attention auto|sparse|dense] [-t THREADS] [--text]
//
// Stops after N tokens (default 16) or at the model's eos_token_id (not printed).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <memory>
#include <string>

#include "commands.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "model/forward.h"
#include "text/tokenizer.h"
#include "token_input.h"

namespace dsa::cli {
namespace {

struct GenerateOptions {
  std::string model_dir;
  std::string tokens;
  std::string prompt;
  int64_t max_new = 16;
  int64_t context = 0;
  int64_t chunk = 512;
  std::string attention = "auto";
  std::string prefill_kernel = "auto";
  int threads = 0;
  bool text = false;
};

int32_t argmax(const std::vector<float>& logits) {
  return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

void run_generate(const GenerateOptions& o) {
  const std::vector<int32_t> prompt = prompt_tokens(o.tokens, o.prompt, o.model_dir);
  if (o.max_new < 0) fail("-n must be non-negative, got {}", o.max_new);
  if (o.chunk < 1) fail("--chunk must be at least 1, got {}", o.chunk);
  ForwardOptions options;
  options.attention = parse_attention_mode(o.attention);
  options.prefill_kernel = parse_prefill_kernel(o.prefill_kernel);
  ThreadPool pool(o.threads);
  const std::unique_ptr<Model> model = Model::load(o.model_dir, pool);
  const ModelConfig& c = model->config();
  const int64_t needed = int64_t(prompt.size()) + o.max_new;
  const int64_t context = o.context > 0 ? o.context : std::min(needed, c.max_position_embeddings);
  if (int64_t(prompt.size()) > context) {
    fail("the prompt has {} tokens, more than the context size of {} tokens", prompt.size(),
         context);
  }
  KvCache cache(c, context);
  std::vector<float> logits(size_t(c.vocab_size));
  for (size_t pos = 0; pos < prompt.size(); pos += size_t(o.chunk)) {
    const size_t n = std::min(prompt.size() - pos, size_t(o.chunk));
    model->forward(std::span(prompt).subspan(pos, n), cache, logits, options, pool);
  }
  std::vector<int32_t> generated;
  while (int64_t(generated.size()) < o.max_new) {
    const int32_t next = argmax(logits);
    if (next == c.eos_token_id) break;
    generated.push_back(next);
    if (int64_t(generated.size()) == o.max_new || cache.size() == cache.capacity()) break;
    model->forward(std::span(&generated.back(), 1), cache, logits, options, pool);
  }
  if (o.text) {
    const text::Tokenizer tokenizer = text::Tokenizer::from_model_dir(o.model_dir);
    fmt::print("{}\n", tokenizer.decode(generated));
  } else {
    fmt::print("{}\n", fmt::join(generated, " "));
  }
}

}  // namespace

void register_generate(CLI::App& app) {
  auto options = std::make_shared<GenerateOptions>();
  CLI::App* cmd = app.add_subcommand("generate", "Greedy decoding (minimal; see `dsa run`)");
  cmd->add_option("-m,--model", options->model_dir, "Model folder (config.json + safetensors)")
      ->required();
  cmd->add_option("--tokens", options->tokens, "Prompt token ids, e.g. \"0 17 42\"");
  cmd->add_option("-p,--prompt", options->prompt, "Prompt text, encoded with the tokenizer");
  cmd->add_option("-n,--n-predict", options->max_new, "Tokens to generate (default 16)");
  cmd->add_option("-c,--ctx-size", options->context,
                  "Context size (default: prompt + n, at most max_position_embeddings)");
  cmd->add_option("--chunk", options->chunk, "Prefill chunk size (default 512)");
  cmd->add_option("--attention", options->attention, "auto (default), sparse or dense");
  cmd->add_option("--prefill-kernel", options->prefill_kernel,
                  "auto (default), mha (DeepSeek's reference) or absorbed");
  cmd->add_option("-t,--threads", options->threads, "Threads (default: all hardware threads)");
  cmd->add_flag("--text", options->text, "Print the decoded text instead of the ids");
  cmd->callback([options] { run_generate(*options); });
}

}  // namespace dsa::cli

// `dsa logits`: the fp32 logits of every position of a token sequence, as a [T, vocab] .npy,
// for comparing the engine with a reference implementation.
//
//   dsa logits -m DIR (--tokens "ID ID ..." | -p TEXT) [--prefill N] [--chunk C]
//              [--attention auto|sparse|dense] [--prefill-kernel mha|absorbed|auto]
//              [--fast-attention] [-t THREADS] -o FILE.npy [--dump FILE.safetensors]
//
// The first N tokens (default: all) are prefilled in chunks of C (default: all N at once), the
// rest decoded one at a time. Because this command exists to compare against DeepSeek's
// reference, it computes attention the reference's way by default: MHA mode for prefill chunks,
// the absorbed mode for decode, and the scalar attention kernels that round to bf16 where the
// reference does (docs/model.md). `--fast-attention --prefill-kernel auto` gives what `dsa run`
// computes. --dump writes every named intermediate, each concatenated over the calls, so the
// first divergence from a reference is easy to find.
#include <fmt/format.h>

#include <memory>
#include <optional>
#include <string>

#include "commands.h"
#include "core/error.h"
#include "core/npy.h"
#include "core/thread_pool.h"
#include "model/forward.h"
#include "model/intermediate_recorder.h"
#include "token_input.h"

namespace dsa::cli {
namespace {

struct LogitsOptions {
  std::string model_dir;
  std::string tokens;
  std::string prompt;
  std::optional<int64_t> prefill;
  std::optional<int64_t> chunk;
  std::string attention = "auto";
  std::string prefill_kernel = "mha";
  bool fast_attention = false;
  int threads = 0;
  std::string output;
  std::string dump;
};

void run_logits(const LogitsOptions& o) {
  const std::vector<int32_t> tokens = prompt_tokens(o.tokens, o.prompt, o.model_dir);
  const int64_t T = int64_t(tokens.size());
  const int64_t prefill = o.prefill.value_or(T);
  if (prefill < 0 || prefill > T) {
    fail("--prefill {} must be between 0 and the number of tokens ({})", prefill, T);
  }
  const int64_t chunk = o.chunk.value_or(std::max<int64_t>(prefill, 1));
  if (chunk < 1) fail("--chunk must be at least 1, got {}", chunk);
  ForwardOptions options;
  options.attention = parse_attention_mode(o.attention);
  options.prefill_kernel = parse_prefill_kernel(o.prefill_kernel);
  options.reference_attention = !o.fast_attention;

  ThreadPool pool(o.threads);
  const std::unique_ptr<Model> model = Model::load(o.model_dir, pool);
  if (T > model->config().max_position_embeddings) {
    fail("{} tokens exceed the model's max_position_embeddings ({})", T,
         model->config().max_position_embeddings);
  }
  IntermediateRecorder recorder;
  if (!o.dump.empty()) options.dump = recorder.sink();
  const std::vector<float> logits = sequence_logits(*model, tokens, prefill, chunk, options, pool);
  write_npy(o.output, logits, Shape{T, model->config().vocab_size});
  if (!o.dump.empty()) recorder.write(o.dump);
  fmt::print(stderr, "wrote logits [{}, {}] to {}{}\n", T, model->config().vocab_size, o.output,
             o.dump.empty() ? "" : fmt::format(", intermediates to {}", o.dump));
}

}  // namespace

void register_logits(CLI::App& app) {
  auto options = std::make_shared<LogitsOptions>();
  CLI::App* cmd = app.add_subcommand("logits", "Write the logits of every position as a .npy");
  cmd->add_option("-m,--model", options->model_dir, "Model folder (config.json + safetensors)")
      ->required();
  cmd->add_option("--tokens", options->tokens, "Token ids, e.g. \"0 17 42\"");
  cmd->add_option("-p,--prompt", options->prompt, "Text, encoded with the model's tokenizer");
  cmd->add_option("--prefill", options->prefill,
                  "Tokens run as prefill (default: all); the rest are decoded one by one");
  cmd->add_option("--chunk", options->chunk, "Prefill chunk size (default: the whole prefill)");
  cmd->add_option("--attention", options->attention, "auto (default), sparse or dense");
  cmd->add_option("--prefill-kernel", options->prefill_kernel,
                  "mha (default: DeepSeek's reference), absorbed or auto (the engine's choice)");
  cmd->add_flag("--fast-attention", options->fast_attention,
                "The engine's fast attention kernels (fp32 softmax) instead of the reference ones");
  cmd->add_option("-t,--threads", options->threads, "Threads (default: all hardware threads)");
  cmd->add_option("-o,--output", options->output, "Output .npy file")->required();
  cmd->add_option("--dump", options->dump, "Also write every named intermediate (.safetensors)");
  cmd->callback([options] { run_logits(*options); });
}

}  // namespace dsa::cli

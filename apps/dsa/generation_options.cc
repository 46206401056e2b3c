#include "generation_options.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>

#include "core/error.h"
#include "embedded_model.h"

namespace dsa::cli {
namespace {

// Reads the checkpoint files once with a progress bar, on a terminal only: the weights are
// memory-mapped, so without this the first tokens would stall on disk reads with no feedback.
// Elsewhere (pipes, tests) it is skipped and the kernel reads the pages on first use.
void read_checkpoint_with_progress(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> files;
  uint64_t total = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.is_regular_file() && entry.path().extension() == ".safetensors") {
      files.push_back(entry.path());
      total += entry.file_size();
    }
  }
  ProgressBar bar("loading", total, ProgressUnit::kBytes);
  if (!bar.enabled()) return;
  std::vector<char> buffer(8 << 20);
  uint64_t done = 0;
  for (const auto& file : files) {
    std::ifstream in(file, std::ios::binary);
    while (in.read(buffer.data(), std::streamsize(buffer.size())) || in.gcount() > 0) {
      done += uint64_t(in.gcount());
      bar.update(done);
    }
  }
  bar.finish();
}

}  // namespace

void add_generation_options(CLI::App* cmd, GenerationOptions& o, const std::string& n_help) {
  cmd->add_option("-m,--model", o.model_dir,
                  "Model folder (config.json, safetensors, tokenizer.json; default: the built-in "
                  "dsa-small model)");
  cmd->add_option("-n,--n-predict", o.max_tokens, n_help);
  cmd->add_option("-c,--ctx-size", o.context,
                  "Context size in tokens (default: 4096, at most max_position_embeddings)");
  cmd->add_option("-b,--batch-size", o.batch, "Prompt tokens per forward call (default 512)");
  cmd->add_option("-t,--threads", o.threads, "Threads (default: all hardware threads)");
  cmd->add_option("--attention", o.attention, "auto (default), sparse or dense");
  cmd->add_option("--temp", o.sampling.temperature, "Temperature (default 0.8; 0: greedy)");
  cmd->add_option("--top-k", o.sampling.top_k, "Top-k (default 40; 0: off)");
  cmd->add_option("--top-p", o.sampling.top_p, "Top-p (default 0.95; 1: off)");
  cmd->add_option("--min-p", o.sampling.min_p, "Min-p (default 0.05; 0: off)");
  cmd->add_option("--repeat-penalty", o.sampling.repeat_penalty,
                  "Repetition penalty (default 1: off)");
  cmd->add_option("--repeat-last-n", o.sampling.repeat_last_n,
                  "Tokens the repetition penalty looks back on (default 64; 0: off, -1: all)");
  cmd->add_option("-s,--seed", o.seed, "Random seed (default: a random one, printed)");
  cmd->add_option("--stop", o.stop, "Stop when the text contains this string (repeatable)");
  cmd->add_flag("--ignore-eos", o.ignore_eos, "Never sample the end-of-sequence token");
}

LoadedModel load_model(const GenerationOptions& o) {
  if (o.max_tokens < -1) fail("-n must be -1 (no limit) or more, got {}", o.max_tokens);
  if (o.context < 0) fail("-c must be positive, got {}", o.context);
  if (o.batch < 1) fail("-b must be at least 1, got {}", o.batch);
  if (o.threads < 0) fail("-t must be positive, got {}", o.threads);
  o.sampling.validate();
  parse_attention_mode(o.attention);
  for (const std::string& s : o.stop) {
    if (s.empty()) fail("--stop: a stop string may not be empty");
  }
  const std::string model_dir = model_dir_or_embedded(o.model_dir);
  if (!std::filesystem::is_directory(model_dir)) {
    fail("-m: model directory {} does not exist", model_dir);
  }
  text::Tokenizer tokenizer = text::Tokenizer::from_model_dir(model_dir);
  auto pool = std::make_unique<ThreadPool>(o.threads);
  read_checkpoint_with_progress(model_dir);
  std::unique_ptr<Model> model = Model::load(model_dir, *pool);
  const int64_t max_position = model->config().max_position_embeddings;
  if (o.context > max_position) {
    fail("-c {} exceeds the model's max_position_embeddings ({})", o.context, max_position);
  }
  const int64_t context = o.context > 0 ? o.context : std::min<int64_t>(4096, max_position);
  return {std::move(pool), std::move(model), std::move(tokenizer), context};
}

SamplerParams sampler_params(const GenerationOptions& o) {
  SamplerParams p = o.sampling;
  if (o.seed) {
    p.seed = *o.seed;
  } else {
    std::random_device device;
    p.seed = uint64_t(device()) << 32 | device();
    if (p.temperature > 0)
      fmt::print(stderr, "seed: {} (--seed {} repeats this run)\n", p.seed, p.seed);
  }
  return p;
}

GenerationParams generation_params(const GenerationOptions& o) {
  GenerationParams p;
  p.max_tokens = o.max_tokens;
  p.stop_strings = o.stop;
  p.ignore_eos = o.ignore_eos;
  p.prefill_chunk = o.batch;
  p.forward.attention = parse_attention_mode(o.attention);
  return p;
}

std::function<void(int64_t, int64_t)> prefill_progress(std::unique_ptr<ProgressBar>& bar,
                                                       int64_t chunk) {
  return [&bar, chunk](int64_t done, int64_t total) {
    if (total <= chunk) return;
    if (!bar) bar = std::make_unique<ProgressBar>("prompt", uint64_t(total), ProgressUnit::kItems);
    bar->update(uint64_t(done));
    if (done == total) bar.reset();  // finishes the line
  };
}

}  // namespace dsa::cli

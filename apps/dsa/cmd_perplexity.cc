// `dsa perplexity`: perplexity ± error of a text for each attention mode, and the KL divergence
// and top-1 agreement of sparse against dense attention, in the manner of llama-perplexity
// (windows and scoring rule: src/perf/perplexity.h; docs/perplexity.md).
//
//   dsa perplexity -m DIR (-f FILE | --tokens-file FILE) [-c CTX] [-b CHUNK]
//                  [--attention sparse,dense] [-t THREADS] [--json]
//
// -f encodes the text with the model's tokenizer.json (special-token text is treated as plain
// text; every window starts with the BOS token as in llama.cpp); --tokens-file reads
// whitespace-separated ids as they are, for models without a tokenizer.
#include <fmt/format.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "commands.h"
#include "core/error.h"
#include "core/file_read.h"
#include "core/progress.h"
#include "core/thread_pool.h"
#include "flag_values.h"
#include "model/forward.h"
#include "perf/perplexity.h"
#include "text/tokenizer.h"
#include "token_input.h"

namespace dsa::cli {
namespace fs = std::filesystem;
namespace {

using nlohmann::json;

struct PerplexityOptions {
  std::string model_dir;
  std::string text_file;
  std::string tokens_file;
  std::string context;    // default min(512, max_position_embeddings)
  std::string chunk;      // default min(context, 512)
  std::string attention;  // default sparse,dense (dense for V3 models)
  std::string threads;
  bool json = false;
};

// Non-blocking open, regular files only, at most kMaxTextFileBytes (core/file_read.h).
std::string read_whole_file(const std::string& path, std::string_view flag) {
  std::error_code error;
  if (!fs::exists(path, error)) fail("{}: {}: no such file", flag, path);
  return read_regular_file(path, fmt::format("{} file", flag));
}

struct Input {
  std::vector<int32_t> tokens;
  std::optional<int32_t> bos;
  std::string source;  // the file, for the report
};

Input read_input(const PerplexityOptions& o, const Model& model) {
  Input input;
  if (!o.tokens_file.empty()) {
    input.source = o.tokens_file;
    input.tokens =
        parse_token_ids(read_whole_file(o.tokens_file, "--tokens-file"), "--tokens-file");
    const int64_t vocab = model.config().vocab_size;
    for (size_t i = 0; i < input.tokens.size(); ++i) {
      if (input.tokens[i] >= vocab) {
        fail("--tokens-file: token {} (item {}) is outside the model's vocabulary ({})",
             input.tokens[i], i + 1, vocab);
      }
    }
    return input;
  }
  input.source = o.text_file;
  const std::string text = read_whole_file(o.text_file, "-f");
  if (!fs::exists(fs::path(o.model_dir) / "tokenizer.json")) {
    fail("-f: the model in {} has no tokenizer.json to encode the text; give --tokens-file instead",
         o.model_dir);
  }
  const text::Tokenizer tokenizer = text::Tokenizer::from_model_dir(o.model_dir);
  if (tokenizer.vocab_size() > model.config().vocab_size) {
    fail("-f: the tokenizer's {} tokens exceed the model's vocabulary ({})", tokenizer.vocab_size(),
         model.config().vocab_size);
  }
  input.tokens = tokenizer.encode(text, /*allow_special=*/false);
  input.bos = tokenizer.bos_id();
  return input;
}

json result_json(const PerplexityResult& r, const PerplexityConfig& config, const Input& input,
                 const std::string& model, int threads) {
  json modes = json::array();
  for (const ModePerplexity& m : r.modes) {
    modes.push_back({{"mode", attention_mode_name(m.mode)},
                     {"ppl", m.perplexity()},
                     {"ppl_error", m.perplexity_error()},
                     {"mean_nll", m.nll.mean()},
                     {"mean_nll_error", m.nll.standard_error()},
                     {"scored_tokens", m.nll.count()},
                     {"seconds", m.seconds},
                     {"tokens_per_s", double(m.tokens_run) / m.seconds}});
  }
  json comparisons = json::array();
  for (const ModeComparison& c : r.comparisons) {
    comparisons.push_back({{"mode", attention_mode_name(c.mode)},
                           {"reference", "dense"},
                           {"mean_kl", c.kl.mean()},
                           {"mean_kl_error", c.kl.standard_error()},
                           {"max_kl", c.kl.max()},
                           {"top1_agreement_pct", 100 * c.top1_agreement()},
                           {"top1_agreement_error_pct", 100 * c.top1_error()},
                           {"scored_tokens", c.kl.count()}});
  }
  return {{"model", model},
          {"file", input.source},
          {"tokens", input.tokens.size()},
          {"context", config.context},
          {"chunk", config.chunk},
          {"windows", r.windows},
          {"scored_per_window", r.scored_per_window},
          {"bos", config.bos ? json(*config.bos) : json(nullptr)},
          {"threads", threads},
          {"modes", modes},
          {"vs_dense", comparisons}};
}

void print_report(const PerplexityResult& r, const PerplexityConfig& config, const Input& input,
                  const std::string& model, int threads) {
  const int64_t used = r.windows * config.context;
  fmt::print("perplexity of {} on {} ({} threads)\n", model, input.source, threads);
  fmt::print(
      "{} windows of {} tokens ({} of {} tokens{}), each from an empty cache; scored: the second "
      "half of each window, {} tokens per window, {} per mode\n\n",
      r.windows, config.context, used, input.tokens.size(),
      config.bos ? ", each window starting with BOS" : "", r.scored_per_window,
      r.windows * r.scored_per_window);
  fmt::print("| mode | PPL | mean NLL (nats) | scored tokens | forward t/s |\n");
  fmt::print("|---|---:|---:|---:|---:|\n");
  for (const ModePerplexity& m : r.modes) {
    fmt::print("| {} | {:.4f} ± {:.4f} | {:.6f} ± {:.6f} | {} | {:.1f} |\n",
               attention_mode_name(m.mode), m.perplexity(), m.perplexity_error(), m.nll.mean(),
               m.nll.standard_error(), m.nll.count(), double(m.tokens_run) / m.seconds);
  }
  fmt::print("\n± is the standard error of the mean over the scored tokens.\n");
  for (const ModeComparison& c : r.comparisons) {
    const std::string_view name = attention_mode_name(c.mode);
    fmt::print(
        "{} vs dense: mean KL(dense || {}) {:.6g} ± {:.6g} nats/token, max {:.6g}; top-1 "
        "agreement {:.2f} ± {:.2f} %\n",
        name, name, c.kl.mean(), c.kl.standard_error(), c.kl.max(), 100 * c.top1_agreement(),
        100 * c.top1_error());
  }
}

void run_perplexity_command(const PerplexityOptions& o) {
  if (o.text_file.empty() == o.tokens_file.empty()) {
    fail("perplexity: give exactly one of -f FILE (text) or --tokens-file FILE (token ids)");
  }
  // Flags and files are checked before the (possibly long) model load.
  if (!o.text_file.empty()) read_whole_file(o.text_file, "-f");
  if (!o.tokens_file.empty()) read_whole_file(o.tokens_file, "--tokens-file");
  std::optional<int64_t> context, chunk;
  if (!o.context.empty()) context = parse_int_flag(o.context, "-c", 2);
  if (!o.chunk.empty()) chunk = parse_int_flag(o.chunk, "-b", 1);
  std::vector<AttentionMode> modes;
  if (!o.attention.empty()) modes = parse_attention_modes(o.attention, "--attention");
  const int threads = o.threads.empty()
                          ? ThreadPool::hardware_threads()
                          : int(std::min<int64_t>(parse_int_flag(o.threads, "--threads", 1), 4096));

  ThreadPool pool(threads);
  std::unique_ptr<Model> model;
  try {
    model = Model::load(o.model_dir, pool);
  } catch (const Error& e) {
    fail("perplexity: cannot load the model in {}: {}", o.model_dir, e.what());
  }
  const ModelConfig& c = model->config();
  PerplexityConfig config;
  config.context = context.value_or(std::min<int64_t>(512, c.max_position_embeddings));
  config.chunk = chunk.value_or(std::min<int64_t>(config.context, 512));
  config.modes = !modes.empty()    ? modes
                 : c.has_indexer() ? std::vector{AttentionMode::kSparse, AttentionMode::kDense}
                                   : std::vector{AttentionMode::kDense};
  const Input input = read_input(o, *model);
  config.bos = input.bos;
  validate(config, c, int64_t(input.tokens.size()));

  std::unique_ptr<ProgressBar> bar;
  const PerplexityResult result =
      run_perplexity(*model, input.tokens, config, pool, [&](int64_t done, int64_t total) {
        if (!bar) bar = std::make_unique<ProgressBar>("perplexity", total, ProgressUnit::kItems);
        bar->update(uint64_t(done));
      });
  bar.reset();  // the destructor draws the last frame
  const std::string name = model_folder_name(o.model_dir);
  if (o.json) {
    fmt::print("{}\n", result_json(result, config, input, name, pool.size()).dump(2));
  } else {
    print_report(result, config, input, name, pool.size());
  }
}

}  // namespace

void register_perplexity(CLI::App& app) {
  auto o = std::make_shared<PerplexityOptions>();
  CLI::App* cmd = app.add_subcommand(
      "perplexity", "Perplexity ± error per attention mode, and KL / top-1 of sparse vs dense");
  cmd->add_option("-m,--model", o->model_dir, "Model folder (config.json + safetensors)")
      ->required();
  cmd->add_option("-f,--file", o->text_file, "Text file, encoded with the model's tokenizer.json");
  cmd->add_option("--tokens-file", o->tokens_file,
                  "File of whitespace-separated token ids (models without a tokenizer)");
  cmd->add_option("-c,--ctx-size", o->context,
                  "Tokens per window (default: 512, at most max_position_embeddings)");
  cmd->add_option("-b,--batch-size", o->chunk, "Tokens per forward call (default: min(ctx, 512))");
  cmd->add_option("--attention", o->attention,
                  "Comma-separated modes: sparse, dense, auto (default sparse,dense; V3: dense)");
  cmd->add_option("-t,--threads", o->threads, "Threads (default: all hardware threads)");
  cmd->add_flag("--json", o->json, "Print one JSON object instead of the report");
  cmd->callback([o] { run_perplexity_command(*o); });
}

}  // namespace dsa::cli

// `dsa eval`: what the DSA recipe is judged by (docs/dsa-recipe.md), per attention mode, on a
// model and the held-out split of its data set:
//   ppl         held-out perplexity, sparse against dense (src/perf/perplexity.h: windows of -c
//               tokens from an empty cache, the second half of each scored)
//   passkey     passkey retrieval accuracy over context length x needle depth (llama.cpp's
//               passkey text), greedy (src/eval/retrieval.h)
//   kv_recall   multi-key associative recall over the same grid
//   needle      a magic number hidden in held-out text, over the same grid
//   recall      the indexer's recall of the dense attention mass per layer, against the k/(t+1) of
//               an untrained indexer, and the overlap of training's fp32 and inference's FP8
//               top-k (src/eval/indexer_recall.h)
//   causality   changing a future token leaves every earlier logit bit-identical
//
//   dsa eval -m DIR --data DIR [-c CTX] [--attention sparse,dense] [--tasks LIST]
//            [--lengths 256,...] [--depths 0,0.25,...] [--trials N] [--ppl-windows N]
//            [--recall-windows N] [--seed S] [--topk K[,K2,...] [--plot FILE.svg]] [-t N]
//            [--json FILE] [--heatmap PREFIX]
//
// The retrieval samples use seeds `dsa data build` never draws (their stream is the eval seed's
// own) and, for the haystack of needles and kv_recall filler, the held-out text.
#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "commands.h"
#include "core/error.h"
#include "core/progress.h"
#include "core/thread_pool.h"
#include "eval/causality.h"
#include "eval/indexer_recall.h"
#include "eval/retrieval.h"
#include "eval_k_sweep.h"
#include "flag_values.h"
#include "model/forward.h"
#include "model/train_parameters.h"
#include "perf/perplexity.h"
#include "perf/svg_heatmap.h"
#include "text/tokenizer.h"
#include "train/data_dataset.h"
#include "train/data_random.h"
#include "train/synthetic_tasks.h"

namespace dsa::cli {
namespace fs = std::filesystem;
namespace {

using nlohmann::json;

constexpr std::string_view kTasks[] = {"ppl",    "passkey", "kv_recall",
                                       "needle", "recall",  "causality"};

struct EvalOptions {
  std::string model_dir;
  std::string data_dir;
  std::string context;  // default min(2048, max_position_embeddings)
  std::string attention;
  std::string tasks = "ppl,passkey,kv_recall,needle,recall,causality";
  std::string lengths;  // default powers of two from 256 to the context
  std::string depths = "0,0.25,0.5,0.75,1";
  std::string trials = "4";
  std::string ppl_windows = "0";
  std::string recall_windows = "4";
  std::string seed = "1000";
  std::string topk;  // default: the config's index_topk
  std::string threads;
  std::string json_file;
  std::string heatmap;
  std::string plot;  // the k sweep's perplexity against k
};

std::vector<double> parse_depths(const std::string& text) {
  std::vector<double> depths;
  for (const std::string& item : split_commas(text)) {
    size_t used = 0;
    double value = 0;
    try {
      value = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || !(value >= 0 && value <= 1)) {
      fail("--depths: '{}' is not a number in [0, 1]", item);
    }
    depths.push_back(value);
  }
  return depths;
}

std::set<std::string> parse_tasks(const std::string& text) {
  std::set<std::string> tasks;
  for (const std::string& item : split_commas(text)) {
    if (std::find(std::begin(kTasks), std::end(kTasks), item) == std::end(kTasks)) {
      fail("--tasks: unknown task '{}' (known: ppl, passkey, kv_recall, needle, recall, causality)",
           item);
    }
    tasks.insert(item);
  }
  return tasks;
}

// The held-out documents' text (BOS dropped) as haystack sentences for needles and kv_recall.
std::vector<std::string> heldout_sentences(const train::TokenDataset& data,
                                           const text::Tokenizer& tokenizer) {
  const std::span<const int32_t> tokens = data.all(train::Split::kHeldout);
  const std::span<const int64_t> starts = data.document_starts(train::Split::kHeldout);
  const std::span<const int32_t> kinds = data.document_kinds(train::Split::kHeldout);
  std::vector<std::string> sentences;
  for (size_t d = 0; d < starts.size(); ++d) {
    if (kinds[d] != int32_t(train::DocumentKind::kText)) continue;
    const int64_t begin = starts[d] + 1;  // after the BOS
    const int64_t end = d + 1 < starts.size() ? starts[d + 1] : int64_t(tokens.size());
    if (end <= begin) continue;
    const std::string text =
        tokenizer.decode(tokens.subspan(size_t(begin), size_t(end - begin)), true);
    for (std::string& s : train::split_sentences(text)) sentences.push_back(std::move(s));
  }
  return sentences;
}

// A progress callback that draws `label`'s bar (on a terminal) from the first report on; `bar`
// holds it, and resetting it draws the last frame.
std::function<void(int64_t, int64_t)> progress_bar(std::unique_ptr<ProgressBar>& bar,
                                                   std::string label) {
  return [&bar, label = std::move(label)](int64_t done, int64_t total) {
    if (!bar) bar = std::make_unique<ProgressBar>(label, total, ProgressUnit::kItems);
    bar->update(uint64_t(done));
  };
}

std::string depth_label(double depth) { return fmt::format("{:g}", depth); }

json retrieval_json(const eval::RetrievalResult& r, const eval::RetrievalGrid& grid) {
  json rows = json::array();
  for (size_t i = 0; i < grid.lengths.size(); ++i) {
    json row = json::array();
    for (size_t j = 0; j < grid.depths.size(); ++j) {
      row.push_back(r.cells[i * grid.depths.size() + j].accuracy());
    }
    rows.push_back(row);
  }
  return {{"task", train::synthetic_kind_name(r.kind)},
          {"mode", attention_mode_name(r.mode)},
          {"accuracy", r.accuracy()},
          {"correct", r.correct()},
          {"trials", r.trials()},
          {"lengths", grid.lengths},
          {"depths", grid.depths},
          {"trials_per_cell", grid.trials},
          {"grid", rows}};
}

void print_retrieval(const eval::RetrievalResult& r, const eval::RetrievalGrid& grid) {
  fmt::print("\n{} ({}): {:.1f}% ({} of {})\n\n| length \\ depth |",
             train::synthetic_kind_name(r.kind), attention_mode_name(r.mode), 100 * r.accuracy(),
             r.correct(), r.trials());
  for (double depth : grid.depths) fmt::print(" {} |", depth_label(depth));
  fmt::print("\n|---:|");
  for (size_t j = 0; j < grid.depths.size(); ++j) fmt::print("---:|");
  fmt::print("\n");
  for (size_t i = 0; i < grid.lengths.size(); ++i) {
    fmt::print("| {} |", grid.lengths[i]);
    for (size_t j = 0; j < grid.depths.size(); ++j) {
      const eval::RetrievalCell& c = r.cells[i * grid.depths.size() + j];
      fmt::print(" {}/{} |", c.correct, c.trials);
    }
    fmt::print("\n");
  }
}

void write_retrieval_heatmap(const std::string& prefix, const std::string& model,
                             const eval::RetrievalResult& r, const eval::RetrievalGrid& grid) {
  HeatMap map;
  const std::string task(train::synthetic_kind_name(r.kind));
  const std::string mode(attention_mode_name(r.mode));
  map.title = fmt::format("{} accuracy, {} attention: {}", task, mode, model);
  map.x_label = "needle depth (0 = start of the context)";
  map.y_label = "context length (tokens)";
  for (double depth : grid.depths) map.columns.push_back(depth_label(depth));
  for (size_t i = 0; i < grid.lengths.size(); ++i) {
    map.rows.push_back(std::to_string(grid.lengths[i]));
    std::vector<double>& row = map.values.emplace_back();
    for (size_t j = 0; j < grid.depths.size(); ++j) {
      row.push_back(r.cells[i * grid.depths.size() + j].accuracy());
    }
  }
  const fs::path path = fmt::format("{}-{}-{}.svg", prefix, task, mode);
  std::error_code ignored;
  if (path.has_parent_path()) fs::create_directories(path.parent_path(), ignored);
  write_heatmap_svg(path, map);
}

void run_eval(const EvalOptions& o) {
  // Flags first, before anything slow is loaded.
  std::set<std::string> tasks = parse_tasks(o.tasks);
  std::optional<int64_t> context;
  if (!o.context.empty()) context = parse_int_flag(o.context, "-c", 2);
  std::vector<AttentionMode> modes;
  if (!o.attention.empty()) modes = parse_attention_modes(o.attention, "--attention");
  std::vector<int64_t> lengths;
  if (!o.lengths.empty()) {
    for (const std::string& item : split_commas(o.lengths)) {
      lengths.push_back(parse_int_flag(item, "--lengths", 16));
    }
  }
  const std::vector<double> depths = parse_depths(o.depths);
  const int64_t trials = parse_int_flag(o.trials, "--trials", 1);
  const int64_t ppl_windows = parse_int_flag(o.ppl_windows, "--ppl-windows", 0);
  const int64_t recall_windows = parse_int_flag(o.recall_windows, "--recall-windows", 1);
  const uint64_t seed = uint64_t(parse_int_flag(o.seed, "--seed", 0));
  std::vector<int64_t> topks;
  if (!o.topk.empty()) {
    for (const std::string& item : split_commas(o.topk)) {
      topks.push_back(parse_int_flag(item, "--topk", 1));
    }
  }
  std::optional<int64_t> topk;
  if (topks.size() == 1) topk = topks[0];
  const int threads = o.threads.empty()
                          ? ThreadPool::hardware_threads()
                          : int(std::min<int64_t>(parse_int_flag(o.threads, "-t", 1), 4096));

  const train::TokenDataset data = train::TokenDataset::open(o.data_dir);
  const fs::path tokenizer_json = fs::path(o.model_dir) / "tokenizer.json";
  if (!fs::exists(tokenizer_json)) {
    fail("eval: the model in {} has no tokenizer.json (the retrieval tasks are text)", o.model_dir);
  }
  train::check_same_tokenizer(data, tokenizer_json);
  const text::Tokenizer tokenizer = text::Tokenizer::from_file(tokenizer_json);

  ThreadPool pool(threads);
  std::unique_ptr<Model> model;
  try {
    model = Model::load(o.model_dir, pool);
  } catch (const Error& e) {
    fail("eval: cannot load the model in {}: {}", o.model_dir, e.what());
  }
  if (topk) model->set_index_topk(*topk);
  const ModelConfig& c = model->config();
  train::check_vocabulary(data, c.vocab_size);
  if (modes.empty()) {
    modes = c.has_indexer() ? std::vector{AttentionMode::kSparse, AttentionMode::kDense}
                            : std::vector{AttentionMode::kDense};
  }
  const int64_t ctx = context.value_or(std::min<int64_t>(2048, c.max_position_embeddings));
  if (ctx > c.max_position_embeddings) {
    fail("-c: {} is beyond the model's max_position_embeddings ({})", ctx,
         c.max_position_embeddings);
  }
  if (lengths.empty()) {
    for (int64_t n = 256; n < ctx; n *= 2) lengths.push_back(n);
    lengths.push_back(ctx);
  }
  for (const int64_t length : lengths) {
    if (length > c.max_position_embeddings) {
      fail("--lengths: {} is beyond the model's max_position_embeddings ({})", length,
           c.max_position_embeddings);
    }
  }
  const std::string name = model_folder_name(o.model_dir);
  const std::span<const int32_t> heldout = data.all(train::Split::kHeldout);
  json report = {{"model", name},  {"model_dir", o.model_dir},   {"data", o.data_dir},
                 {"context", ctx}, {"index_topk", c.index_topk}, {"threads", pool.size()}};
  fmt::print("dsa eval of {} on the held-out split of {} ({} tokens), context {}, {} threads\n",
             name, o.data_dir, heldout.size(), ctx, pool.size());
  bool causality_failed = false;

  if (topks.size() > 1) {  // the k sweep replaces the tasks
    if (!c.has_indexer()) fail("--topk: the model has no lightning indexer");
    KSweepOptions sweep;
    sweep.model_dir = o.model_dir;
    sweep.topks = topks;
    sweep.context = ctx;
    sweep.ppl_windows = ppl_windows;
    sweep.recall_windows = recall_windows;
    sweep.bos = data.bos_id();
    sweep.plot = o.plot;
    report["k_sweep"] = run_k_sweep(*model, heldout, sweep, pool);
    tasks.clear();
  }

  if (tasks.count("ppl")) {
    PerplexityConfig config;
    config.context = ctx;
    config.chunk = std::min<int64_t>(ctx, 512);
    config.modes = modes;
    config.bos = data.bos_id();
    std::span<const int32_t> tokens = heldout;
    if (ppl_windows > 0) {
      tokens = tokens.first(std::min(tokens.size(), size_t(ppl_windows * ctx)));
    }
    validate(config, c, int64_t(tokens.size()));
    std::unique_ptr<ProgressBar> bar;
    const PerplexityResult r =
        run_perplexity(*model, tokens, config, pool, progress_bar(bar, "perplexity"));
    bar.reset();
    json ppl = {{"windows", r.windows}, {"scored_per_window", r.scored_per_window}};
    fmt::print("\nheld-out perplexity: {} windows of {} tokens, the second half of each scored\n\n",
               r.windows, ctx);
    fmt::print("| mode | PPL | mean NLL (nats) |\n|---|---:|---:|\n");
    for (const ModePerplexity& m : r.modes) {
      fmt::print("| {} | {:.3f} ± {:.3f} | {:.5f} ± {:.5f} |\n", attention_mode_name(m.mode),
                 m.perplexity(), m.perplexity_error(), m.nll.mean(), m.nll.standard_error());
      ppl["modes"].push_back({{"mode", attention_mode_name(m.mode)},
                              {"ppl", m.perplexity()},
                              {"ppl_error", m.perplexity_error()},
                              {"mean_nll", m.nll.mean()},
                              {"mean_nll_error", m.nll.standard_error()}});
    }
    for (const ModeComparison& m : r.comparisons) {
      fmt::print("{} vs dense: mean KL {:.5f} nats/token, top-1 agreement {:.2f}%\n",
                 attention_mode_name(m.mode), m.kl.mean(), 100 * m.top1_agreement());
      ppl["vs_dense"].push_back({{"mode", attention_mode_name(m.mode)},
                                 {"mean_kl", m.kl.mean()},
                                 {"top1_agreement", m.top1_agreement()}});
    }
    report["perplexity"] = ppl;
  }

  const bool retrieval =
      tasks.count("passkey") || tasks.count("kv_recall") || tasks.count("needle");
  const train::SyntheticTaskGenerator generator(
      tokenizer, retrieval ? heldout_sentences(data, tokenizer) : std::vector<std::string>{});
  for (const auto& [task, kind] : {std::pair{"passkey", train::SyntheticKind::kPasskey},
                                   std::pair{"kv_recall", train::SyntheticKind::kKeyValueRecall},
                                   std::pair{"needle", train::SyntheticKind::kNeedle}}) {
    if (!tasks.count(task)) continue;
    if (kind == train::SyntheticKind::kNeedle && generator.haystack_size() == 0) {
      fail("needle: the held-out split has no text sentences for the haystack");
    }
    eval::RetrievalGrid grid;
    grid.kind = kind;
    grid.lengths = lengths;
    grid.depths = depths;
    grid.trials = trials;
    grid.seed = train::hash_pair(seed, 0x6576616cull);  // "eval": a stream of its own
    grid.chunk = 512;
    for (const AttentionMode mode : modes) {
      std::unique_ptr<ProgressBar> bar;
      const eval::RetrievalResult r = eval::run_retrieval(
          *model, tokenizer, generator, grid, mode, pool,
          progress_bar(bar, fmt::format("{} {}", task, attention_mode_name(mode))));
      bar.reset();
      print_retrieval(r, grid);
      report["retrieval"].push_back(retrieval_json(r, grid));
      if (!o.heatmap.empty()) write_retrieval_heatmap(o.heatmap, name, r, grid);
    }
  }

  if (tasks.count("recall") && c.has_indexer()) {
    ParameterBuffer params = load_parameters(o.model_dir, pool);
    if (topk) params = with_index_topk(params, *topk);
    eval::IndexerRecallConfig config;
    config.context = ctx;
    config.max_windows = recall_windows;
    config.bos = data.bos_id();
    std::unique_ptr<ProgressBar> bar;
    const eval::IndexerRecallResult r = eval::run_indexer_recall(
        params, model.get(), heldout, config, pool, progress_bar(bar, "recall"));
    bar.reset();
    fmt::print(
        "\nindexer recall of the dense attention mass, top-{} of {} keys ({} windows, rows with "
        "more than {} keys)\n\n| layer | recall | oracle (best k keys) | chance k/(t+1) | fp32 vs "
        "FP8 "
        "top-k overlap |\n|---:|---:|---:|---:|---:|\n",
        c.index_topk, ctx, r.windows, c.index_topk);
    json layers = json::array();
    for (size_t l = 0; l < r.layers.size(); ++l) {
      const eval::LayerIndexerRecall& layer = r.layers[l];
      fmt::print("| {} | {:.4f} | {:.4f} | {:.4f} | {:.4f} |\n", l, layer.recall.mean(),
                 layer.oracle.mean(), layer.chance.mean(), layer.overlap.mean());
      layers.push_back({{"layer", l},
                        {"recall", layer.recall.mean()},
                        {"oracle", layer.oracle.mean()},
                        {"chance", layer.chance.mean()},
                        {"fp8_overlap", layer.overlap.mean()}});
    }
    fmt::print("| mean | {:.4f} | {:.4f} | {:.4f} | {:.4f} |\n", r.mean_recall(), r.mean_oracle(),
               r.mean_chance(), r.mean_overlap());
    report["indexer_recall"] = {{"windows", r.windows},
                                {"rows_per_window", r.rows_per_window},
                                {"mean_recall", r.mean_recall()},
                                {"mean_oracle", r.mean_oracle()},
                                {"mean_chance", r.mean_chance()},
                                {"mean_fp8_overlap", r.mean_overlap()},
                                {"layers", layers}};
  }

  if (tasks.count("causality")) {
    const int64_t T = std::min<int64_t>(ctx, int64_t(heldout.size()));
    if (T < 2) fail("causality: the held-out split has fewer than 2 tokens");
    const std::span<const int32_t> tokens = heldout.first(size_t(T));
    const int64_t j = T * 5 / 8;  // inside a prefill chunk, with rows of more than k keys before
    fmt::print("\ncausality: token {} of {} changed\n", j, T);
    for (const AttentionMode mode : modes) {
      const eval::CausalityResult r = eval::check_causality(*model, tokens, j, mode, 512, pool);
      fmt::print(
          "  {}: {} ({} of {} earlier rows differ, max |diff| {:g}; later rows changed: {})\n",
          attention_mode_name(mode), r.passed() ? "pass" : "FAIL", r.rows_differing, r.rows_before,
          r.max_abs_difference, r.later_rows_changed ? "yes" : "no");
      report["causality"].push_back({{"mode", attention_mode_name(mode)},
                                     {"passed", r.passed()},
                                     {"changed_position", j},
                                     {"tokens", T},
                                     {"rows_differing", r.rows_differing},
                                     {"max_abs_difference", r.max_abs_difference},
                                     {"later_rows_changed", r.later_rows_changed}});
      causality_failed = causality_failed || !r.passed();
    }
  }

  if (!o.json_file.empty()) {
    std::ofstream out(o.json_file, std::ios::binary);
    out << report.dump(2) << "\n";
    out.close();
    if (!out) fail("--json: cannot write {}", o.json_file);
  }
  if (causality_failed) fail("eval: the causality check failed (see above)");
}

}  // namespace

void register_eval(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  CLI::App* cmd = app.add_subcommand(
      "eval",
      "Held-out perplexity, retrieval grids, indexer recall and causality per attention mode");
  cmd->add_option("-m,--model", o->model_dir,
                  "Model folder (config.json + safetensors + tokenizer)")
      ->required();
  cmd->add_option("--data", o->data_dir, "Token data set of `dsa data build` (its held-out split)")
      ->required();
  cmd->add_option("-c,--ctx-size", o->context,
                  "Context of the perplexity and recall windows, longest retrieval length "
                  "(default: min(2048, max_position_embeddings))");
  cmd->add_option("--attention", o->attention,
                  "Comma-separated modes: sparse, dense, auto (default sparse,dense)");
  cmd->add_option(
      "--tasks", o->tasks,
      "Comma-separated: ppl, passkey, kv_recall, needle, recall, causality (default: all)");
  cmd->add_option("--lengths", o->lengths,
                  "Retrieval context lengths (default: 256, 512, ... up to -c)");
  cmd->add_option("--depths", o->depths, "Needle depths in [0, 1] (default 0,0.25,0.5,0.75,1)");
  cmd->add_option("--trials", o->trials, "Samples per length x depth cell (default 4)");
  cmd->add_option("--ppl-windows", o->ppl_windows,
                  "At most this many perplexity windows (default 0: all)");
  cmd->add_option("--recall-windows", o->recall_windows,
                  "Held-out windows for the indexer recall (default 4)");
  cmd->add_option("--seed", o->seed, "Seed of the retrieval samples (default 1000)");
  cmd->add_option("--topk", o->topk,
                  "Keys the indexer selects per row, instead of the config's index_topk; a list "
                  "K1,K2,... runs the k sweep (sparse perplexity and recall at each k) instead of "
                  "the tasks");
  cmd->add_option("--plot", o->plot, "With a k sweep: draw perplexity against k as an SVG");
  cmd->add_option("-t,--threads", o->threads, "Threads (default: all hardware threads)");
  cmd->add_option("--json", o->json_file, "Also write every result as one JSON object to FILE");
  cmd->add_option("--heatmap", o->heatmap,
                  "Write each retrieval grid as an SVG heat map PREFIX-<task>-<mode>.svg");
  cmd->callback([o] { run_eval(*o); });
}

}  // namespace dsa::cli

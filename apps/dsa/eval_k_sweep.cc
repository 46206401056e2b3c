#include "eval_k_sweep.h"

#include <fmt/format.h>

#include "core/error.h"
#include "eval/indexer_recall.h"
#include "model/train_parameters.h"
#include "perf/perplexity.h"
#include "perf/svg_plot.h"

namespace dsa::cli {

namespace {

ModePerplexity perplexity(const Model& model, std::span<const int32_t> heldout, AttentionMode mode,
                          const KSweepOptions& o, ThreadPool& pool) {
  PerplexityConfig config;
  config.context = o.context;
  config.chunk = std::min<int64_t>(o.context, 512);
  config.modes = {mode};
  config.bos = o.bos;
  std::span<const int32_t> tokens = heldout;
  if (o.ppl_windows > 0) {
    tokens = tokens.first(std::min(tokens.size(), size_t(o.ppl_windows * o.context)));
  }
  validate(config, model.config(), int64_t(tokens.size()));
  return run_perplexity(model, tokens, config, pool).modes.at(0);
}

}  // namespace

nlohmann::json run_k_sweep(Model& model, std::span<const int32_t> heldout, const KSweepOptions& o,
                           ThreadPool& pool) {
  const int64_t saved_topk = model.config().index_topk;
  const ParameterBuffer params = load_parameters(o.model_dir, pool);
  const ModePerplexity dense = perplexity(model, heldout, AttentionMode::kDense, o, pool);
  nlohmann::json points = nlohmann::json::array();
  PlotSeries sparse_series{.name = "sparse (DSA)", .x = {}, .y = {}, .color = "", .dashed = false};
  PlotSeries dense_series{.name = "dense", .x = {}, .y = {}, .color = "", .dashed = true};
  fmt::print("\nk sweep: held-out perplexity (windows of {} tokens) and indexer recall\n\n",
             o.context);
  fmt::print("| k | k/L | sparse PPL | vs dense | recall | oracle | chance |\n");
  fmt::print("|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const int64_t k : o.topks) {
    model.set_index_topk(k);
    const ModePerplexity sparse = perplexity(model, heldout, AttentionMode::kSparse, o, pool);
    nlohmann::json point = {{"k", k},
                            {"k_over_context", double(k) / double(o.context)},
                            {"ppl", sparse.perplexity()},
                            {"ppl_error", sparse.perplexity_error()}};
    double recall = std::nan(""), oracle = std::nan(""), chance = std::nan("");
    if (k < o.context) {  // otherwise no row has more keys than k: recall is 1 by definition
      eval::IndexerRecallConfig rc;
      rc.context = o.context;
      rc.max_windows = o.recall_windows;
      rc.bos = o.bos;
      const eval::IndexerRecallResult r =
          eval::run_indexer_recall(with_index_topk(params, k), nullptr, heldout, rc, pool);
      recall = r.mean_recall();
      oracle = r.mean_oracle();
      chance = r.mean_chance();
      point["recall"] = recall;
      point["oracle"] = oracle;
      point["chance"] = chance;
    }
    fmt::print("| {} | 1/{:g} | {:.3f} ± {:.3f} | {:+.2f}% | {:.4f} | {:.4f} | {:.4f} |\n", k,
               double(o.context) / double(k), sparse.perplexity(), sparse.perplexity_error(),
               100 * (sparse.perplexity() / dense.perplexity() - 1), recall, oracle, chance);
    points.push_back(point);
    sparse_series.x.push_back(double(k));
    sparse_series.y.push_back(sparse.perplexity());
    dense_series.x.push_back(double(k));
    dense_series.y.push_back(dense.perplexity());
  }
  model.set_index_topk(saved_topk);
  fmt::print("dense: {:.3f} ± {:.3f}\n", dense.perplexity(), dense.perplexity_error());
  if (!o.plot.empty()) {
    LineChart chart{.title = fmt::format("held-out perplexity against k (context {})", o.context),
                    .x_label = "k (keys per query)",
                    .y_label = "perplexity",
                    .series = {sparse_series, dense_series},
                    .y_from_zero = false};
    std::error_code ignored;
    if (o.plot.has_parent_path())
      std::filesystem::create_directories(o.plot.parent_path(), ignored);
    write_svg(o.plot, chart);
  }
  return {{"context", o.context},
          {"dense_ppl", dense.perplexity()},
          {"dense_ppl_error", dense.perplexity_error()},
          {"points", points}};
}

}  // namespace dsa::cli

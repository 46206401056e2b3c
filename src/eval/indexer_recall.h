// How well the lightning indexer finds the keys the main attention uses (dsa eval, the warm-up's
// aim): per layer, over held-out windows, the indexer's recall of the dense attention mass, and
// how often training's fp32 indexer and inference's FP8 indexer select different keys.
//
// Windows: consecutive, non-overlapping windows of `context` tokens (a remainder is left out), the
// first token of each replaced by BOS when one is given, as in perplexity.h.
//
// Recall (training graph, fp32, dense attention; TrainStepOptions::record_indexer_recall): for a
// row t with more than index_topk keys, Σ_{s ∈ top-k(I_t)} p_t[s], where p_t is the dense main
// attention summed over heads and L1-normalised. Chance is k / (t + 1) over the same rows: the
// expected recall of k keys picked at random, what an indexer that knows nothing gets. Oracle is
// the sum of the k largest p_t[s]: what a perfect indexer would get, the ceiling that a diffuse
// attention puts below 1.
//
// Selection agreement (with an inference model): over the same rows, |A ∩ B| / k between the
// training graph's top-k (fp32 indexer, sparse attention) and the inference forward's
// (`layers.N.indexer.topk`: FP8 keys and queries with the Hadamard rotation, sparse attention,
// bf16 weights), each on its own sparse forward of the window.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "core/thread_pool.h"
#include "model/forward.h"
#include "model/train_parameters.h"
#include "perf/perplexity.h"

namespace dsa::eval {

struct IndexerRecallConfig {
  int64_t context = 2048;   // tokens per window
  int64_t max_windows = 8;  // at most this many windows, from the start (0: all)
  std::optional<int32_t> bos;
  int64_t chunk = 512;  // tokens per prefill call of the inference forward
};

struct LayerIndexerRecall {
  RunningMean recall;   // per counted row
  RunningMean oracle;   // the best any k keys give: the sum of the row's k largest p_t[s]
  RunningMean chance;   // k / (t + 1) per counted row
  RunningMean overlap;  // |A ∩ B| / k per counted row (empty without an inference model)
};

struct IndexerRecallResult {
  int64_t windows = 0;
  int64_t rows_per_window = 0;             // rows with more than index_topk keys
  std::vector<LayerIndexerRecall> layers;  // every layer has an indexer in V3.2
  double mean_recall() const;              // over layers (each layer's mean, equally weighted)
  double mean_oracle() const;
  double mean_chance() const;
  double mean_overlap() const;  // NaN without an inference model
};

// `done` of `total` windows.
using RecallProgress = std::function<void(int64_t done, int64_t total)>;

// |a ∩ b| of two ascending lists of key indices (entries < 0 are padding and never match).
int64_t count_common_keys(std::span<const int32_t> a, std::span<const int32_t> b);

// Throws dsa::Error when the model has no indexer, the context has no row with more than
// index_topk keys or is beyond max_position_embeddings, there is not one whole window, or the
// inference model's config differs from the parameters'.
IndexerRecallResult run_indexer_recall(const ParameterBuffer& params, const Model* inference,
                                       std::span<const int32_t> tokens,
                                       const IndexerRecallConfig& config, ThreadPool& pool,
                                       const RecallProgress& progress = {});

}  // namespace dsa::eval

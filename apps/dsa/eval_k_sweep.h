// `dsa eval --topk K1,K2,...`: the sparse mode's held-out perplexity and the indexer's recall at
// each k, beside dense attention's perplexity (k does not change any weight, so one checkpoint
// gives the whole curve), as a table, JSON and an SVG of perplexity against k.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <vector>

#include "core/thread_pool.h"
#include "model/forward.h"

namespace dsa::cli {

struct KSweepOptions {
  std::filesystem::path model_dir;  // for the training graph's parameters (the recall)
  std::vector<int64_t> topks;
  int64_t context = 2048;
  int64_t ppl_windows = 0;  // 0: every window of the held-out split
  int64_t recall_windows = 4;
  std::optional<int32_t> bos;
  std::filesystem::path plot;  // empty: no plot
};

// Runs the sweep on `model` (its index_topk is changed, then restored) over `heldout`; returns
// {"context", "dense_ppl", "points": [{"k", "k_over_context", "ppl", "ppl_error", "recall",
// "oracle", "chance"}]} and prints the table.
nlohmann::json run_k_sweep(Model& model, std::span<const int32_t> heldout,
                           const KSweepOptions& options, ThreadPool& pool);

}  // namespace dsa::cli

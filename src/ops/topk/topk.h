// Top-k selection of indexer scores (dsa-reference.md §4): per row, the indices of the k largest
// scores, k = min(index_topk, valid entries).
//
// Rules (REF uses torch.topk, whose tie order is unspecified; these make the result exact and
// deterministic):
//   * valid entries are the finite and +inf scores; -inf (causally masked) and NaN entries are
//     never selected, so a row with fewer valid entries than k returns all of them;
//   * ties: at equal scores the lower index wins (-0.0 and +0.0 are equal);
//   * output: the selected indices in ascending order (the order sparse attention reads the cache
//     in), then -1 in every unused slot.
#pragma once

#include <cstdint>

#include "core/thread_pool.h"

namespace dsa {

constexpr int64_t kIndexTopk = 2048;  // index_topk of DeepSeek-V3.2

struct TopkParams {
  const float* scores = nullptr;  // [T, S]
  int32_t* indices = nullptr;     // [T, k]: ascending selected indices, then -1
  int64_t rows = 0;               // T
  int64_t cols = 0;               // S (< 2^31)
  int64_t k = kIndexTopk;
  // With fewer rows than threads (decode), a row of at least twice this many columns is split
  // into chunks of at least this many, one per thread, that run each pass in parallel.
  int64_t min_split_columns = 16384;
};

// Throws dsa::Error naming the bad field.
void validate(const TopkParams& params);

// Reference: sort the valid (score, index) pairs by score, descending, ties by index.
void topk_select_reference(const TopkParams& params);
// Radix select on the order-preserving integer image of the scores (no full sort); rows in
// parallel, or a long row's columns in parallel when rows are fewer than threads. Exactly the
// reference's result.
void topk_select(const TopkParams& params, ThreadPool& pool);

}  // namespace dsa

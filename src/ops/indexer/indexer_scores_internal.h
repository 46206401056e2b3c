// Shared by the two indexer score kernels (indexer_fast.cc: Highway fp32 FMA;
// indexer_scores_avx512bf16.cc: AVX512-BF16): the work decomposition and the BF16 entry point.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>

#include "ops/indexer/indexer.h"

namespace dsa::indexer_internal {

constexpr int64_t kKeyBlock = 256;  // keys per work item

inline int64_t key_blocks(const IndexerScoresParams& p) {
  return (p.keys + kKeyBlock - 1) / kKeyBlock;
}

// Work item = (query row t, block of keys), item = t * key_blocks + block.
// Keys [block_begin, valid_end) are to be scored; [valid_end, block_end) are masked.
struct ScoreItem {
  int64_t row, block_begin, valid_end;
};

// Writes -inf over the masked part of the item's block (keys after start_pos + row).
inline ScoreItem begin_score_item(const IndexerScoresParams& p, int64_t item) {
  const int64_t blocks = key_blocks(p);
  const int64_t t = item / blocks;
  const int64_t block_begin = item % blocks * kKeyBlock;
  const int64_t block_end = std::min(p.keys, block_begin + kKeyBlock);
  const int64_t valid_end = std::max(block_begin, std::min(block_end, p.start_pos + t + 1));
  float* scores = p.scores + t * p.keys;
  std::fill(scores + valid_end, scores + block_end, -std::numeric_limits<float>::infinity());
  return {t, block_begin, valid_end};
}

// Which query row's panel a thread holds. A decode row is split into several chunks per thread;
// converting its 64 heads x 128 codes again for each chunk cost as much as scoring ~250 keys, so
// each thread keeps its panel for the rest of the call. `call` identifies one indexer_scores
// call (0: no panel yet), so a panel never outlives the query codes it was made from.
struct PanelCache {
  uint64_t call = 0;
  int64_t row = -1;

  // True (and the cache now names call/row) when the panel must be built.
  bool rebuild(uint64_t call_id, int64_t query_row) {
    if (call == call_id && row == query_row) return false;
    call = call_id;
    row = query_row;
    return true;
  }
};

// A fresh id for each indexer_scores call (never 0).
inline uint64_t next_scores_call() {
  static std::atomic<uint64_t> calls{0};
  return ++calls;
}

// Scores work items [begin, end) with vdpbf16ps. Only call when
// detect_cpu_features().avx512bf16 (compiled with target attributes, not global flags).
void score_items_avx512bf16(const IndexerScoresParams& p, int64_t begin, int64_t end,
                            uint64_t call_id);

}  // namespace dsa::indexer_internal

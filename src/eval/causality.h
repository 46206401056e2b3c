// The causality check of dsa eval: change the token at position j of a sequence; the logits of
// every position before j must stay bit-identical, in the attention mode tested. The sequence runs
// as prefill chunks of `chunk` tokens (so position j may share a chunk with earlier rows, which is
// where a leak through the indexer's top-k, a causal mask or a blocked GEMM would show).
#pragma once

#include <cstdint>
#include <span>

#include "core/thread_pool.h"
#include "model/forward.h"

namespace dsa::eval {

struct CausalityResult {
  AttentionMode mode = AttentionMode::kSparse;
  int64_t tokens = 0;
  int64_t changed_position = 0;     // j
  int64_t rows_before = 0;          // j
  int64_t rows_differing = 0;       // rows < j whose logits are not bit-identical (0 to pass)
  double max_abs_difference = 0;    // over rows < j
  bool later_rows_changed = false;  // the change did reach rows >= j (the check can see a change)
  bool passed() const { return rows_differing == 0; }
};

// Throws dsa::Error for j outside [1, tokens), an empty or too long sequence, or chunk < 1. The
// token at j is replaced by (tokens[j] + 1) mod vocab.
CausalityResult check_causality(const Model& model, std::span<const int32_t> tokens, int64_t j,
                                AttentionMode mode, int64_t chunk, ThreadPool& pool);

}  // namespace dsa::eval

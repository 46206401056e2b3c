// Training batches and held-out windows from a TokenDataset.
//
// Where windows start: at every document start, and inside a text document every `seq` tokens
// after its start, so long documents are covered whole while every window that can begin at a
// document does begin with its BOS, as a prompt does at inference. A synthetic task is only ever
// entered at its start: a window that began in its middle would hold answers whose question or
// key is missing, teaching noise. A window runs on across document boundaries (the BOS separators
// stay in it) and wraps from the end of the split to its start, so every start is usable.
//
// Order: epoch e is a permutation of all window starts, shuffled from (seed, e); window g of the
// run (g = batch index * batch + row) is entry g mod C of epoch g / C, C the number of starts.
// Every start is drawn once per epoch, and the stream is a pure function of (seed, position).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "train/data_dataset.h"

namespace dsa::train {

class BatchSampler {
 public:
  // `data` must outlive the sampler. Throws dsa::Error for seq < 1, batch < 1, or a split with
  // fewer than seq tokens.
  BatchSampler(const TokenDataset& data, Split split, int64_t seq, int64_t batch, uint64_t seed);

  void next(std::vector<int32_t>& tokens);                // [batch * seq], row-major
  uint64_t position() const { return position_; }         // batches drawn so far
  void seek(uint64_t position) { position_ = position; }  // restore

  // Where each window may start (ascending): exposed for tests and reports.
  const std::vector<int64_t>& window_starts() const { return starts_; }
  // The start of window `g` of the run (g = batch index * batch + row).
  int64_t window_start(uint64_t g);

 private:
  const std::vector<int64_t>& permutation(uint64_t epoch);

  std::span<const int32_t> tokens_;
  int64_t seq_;
  int64_t batch_;
  uint64_t seed_;
  uint64_t position_ = 0;
  std::vector<int64_t> starts_;
  uint64_t cached_epoch_ = UINT64_MAX;
  std::vector<int64_t> cached_permutation_;  // starts_ shuffled for cached_epoch_
};

// Held-out evaluation windows: non-overlapping windows of seq tokens, the i-th of K beginning at
// token floor(i * W / K) * seq where W = tokens / seq windows fit, K = min(W, max_windows), so a
// capped list still spreads over the whole split. A fixed list: it depends on nothing but the data
// and the arguments. Throws dsa::Error for seq < 1, max_windows < 1, or a held-out split with
// fewer than seq tokens.
std::vector<std::vector<int32_t>> heldout_windows(const TokenDataset& data, int64_t seq,
                                                  int64_t max_windows);

}  // namespace dsa::train

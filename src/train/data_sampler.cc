#include "train/data_sampler.h"

#include <algorithm>
#include <string>

#include "core/error.h"
#include "train/data_random.h"

namespace dsa::train {
namespace {

void check_split_length(const TokenDataset& data, Split split, int64_t seq) {
  if (seq < 1) fail("sequence length must be at least 1, got {}", seq);
  const int64_t n = data.tokens(split);
  if (n < seq) {
    fail("the {} split of {} has {} tokens, fewer than the sequence length {}", split_name(split),
         data.directory().string(), n, seq);
  }
}

}  // namespace

BatchSampler::BatchSampler(const TokenDataset& data, Split split, int64_t seq, int64_t batch,
                           uint64_t seed)
    : tokens_(data.all(split)), seq_(seq), batch_(batch), seed_(seed) {
  check_split_length(data, split, seq);
  if (batch < 1) fail("batch size must be at least 1, got {}", batch);
  const std::span<const int64_t> doc_starts = data.document_starts(split);
  const std::span<const int32_t> kinds = data.document_kinds(split);
  const int64_t n = int64_t(tokens_.size());
  for (size_t d = 0; d < doc_starts.size(); ++d) {
    const int64_t begin = doc_starts[d];
    const int64_t end = d + 1 < doc_starts.size() ? doc_starts[d + 1] : n;
    starts_.push_back(begin);
    if (kinds[d] != int32_t(DocumentKind::kText)) continue;
    for (int64_t s = begin + seq; s < end; s += seq) starts_.push_back(s);
  }
  DSA_CHECK(!starts_.empty(), "a split of {} tokens has no document", n);
}

const std::vector<int64_t>& BatchSampler::permutation(uint64_t epoch) {
  if (epoch != cached_epoch_) {
    cached_permutation_ = starts_;
    SplitMix64 rng(hash_pair(seed_, epoch));
    for (size_t i = cached_permutation_.size(); i > 1; --i) {  // Fisher-Yates
      std::swap(cached_permutation_[i - 1], cached_permutation_[size_t(rng.below(i))]);
    }
    cached_epoch_ = epoch;
  }
  return cached_permutation_;
}

int64_t BatchSampler::window_start(uint64_t g) {
  const uint64_t count = starts_.size();
  return permutation(g / count)[size_t(g % count)];
}

void BatchSampler::next(std::vector<int32_t>& tokens) {
  tokens.resize(size_t(batch_ * seq_));
  const int64_t n = int64_t(tokens_.size());
  for (int64_t row = 0; row < batch_; ++row) {
    const int64_t start = window_start(position_ * uint64_t(batch_) + uint64_t(row));
    int32_t* out = tokens.data() + row * seq_;
    // The window wraps past the end of the split to its start (n >= seq, so at most once).
    const int64_t first = std::min(seq_, n - start);
    std::copy_n(tokens_.data() + start, first, out);
    std::copy_n(tokens_.data(), seq_ - first, out + first);
  }
  ++position_;
}

std::vector<std::vector<int32_t>> heldout_windows(const TokenDataset& data, int64_t seq,
                                                  int64_t max_windows) {
  check_split_length(data, Split::kHeldout, seq);
  if (max_windows < 1) fail("max_windows must be at least 1, got {}", max_windows);
  const std::span<const int32_t> tokens = data.all(Split::kHeldout);
  const int64_t fit = int64_t(tokens.size()) / seq;
  const int64_t count = std::min(fit, max_windows);
  std::vector<std::vector<int32_t>> windows;
  windows.reserve(size_t(count));
  for (int64_t i = 0; i < count; ++i) {
    // i * fit can pass 2^63 for huge splits; it always fits in 128 bits.
    const int64_t slot = int64_t((Uint128(uint64_t(i)) * uint64_t(fit)) / uint64_t(count));
    const int32_t* begin = tokens.data() + slot * seq;
    windows.emplace_back(begin, begin + seq);
  }
  return windows;
}

}  // namespace dsa::train

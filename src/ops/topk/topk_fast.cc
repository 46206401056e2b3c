// Radix select for top-k (see topk.h). Scores map to unsigned keys whose integer order is the
// float order; four 8-bit digit passes find the k-th largest key, then one ascending pass emits
// every key above it and the lowest-indexed keys equal to it. Work per row is O(S), with later
// passes only over the keys that still share the threshold's leading digits.
//
// A row can be split into column chunks that run every pass in parallel: decode selects one row
// of up to 128K scores, which on one thread would leave the other cores idle. Each chunk keeps
// its own digit histogram and candidate list; the histograms are summed to pick each digit, and
// they also count, per chunk, the keys above the final threshold and equal to it, so that every
// chunk knows where its indices go in the ascending output without another pass.
#include <algorithm>
#include <array>
#include <bit>
#include <limits>
#include <vector>

#include "ops/topk/topk.h"

namespace dsa {
namespace {

// Order-preserving image of a float: flip all bits of negatives, set the sign bit of positives.
// -0.0 is first made +0.0 so that the two compare equal, as floats do.
uint32_t order_key(float score) {
  uint32_t bits = std::bit_cast<uint32_t>(score);
  if (bits == 0x80000000u) bits = 0;
  return (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
}

const uint32_t kNegativeInfinityKey = order_key(-std::numeric_limits<float>::infinity());
const uint32_t kPositiveInfinityKey = order_key(std::numeric_limits<float>::infinity());

// Valid: above -inf and at most +inf (NaNs map outside this range). Invalid entries get key 0,
// below every valid key.
uint32_t valid_key(float score) {
  const uint32_t key = order_key(score);
  return key > kNegativeInfinityKey && key <= kPositiveInfinityKey ? key : 0;
}

using Histogram = std::array<int64_t, 256>;

// Candidate keys from which a refinement pass after the first is worth splitting over the pool.
constexpr int64_t kParallelRefineCandidates = 8192;

// One chunk's share of a row: columns [begin, end).
struct Chunk {
  int64_t begin = 0, end = 0;
  Histogram histogram{};  // of the digit being decided, over this chunk's candidates
  std::vector<uint32_t> candidates;
  int64_t valid = 0;  // keys != 0
  int64_t above = 0;  // keys above the threshold, known once every digit is decided
  int64_t equal = 0;  // keys equal to the threshold
  int64_t equal_taken = 0, out_offset = 0;
};

// Histograms of concentrated keys (scores of one magnitude share their top digit) increment the
// same bin back to back, a chain of store-to-load forwards; four interleaved sub-histograms
// break it.
struct SplitHistogram {
  std::array<Histogram, 4> parts{};
  void add(size_t i, uint32_t digit) { ++parts[i & 3][digit]; }
  void sum_into(Histogram& out) const {
    for (size_t d = 0; d < 256; ++d) out[d] = parts[0][d] + parts[1][d] + parts[2][d] + parts[3][d];
  }
};

// Pass 0: the keys of the chunk's columns and the histogram of their top digit.
void key_pass(const float* scores, uint32_t* keys, Chunk& c) {
  SplitHistogram histogram;
  int64_t valid = 0;
  for (int64_t s = c.begin; s < c.end; ++s) {
    const uint32_t key = valid_key(scores[s]);
    keys[s] = key;
    valid += key != 0;
    histogram.add(size_t(s), key >> 24);
  }
  histogram.sum_into(c.histogram);
  c.histogram[0] -= c.end - c.begin - valid;  // invalid keys are not counted
  c.valid = valid;
}

// After the digit at `shift` was decided: the keys that share the threshold's digits so far,
// and the histogram of their next digit. The first refinement reads the keys array, later ones
// the chunk's own candidates.
void refine_pass(const uint32_t* keys, uint32_t threshold, int shift, Chunk& c) {
  const uint32_t mask = ~uint32_t(0) << shift;
  const bool first = shift == 24;
  const uint32_t* source = first ? keys + c.begin : c.candidates.data();
  const size_t count = first ? size_t(c.end - c.begin) : c.candidates.size();
  if (first) c.candidates.resize(count);
  size_t kept = 0;
  SplitHistogram histogram;
  for (size_t i = 0; i < count; ++i) {
    const uint32_t key = source[i];
    if (key != 0 && (key & mask) == threshold) {
      c.candidates[kept] = key;  // kept <= i: in place is safe
      histogram.add(kept++, (key >> (shift - 8)) & 0xFF);
    }
  }
  histogram.sum_into(c.histogram);
  c.candidates.resize(kept);
}

// The ascending pass: the chunk's keys above the threshold and its share of the equal ones.
void write_pass(const uint32_t* keys, uint32_t threshold, const Chunk& c, int32_t* out) {
  int32_t* dst = out + c.out_offset;
  int64_t equal_left = c.equal_taken;
  const int64_t total = c.above + c.equal_taken;
  int64_t written = 0;
  for (int64_t s = c.begin; s < c.end && written < total; ++s) {
    const uint32_t key = keys[s];
    if (key > threshold || (key == threshold && equal_left > 0)) {
      equal_left -= key == threshold;
      dst[written++] = int32_t(s);
    }
  }
}

// Scratch of one row selection, kept per thread across calls: a decode step selects one row of
// up to 128K keys, and fresh 512 KB buffers on every call cost more in page faults than the
// selection itself.
struct RowScratch {
  std::vector<uint32_t> keys;
  std::vector<Chunk> chunks;
};

// Selects one row, running each pass over the chunks through `for_chunks(n, fn)`, which calls
// fn(i) for i in [0, n) (serially, or spread over a pool).
template <typename ForChunks>
void select_row(const float* scores, int64_t cols, int64_t k, int64_t chunk_count, int32_t* out,
                RowScratch& scratch, ForChunks&& for_chunks) {
  scratch.keys.resize(size_t(cols));
  scratch.chunks.resize(size_t(chunk_count));
  uint32_t* keys = scratch.keys.data();
  std::vector<Chunk>& chunks = scratch.chunks;
  for (int64_t i = 0; i < chunk_count; ++i) {
    chunks[size_t(i)].begin = cols * i / chunk_count;
    chunks[size_t(i)].end = cols * (i + 1) / chunk_count;
  }
  for_chunks(chunk_count, [&](int64_t i) { key_pass(scores, keys, chunks[size_t(i)]); });

  int64_t valid = 0;
  for (const Chunk& c : chunks) valid += c.valid;
  const int64_t selected = std::min(valid, k);
  std::fill(out + selected, out + k, -1);
  if (selected == 0) return;

  uint32_t threshold = 1;  // below every valid key: when every valid key is selected
  if (selected == valid) {
    for (Chunk& c : chunks) {
      c.above = c.valid;
      c.equal_taken = 0;
    }
  } else {
    // Decide the threshold digit by digit: `needed` is how many keys equal to the threshold
    // prefix still have to be taken.
    threshold = 0;
    int64_t needed = selected;
    for (Chunk& c : chunks) c.above = 0;
    for (int shift = 24;; shift -= 8) {
      Histogram total{};
      for (const Chunk& c : chunks) {
        for (size_t d = 0; d < 256; ++d) total[d] += c.histogram[d];
      }
      int digit = 255;
      for (; digit > 0 && needed > total[size_t(digit)]; --digit) needed -= total[size_t(digit)];
      threshold |= uint32_t(digit) << shift;
      for (Chunk& c : chunks) {
        for (size_t d = size_t(digit) + 1; d < 256; ++d) c.above += c.histogram[d];
        c.equal = c.histogram[size_t(digit)];
      }
      if (shift == 0) break;
      // Later passes read only the candidates, usually a few hundred keys: not worth waking
      // the pool for.
      int64_t candidates = 0;
      for (const Chunk& c : chunks) candidates += c.equal;
      const auto refine = [&](int64_t i) {
        refine_pass(keys, threshold, shift, chunks[size_t(i)]);
      };
      if (shift == 24 || candidates >= kParallelRefineCandidates) {
        for_chunks(chunk_count, refine);
      } else {
        for (int64_t i = 0; i < chunk_count; ++i) refine(i);
      }
    }
    // The first `needed` keys equal to the threshold, in column order, are taken.
    for (Chunk& c : chunks) {
      c.equal_taken = std::min(c.equal, needed);
      needed -= c.equal_taken;
    }
  }
  int64_t offset = 0;
  for (Chunk& c : chunks) {
    c.out_offset = offset;
    offset += c.above + c.equal_taken;
  }
  for_chunks(chunk_count, [&](int64_t i) { write_pass(keys, threshold, chunks[size_t(i)], out); });
}

}  // namespace

void topk_select(const TopkParams& params, ThreadPool& pool) {
  validate(params);
  const int64_t threads = pool.size();
  if (params.rows >= threads || params.cols < 2 * params.min_split_columns) {
    // Enough rows to keep every thread busy (or rows too short to split): a row per thread.
    pool.parallel_for(params.rows, 1, [&](int64_t begin, int64_t end) {
      thread_local RowScratch scratch;
      for (int64_t r = begin; r < end; ++r) {
        select_row(params.scores + r * params.cols, params.cols, params.k, 1,
                   params.indices + r * params.k, scratch, [](int64_t n, auto&& fn) {
                     for (int64_t i = 0; i < n; ++i) fn(i);
                   });
      }
    });
    return;
  }
  // Fewer rows than threads: each row in turn, its passes split over the pool.
  const int64_t chunks = std::min(threads, params.cols / params.min_split_columns);
  thread_local RowScratch scratch;
  for (int64_t r = 0; r < params.rows; ++r) {
    select_row(params.scores + r * params.cols, params.cols, params.k, chunks,
               params.indices + r * params.k, scratch, [&](int64_t n, auto&& fn) {
                 pool.parallel_for(n, 1, [&](int64_t begin, int64_t end) {
                   for (int64_t i = begin; i < end; ++i) fn(i);
                 });
               });
  }
}

}  // namespace dsa

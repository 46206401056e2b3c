// Radix select for top-k (see topk.h). Scores map to unsigned keys whose integer order is the
// float order; four 8-bit digit passes find the k-th largest key, then one ascending scan emits
// every key above it and the lowest-indexed keys equal to it. Work per row is O(S), with later
// passes only over the keys that still share the threshold's leading digits.
#include <algorithm>
#include <array>
#include <bit>
#include <limits>
#include <vector>

#include "ops/topk.h"

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
bool is_valid_key(uint32_t key) {
  return key > kNegativeInfinityKey && key <= kPositiveInfinityKey;
}

void select_row(const float* scores, int64_t cols, int64_t k, int32_t* out,
                std::vector<uint32_t>& keys, std::vector<uint32_t>& candidates) {
  keys.resize(size_t(cols));
  std::array<int64_t, 256> histogram{};
  int64_t valid = 0;
  for (int64_t s = 0; s < cols; ++s) {
    uint32_t key = order_key(scores[s]);
    if (!is_valid_key(key)) key = 0;
    keys[size_t(s)] = key;
    if (key != 0) {
      ++valid;
      ++histogram[key >> 24];
    }
  }
  const int64_t selected = std::min(valid, k);
  std::fill(out + selected, out + k, -1);
  if (selected == 0) return;

  // Find the threshold key digit by digit: `needed` is how many keys equal to the threshold
  // prefix still have to be taken.
  uint32_t threshold = 0;
  int64_t needed = selected;
  if (selected == valid) {
    threshold = 1;  // below every valid key: the scan takes them all
    needed = 0;
  } else {
    for (int shift = 24;; shift -= 8) {
      int digit = 255;
      for (; digit > 0 && needed > histogram[size_t(digit)]; --digit) {
        needed -= histogram[size_t(digit)];
      }
      threshold |= uint32_t(digit) << shift;
      if (shift == 0) break;
      // Keep the keys that share the threshold's digits so far and histogram their next digit.
      const uint32_t mask = ~uint32_t(0) << shift;
      const bool first_pass = shift == 24;
      size_t kept = 0;
      histogram.fill(0);
      const size_t count = first_pass ? keys.size() : candidates.size();
      if (first_pass) candidates.resize(count);
      for (size_t i = 0; i < count; ++i) {
        const uint32_t key = first_pass ? keys[i] : candidates[i];
        if (key != 0 && (key & mask) == threshold) {
          candidates[kept++] = key;
          ++histogram[(key >> (shift - 8)) & 0xFF];
        }
      }
      candidates.resize(kept);
    }
  }

  // Ascending scan: every key above the threshold, and the first `needed` keys equal to it.
  int64_t written = 0;
  int64_t equal_taken = 0;
  for (int64_t s = 0; s < cols && written < selected; ++s) {
    const uint32_t key = keys[size_t(s)];
    if (key > threshold || (key == threshold && equal_taken++ < needed))
      out[written++] = int32_t(s);
  }
}

}  // namespace

void topk_select(const TopkParams& params, ThreadPool& pool) {
  validate(params);
  pool.parallel_for(params.rows, 1, [&](int64_t begin, int64_t end) {
    // Scratch kept per thread across calls: a decode step selects one row of up to 128K keys, and
    // fresh 512 KB buffers on every call cost more in page faults than the selection itself.
    thread_local std::vector<uint32_t> keys, candidates;
    for (int64_t r = begin; r < end; ++r) {
      select_row(params.scores + r * params.cols, params.cols, params.k,
                 params.indices + r * params.k, keys, candidates);
    }
  });
}

}  // namespace dsa

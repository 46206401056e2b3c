// What the indexer training-op tests share (test_indexer_train.cc: the scores;
// test_indexer_loss_train.cc: the attention target, the KL loss and the whole chain): random
// data, fp32/double conversions, central differences and index sets.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "core/error.h"
#include "ops/indexer/indexer_train.h"

namespace dsa::indexer_train_test {

constexpr double kU = 0x1p-24;  // fp32 unit roundoff
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

inline std::vector<double> normal(size_t n, uint32_t seed, double stddev = 1.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> dist(0.0, stddev);
  std::vector<double> out(n);
  for (auto& v : out) v = dist(rng);
  return out;
}

// fp32 values and the same values in double (so that double bounds are about the fp32 inputs).
inline std::vector<float> to_float(const std::vector<double>& v) { return {v.begin(), v.end()}; }
inline std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }
inline std::vector<double> rounded(const std::vector<double>& v) { return to_double(to_float(v)); }

// Central difference of f() in x[i]. Step 1e-6 scaled to |x[i]|; the divisor is the difference
// of the two points actually taken.
template <class F>
inline double central_difference(std::vector<double>& x, size_t i, F f) {
  const double saved = x[i];
  const double step = 1e-6 * std::max(1.0, std::fabs(saved));
  const double hi = saved + step, lo = saved - step;
  x[i] = hi;
  const double up = f();
  x[i] = lo;
  const double down = f();
  x[i] = saved;
  return (up - down) / (hi - lo);
}

// Per row t, up to `count(t)` distinct causal keys in random slots of [T, topk], the rest -1.
inline std::vector<int32_t> random_indices(int64_t tokens, int64_t topk, uint32_t seed,
                                           int64_t empty_row = -1) {
  std::mt19937 rng(seed);
  std::vector<int32_t> indices(size_t(tokens * topk), -1);
  for (int64_t t = 0; t < tokens; ++t) {
    if (t == empty_row) continue;
    std::vector<int32_t> keys(size_t(t + 1));
    std::iota(keys.begin(), keys.end(), 0);
    std::shuffle(keys.begin(), keys.end(), rng);
    // Leave one slot empty in odd rows (when the row has keys to spare) to test -1 slots.
    const int64_t count = std::min<int64_t>(t + 1, t % 2 ? topk - 1 : topk);
    std::vector<int64_t> slots(static_cast<size_t>(topk));
    std::iota(slots.begin(), slots.end(), 0);
    std::shuffle(slots.begin(), slots.end(), rng);
    for (int64_t j = 0; j < count; ++j) indices[size_t(t * topk + slots[size_t(j)])] = keys[j];
  }
  return indices;
}

// K_t as a mask [T, T].
inline std::vector<bool> key_mask(const int32_t* indices, int64_t topk, int64_t tokens) {
  std::vector<bool> mask(size_t(tokens * tokens), false);
  for (int64_t t = 0; t < tokens; ++t) {
    if (!indices) {
      for (int64_t s = 0; s <= t; ++s) mask[size_t(t * tokens + s)] = true;
    } else {
      for (int64_t j = 0; j < topk; ++j) {
        if (indices[t * topk + j] >= 0) mask[size_t(t * tokens + indices[t * topk + j])] = true;
      }
    }
  }
  return mask;
}

// The scores' inputs in double (the chain tests of both files use them).
struct ScoresData {
  int64_t tokens, heads, dim;
  std::vector<double> q, k, w;  // fp32-representable values
};

inline ScoresData make_scores(int64_t tokens, int64_t heads, int64_t dim, uint32_t seed) {
  return {tokens,
          heads,
          dim,
          rounded(normal(size_t(tokens * heads * dim), seed)),
          rounded(normal(size_t(tokens * dim), seed + 1)),
          rounded(normal(size_t(tokens * heads), seed + 2, 0.5))};
}

inline double exact_qk(const ScoresData& c, int64_t t, int64_t h, int64_t s) {
  double sum = 0;
  for (int64_t d = 0; d < c.dim; ++d)
    sum += c.q[(t * c.heads + h) * c.dim + d] * c.k[s * c.dim + d];
  return sum;
}

// min |q[t, h] · k[s]| over causal pairs: finite differences with steps far below it never cross
// a ReLU kink.
inline double min_abs_qk(const ScoresData& c) {
  double m = kInf;
  for (int64_t t = 0; t < c.tokens; ++t) {
    for (int64_t s = 0; s <= t; ++s) {
      for (int64_t h = 0; h < c.heads; ++h) m = std::min(m, std::fabs(exact_qk(c, t, h, s)));
    }
  }
  return m;
}

// dscores with NaN above the diagonal: the backward must never read those entries.
inline std::vector<double> causal_dscores(int64_t tokens, uint32_t seed) {
  std::vector<double> g = normal(size_t(tokens * tokens), seed);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t s = t + 1; s < tokens; ++s) g[size_t(t * tokens + s)] = kNaN;
  }
  return rounded(g);
}

template <typename Real>
IndexerScoresTrain<Real> scores_params(const std::vector<Real>& q, const std::vector<Real>& k,
                                       const std::vector<Real>& w, int64_t tokens, int64_t heads,
                                       int64_t dim) {
  return {
      .q = q.data(), .k = k.data(), .w = w.data(), .tokens = tokens, .heads = heads, .dim = dim};
}

}  // namespace dsa::indexer_train_test

// The indexer's training ops (ops/indexer/indexer_train.h): scores and their backward, the target
// distribution from the main attention, the KL loss, and the whole chain, against direct formulas,
// fp64 finite differences, and fast vs reference in fp32.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "core/error.h"
#include "ops/indexer/indexer_train.h"
#include "simd_targets.h"

namespace dsa {
namespace {

constexpr double kU = 0x1p-24;  // fp32 unit roundoff
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

std::vector<double> normal(size_t n, uint32_t seed, double stddev = 1.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> dist(0.0, stddev);
  std::vector<double> out(n);
  for (auto& v : out) v = dist(rng);
  return out;
}

// fp32 values and the same values in double (so that double bounds are about the fp32 inputs).
std::vector<float> to_float(const std::vector<double>& v) { return {v.begin(), v.end()}; }
std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }
std::vector<double> rounded(const std::vector<double>& v) { return to_double(to_float(v)); }

// Central difference of f() in x[i]. Step 1e-6 scaled to |x[i]|; the divisor is the difference
// of the two points actually taken.
template <class F>
double central_difference(std::vector<double>& x, size_t i, F f) {
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
std::vector<int32_t> random_indices(int64_t tokens, int64_t topk, uint32_t seed,
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
std::vector<bool> key_mask(const int32_t* indices, int64_t topk, int64_t tokens) {
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

// ---------------------------------------------------------------------------------------------
// Scores

struct ScoresData {
  int64_t tokens, heads, dim;
  std::vector<double> q, k, w;  // fp32-representable values
};

ScoresData make_scores(int64_t tokens, int64_t heads, int64_t dim, uint32_t seed) {
  return {tokens,
          heads,
          dim,
          rounded(normal(size_t(tokens * heads * dim), seed)),
          rounded(normal(size_t(tokens * dim), seed + 1)),
          rounded(normal(size_t(tokens * heads), seed + 2, 0.5))};
}

double exact_qk(const ScoresData& c, int64_t t, int64_t h, int64_t s) {
  double sum = 0;
  for (int64_t d = 0; d < c.dim; ++d)
    sum += c.q[(t * c.heads + h) * c.dim + d] * c.k[s * c.dim + d];
  return sum;
}

// min |q[t, h] · k[s]| over causal pairs: finite differences with steps far below it never cross
// a ReLU kink.
double min_abs_qk(const ScoresData& c) {
  double m = kInf;
  for (int64_t t = 0; t < c.tokens; ++t) {
    for (int64_t s = 0; s <= t; ++s) {
      for (int64_t h = 0; h < c.heads; ++h) m = std::min(m, std::fabs(exact_qk(c, t, h, s)));
    }
  }
  return m;
}

// dscores with NaN above the diagonal: the backward must never read those entries.
std::vector<double> causal_dscores(int64_t tokens, uint32_t seed) {
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

TEST(IndexerScoresTrain, ForwardReferenceMatchesTheFormula) {
  const ScoresData c = make_scores(9, 3, 5, 10);
  std::vector<double> scores(81);
  auto params = scores_params(c.q, c.k, c.w, 9, 3, 5);
  params.scores = scores.data();
  indexer_scores_train_forward_reference(params);
  int clipped = 0;
  for (int64_t t = 0; t < 9; ++t) {
    for (int64_t s = 0; s < 9; ++s) {
      if (s > t) {
        EXPECT_EQ(scores[size_t(t * 9 + s)], -kInf) << t << " " << s;
        continue;
      }
      double expected = 0, magnitude = 0;
      for (int64_t h = 0; h < 3; ++h) {
        const double qk = exact_qk(c, t, h, s);
        clipped += qk < 0;
        expected += c.w[size_t(t * 3 + h)] * (qk > 0 ? qk : 0.0);
        magnitude += std::fabs(c.w[size_t(t * 3 + h)] * qk);
      }
      // Both sides are double sums of 3 x 5 terms: a few 1e-16 relative to the magnitudes.
      EXPECT_NEAR(scores[size_t(t * 9 + s)], expected, 1e-14 * (1 + magnitude)) << t << " " << s;
    }
  }
  EXPECT_GT(clipped, 10) << "the data must exercise the ReLU";
}

TEST(IndexerScoresTrain, BackwardReferenceMatchesFiniteDifferences) {
  const int64_t T = 7, H = 3, D = 5;
  ScoresData c = make_scores(T, H, D, 20);
  ASSERT_GT(min_abs_qk(c), 1e-3) << "pick a seed whose products keep away from the ReLU kink";
  const std::vector<double> g = causal_dscores(T, 21);
  // L = Σ_{s <= t} g[t, s] · I[t, s].
  auto loss = [&] {
    std::vector<double> scores(size_t(T * T));
    auto params = scores_params(c.q, c.k, c.w, T, H, D);
    params.scores = scores.data();
    indexer_scores_train_forward_reference(params);
    double sum = 0;
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t s = 0; s <= t; ++s) sum += g[size_t(t * T + s)] * scores[size_t(t * T + s)];
    }
    return sum;
  };
  // Start the outputs at garbage: they are overwritten, not accumulated.
  std::vector<double> dq(size_t(T * H * D), 7.0), dk(size_t(T * D), 7.0), dw(size_t(T * H), 7.0);
  auto params = scores_params(c.q, c.k, c.w, T, H, D);
  params.dscores = g.data();
  params.dq = dq.data();
  params.dk = dk.data();
  params.dw = dw.data();
  indexer_scores_backward_reference(params);
  // Away from the kinks L is linear in each single coordinate, so the central difference has no
  // truncation error; what is left is rounding, |L| · 1e-16 / 1e-6 ≈ 1e-10 · |L| with |L| = O(10).
  const double tol = 1e-8;
  for (size_t i = 0; i < c.q.size(); ++i) {
    ASSERT_NEAR(dq[i], central_difference(c.q, i, loss), tol) << "dq " << i;
  }
  for (size_t i = 0; i < c.k.size(); ++i) {
    ASSERT_NEAR(dk[i], central_difference(c.k, i, loss), tol) << "dk " << i;
  }
  for (size_t i = 0; i < c.w.size(); ++i) {
    ASSERT_NEAR(dw[i], central_difference(c.w, i, loss), tol) << "dw " << i;
  }
}

TEST(IndexerScoresTrain, ReluDerivativeAtZeroIsZero) {
  // q · k = 0 exactly: ReLU'(0) = 0, so no gradient flows to q, k or (ReLU(0) = 0) to w.
  const std::vector<double> q = {1.0, 0.0}, k = {0.0, 1.0}, w = {2.0}, g = {1.0};
  std::vector<double> dq(2, 5.0), dk(2, 5.0), dw(1, 5.0);
  auto params = scores_params(q, k, w, 1, 1, 2);
  params.dscores = g.data();
  params.dq = dq.data();
  params.dk = dk.data();
  params.dw = dw.data();
  indexer_scores_backward_reference(params);
  EXPECT_EQ(dq, std::vector<double>(2, 0.0));
  EXPECT_EQ(dk, std::vector<double>(2, 0.0));
  EXPECT_EQ(dw[0], 0.0);
  const std::vector<float> qf = to_float(q), kf = to_float(k), wf = to_float(w), gf = {1.0f};
  std::vector<float> dqf(2, 5.0f), dkf(2, 5.0f), dwf(1, 5.0f);
  auto fast = scores_params(qf, kf, wf, 1, 1, 2);
  fast.dscores = gf.data();
  fast.dq = dqf.data();
  fast.dk = dkf.data();
  fast.dw = dwf.data();
  ThreadPool pool(1);
  indexer_scores_backward(fast, pool);
  EXPECT_EQ(dqf, std::vector<float>(2, 0.0f));
  EXPECT_EQ(dkf, std::vector<float>(2, 0.0f));
  EXPECT_EQ(dwf[0], 0.0f);
}

struct ScoresRun {
  std::vector<float> scores, dq, dk, dw;
};

ScoresRun run_scores(const IndexerScoresTrainParams& base, bool reference, ThreadPool* pool) {
  const int64_t T = base.tokens, H = base.heads, D = base.dim;
  ScoresRun out{std::vector<float>(size_t(T * T)), std::vector<float>(size_t(T * H * D), 3.0f),
                std::vector<float>(size_t(T * D), 3.0f), std::vector<float>(size_t(T * H), 3.0f)};
  IndexerScoresTrainParams p = base;
  p.scores = out.scores.data();
  p.dq = out.dq.data();
  p.dk = out.dk.data();
  p.dw = out.dw.data();
  if (reference) {
    indexer_scores_train_forward_reference(p);
    indexer_scores_backward_reference(p);
  } else {
    indexer_scores_train_forward(p, *pool);
    indexer_scores_backward(p, *pool);
  }
  return out;
}

// Fast vs reference, both fp32. Each side computes q · k with error <= (D + 2) u Σ|q_i k_i|
// whatever the summation order (sgemm or sequential), ReLU is 1-Lipschitz, and a sum of N rounded
// terms adds (N + 2) u Σ|terms|; the two sides' errors add. Where |q · k| is within one side's
// error of 0 the ReLU gate may differ between the sides: such a pair can change dq, dk by its
// whole term |g w k|, |g w q| (counted separately below).
void expect_scores_close(const ScoresData& c, const std::vector<double>& g, const ScoresRun& ref,
                         const ScoresRun& fast) {
  const int64_t T = c.tokens, H = c.heads, D = c.dim;
  std::vector<double> bound_dq(size_t(T * H * D)), bound_dk(size_t(T * D));
  std::vector<double> bound_dw(size_t(T * H));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t s = 0; s <= t; ++s) {
      double bound_score = 0;
      for (int64_t h = 0; h < H; ++h) {
        const double* q = &c.q[size_t((t * H + h) * D)];
        const double* k = &c.k[size_t(s * D)];
        double qk = 0, abs_qk = 0;
        for (int64_t d = 0; d < D; ++d) {
          qk += q[d] * k[d];
          abs_qk += std::fabs(q[d] * k[d]);
        }
        const double w = c.w[size_t(t * H + h)], gv = g[size_t(t * T + s)];
        const double qk_error = double(D + 2) * kU * abs_qk;
        const double relu = qk > 0 ? qk : 0.0;
        bound_score += std::fabs(w) * 2 * qk_error + 2 * double(H + 2) * kU * std::fabs(w * relu);
        bound_dw[size_t(t * H + h)] +=
            std::fabs(gv) * 2 * qk_error + 2 * double(T + 2) * kU * std::fabs(gv * relu);
        const bool ambiguous = std::fabs(qk) <= qk_error;
        if (!ambiguous && qk <= 0) continue;
        const double gw = std::fabs(gv * w);
        for (int64_t d = 0; d < D; ++d) {
          const double rounding_dq = 2 * double(T + 4) * kU,
                       rounding_dk = 2 * double(T * H + 4) * kU;
          bound_dq[size_t((t * H + h) * D + d)] +=
              gw * std::fabs(k[d]) * (ambiguous ? 1 : rounding_dq);
          bound_dk[size_t(s * D + d)] += gw * std::fabs(q[d]) * (ambiguous ? 1 : rounding_dk);
        }
      }
      const size_t i = size_t(t * T + s);
      ASSERT_NEAR(fast.scores[i], ref.scores[i], bound_score) << "scores " << t << " " << s;
    }
    for (int64_t s = t + 1; s < T; ++s) {
      ASSERT_EQ(fast.scores[size_t(t * T + s)], -std::numeric_limits<float>::infinity());
    }
  }
  for (size_t i = 0; i < bound_dq.size(); ++i) {
    ASSERT_NEAR(fast.dq[i], ref.dq[i], bound_dq[i] + 1e-30) << "dq " << i;
  }
  for (size_t i = 0; i < bound_dk.size(); ++i) {
    ASSERT_NEAR(fast.dk[i], ref.dk[i], bound_dk[i] + 1e-30) << "dk " << i;
  }
  for (size_t i = 0; i < bound_dw.size(); ++i) {
    ASSERT_NEAR(fast.dw[i], ref.dw[i], bound_dw[i] + 1e-30) << "dw " << i;
  }
}

TEST(IndexerScoresTrain, FastMatchesReference) {
  struct Shape {
    int64_t tokens, heads, dim;
  };
  // 131 rows: two full blocks of 64 query rows and a partial one.
  for (const Shape shape : {Shape{1, 1, 1}, Shape{5, 3, 7}, Shape{70, 8, 128}, Shape{131, 4, 33}}) {
    SCOPED_TRACE(testing::Message()
                 << "T " << shape.tokens << " H " << shape.heads << " D " << shape.dim);
    const ScoresData c = make_scores(shape.tokens, shape.heads, shape.dim, uint32_t(shape.tokens));
    const std::vector<double> g = causal_dscores(shape.tokens, 99);
    const std::vector<float> q = to_float(c.q), k = to_float(c.k), w = to_float(c.w);
    const std::vector<float> gf = to_float(g);
    auto params = scores_params(q, k, w, shape.tokens, shape.heads, shape.dim);
    params.dscores = gf.data();
    const ScoresRun ref = run_scores(params, true, nullptr);
    for (int threads : {1, 2, 3}) {
      ThreadPool pool(threads);
      test::for_each_simd_target(
          [&] { expect_scores_close(c, g, ref, run_scores(params, false, &pool)); });
    }
  }
}

TEST(IndexerScoresTrain, FastIsDeterministicAcrossRunsAndThreadCounts) {
  const ScoresData c = make_scores(131, 4, 33, 5);
  const std::vector<float> q = to_float(c.q), k = to_float(c.k), w = to_float(c.w);
  const std::vector<float> g = to_float(causal_dscores(131, 6));
  auto params = scores_params(q, k, w, 131, 4, 33);
  params.dscores = g.data();
  ThreadPool one(1);
  const ScoresRun first = run_scores(params, false, &one);
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int run = 0; run < 2; ++run) {
      const ScoresRun again = run_scores(params, false, &pool);
      ASSERT_EQ(std::memcmp(first.scores.data(), again.scores.data(), first.scores.size() * 4), 0);
      ASSERT_EQ(std::memcmp(first.dq.data(), again.dq.data(), first.dq.size() * 4), 0);
      ASSERT_EQ(std::memcmp(first.dk.data(), again.dk.data(), first.dk.size() * 4), 0);
      ASSERT_EQ(std::memcmp(first.dw.data(), again.dw.data(), first.dw.size() * 4), 0);
    }
  }
}

TEST(IndexerScoresTrain, BadParametersThrow) {
  std::vector<float> buffer(64);
  const float* in = buffer.data();
  float* out = buffer.data();
  ThreadPool pool(1);
  const IndexerScoresTrainParams good{.q = in,
                                      .k = in,
                                      .w = in,
                                      .scores = out,
                                      .dscores = in,
                                      .dq = out,
                                      .dk = out,
                                      .dw = out,
                                      .tokens = 2,
                                      .heads = 2,
                                      .dim = 2};
  auto forward_throws = [&](IndexerScoresTrainParams p) {
    EXPECT_THROW(indexer_scores_train_forward_reference(p), Error);
    EXPECT_THROW(indexer_scores_train_forward(p, pool), Error);
  };
  auto backward_throws = [&](IndexerScoresTrainParams p) {
    EXPECT_THROW(indexer_scores_backward_reference(p), Error);
    EXPECT_THROW(indexer_scores_backward(p, pool), Error);
  };
  auto p = good;
  p.tokens = -1;
  forward_throws(p);
  backward_throws(p);
  p = good;
  p.heads = 0;
  forward_throws(p);
  p = good;
  p.dim = 0;
  backward_throws(p);
  p = good;
  p.scores = nullptr;
  forward_throws(p);
  p = good;
  p.k = nullptr;
  backward_throws(p);
  p = good;
  p.dk = nullptr;
  backward_throws(p);
  p = good;
  p.dscores = nullptr;
  backward_throws(p);
}

// ---------------------------------------------------------------------------------------------
// Attention target

struct AttentionData {
  int64_t tokens, heads, dim;
  double scale;
  std::vector<double> q, k;  // [T, H, Dqk], fp32-representable
};

AttentionData make_attention(int64_t tokens, int64_t heads, int64_t dim, uint32_t seed) {
  return {tokens,
          heads,
          dim,
          1.0 / std::sqrt(double(dim)),
          rounded(normal(size_t(tokens * heads * dim), seed)),
          rounded(normal(size_t(tokens * heads * dim), seed + 1))};
}

double attention_score(const AttentionData& a, int64_t t, int64_t h, int64_t s) {
  double sum = 0;
  for (int64_t d = 0; d < a.dim; ++d) {
    sum += a.q[size_t((t * a.heads + h) * a.dim + d)] * a.k[size_t((s * a.heads + h) * a.dim + d)];
  }
  return a.scale * sum;
}

// The attention's lse per row and head over K_t (+inf for an empty K_t), as mha_train gives it.
std::vector<double> attention_lse(const AttentionData& a, const std::vector<bool>& mask) {
  const int64_t T = a.tokens, H = a.heads;
  std::vector<double> lse(size_t(T * H), kInf);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      double sum = 0;
      bool any = false;
      for (int64_t s = 0; s < T; ++s) {
        if (!mask[size_t(t * T + s)]) continue;
        sum += std::exp(attention_score(a, t, h, s));
        any = true;
      }
      if (any) lse[size_t(t * H + h)] = std::log(sum);
    }
  }
  return lse;
}

template <typename Real>
AttentionTarget<Real> target_params(const std::vector<Real>& q, const std::vector<Real>& k,
                                    const std::vector<Real>& lse, const AttentionData& a,
                                    const std::vector<int32_t>* indices, int64_t topk) {
  return {.q = q.data(),
          .k = k.data(),
          .lse = lse.data(),
          .indices = indices ? indices->data() : nullptr,
          .topk = indices ? topk : 0,
          .tokens = a.tokens,
          .heads = a.heads,
          .qk_dim = a.dim,
          .scale = Real(a.scale)};
}

TEST(AttentionTarget, ReferenceMatchesPerHeadSoftmax) {
  const int64_t T = 9, H = 3, D = 6, topk = 4;
  const AttentionData a = make_attention(T, H, D, 30);
  const std::vector<int32_t> indices = random_indices(T, topk, 31, /*empty_row=*/5);
  for (const std::vector<int32_t>* idx : {(const std::vector<int32_t>*)nullptr, &indices}) {
    SCOPED_TRACE(idx ? "sparse" : "dense");
    const std::vector<bool> mask = key_mask(idx ? idx->data() : nullptr, topk, T);
    const std::vector<double> lse = attention_lse(a, mask);
    std::vector<double> p(size_t(T * T), 9.0);
    auto params = target_params(a.q, a.k, lse, a, idx, topk);
    params.p = p.data();
    attention_target_reference(params);
    for (int64_t t = 0; t < T; ++t) {
      // Direct softmax of each head over K_t (max-shifted), averaged over the heads.
      std::vector<double> expected(size_t(T), 0.0);
      for (int64_t h = 0; h < H; ++h) {
        double max_score = -kInf, sum = 0;
        for (int64_t s = 0; s < T; ++s) {
          if (mask[size_t(t * T + s)]) max_score = std::max(max_score, attention_score(a, t, h, s));
        }
        for (int64_t s = 0; s < T; ++s) {
          if (mask[size_t(t * T + s)]) sum += std::exp(attention_score(a, t, h, s) - max_score);
        }
        for (int64_t s = 0; s < T; ++s) {
          if (mask[size_t(t * T + s)]) {
            expected[size_t(s)] += std::exp(attention_score(a, t, h, s) - max_score) / sum / H;
          }
        }
      }
      double row_sum = 0;
      for (int64_t s = 0; s < T; ++s) {
        // fp64 exps and sums of at most 9 terms: 1e-14 absolute covers them.
        EXPECT_NEAR(p[size_t(t * T + s)], expected[size_t(s)], 1e-14) << t << " " << s;
        row_sum += p[size_t(t * T + s)];
      }
      const bool empty = idx && t == 5;
      EXPECT_NEAR(row_sum, empty ? 0.0 : 1.0, 1e-14) << "row " << t;
    }
  }
}

// Fast vs reference in fp32. Per head the score has error <= 2 (Dqk + 3) u · scale · Σ|q_i k_i|
// on the two sides together (dot product and the scale multiply), the subtraction of lse adds
// 2 u (|score| + |lse|), the exp 1 ulp each side plus the propagated argument error (relative),
// the sum over H heads 2 (H + 2) u; then / H.
void expect_target_close(const AttentionData& a, const std::vector<double>& lse,
                         const std::vector<bool>& mask, const std::vector<float>& ref,
                         const std::vector<float>& fast) {
  const int64_t T = a.tokens, H = a.heads, D = a.dim;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t s = 0; s < T; ++s) {
      const size_t i = size_t(t * T + s);
      if (!mask[i]) {
        ASSERT_EQ(fast[i], 0.0f) << t << " " << s;
        continue;
      }
      double bound = 0;
      for (int64_t h = 0; h < H; ++h) {
        const double l = lse[size_t(t * H + h)];
        if (l == kInf) continue;
        double abs_qk = 0;
        for (int64_t d = 0; d < D; ++d) {
          abs_qk += std::fabs(a.q[size_t((t * H + h) * D + d)] * a.k[size_t((s * H + h) * D + d)]);
        }
        const double score = attention_score(a, t, h, s);
        const double argument_error =
            2 * double(D + 3) * kU * a.scale * abs_qk + 2 * kU * (std::fabs(score) + std::fabs(l));
        const double prob = std::exp(score - l);
        bound += prob * (argument_error * 1.01 + 4 * kU + 2 * double(H + 2) * kU);
      }
      ASSERT_NEAR(fast[i], ref[i], bound / double(H) + 1e-30) << t << " " << s;
    }
  }
}

TEST(AttentionTarget, FastMatchesReference) {
  struct Shape {
    int64_t tokens, heads, dim, topk;
  };
  for (const Shape shape : {Shape{1, 1, 3, 1}, Shape{37, 3, 19, 8}, Shape{131, 4, 48, 40}}) {
    SCOPED_TRACE(testing::Message() << "T " << shape.tokens << " H " << shape.heads);
    const int64_t T = shape.tokens;
    const AttentionData a = make_attention(T, shape.heads, shape.dim, uint32_t(T) + 40);
    const std::vector<int32_t> indices = random_indices(T, shape.topk, 41, T > 3 ? 3 : -1);
    for (const std::vector<int32_t>* idx : {(const std::vector<int32_t>*)nullptr, &indices}) {
      SCOPED_TRACE(idx ? "sparse" : "dense");
      const std::vector<bool> mask = key_mask(idx ? idx->data() : nullptr, shape.topk, T);
      const std::vector<double> lse = rounded(attention_lse(a, mask));
      const std::vector<float> q = to_float(a.q), k = to_float(a.k), lsef = to_float(lse);
      std::vector<float> ref(size_t(T * T));
      auto params = target_params(q, k, lsef, a, idx, shape.topk);
      params.p = ref.data();
      attention_target_reference(params);
      for (int threads : {1, 2, 3}) {
        ThreadPool pool(threads);
        test::for_each_simd_target([&] {
          std::vector<float> fast(size_t(T * T), 5.0f), again(size_t(T * T), 6.0f);
          params.p = fast.data();
          attention_target(params, pool);
          expect_target_close(a, lse, mask, ref, fast);
          params.p = again.data();
          attention_target(params, pool);
          ASSERT_EQ(std::memcmp(fast.data(), again.data(), fast.size() * 4), 0) << "determinism";
        });
      }
    }
  }
}

TEST(AttentionTarget, BadParametersThrow) {
  const AttentionData a = make_attention(4, 1, 2, 50);
  const std::vector<float> q = to_float(a.q), k = to_float(a.k), lse(4, 1.0f);
  std::vector<float> p(16);
  ThreadPool pool(1);
  auto throws = [&](const AttentionTargetParams& params, const std::vector<int32_t>* indices) {
    auto with = params;
    with.p = p.data();
    if (indices) with.indices = indices->data();
    EXPECT_THROW(attention_target_reference(with), Error);
    EXPECT_THROW(attention_target(with, pool), Error);
  };
  const AttentionTargetParams good = target_params(q, k, lse, a, nullptr, 0);
  auto bad = good;
  bad.scale = 0;
  throws(bad, nullptr);
  bad = good;
  bad.lse = nullptr;
  throws(bad, nullptr);
  bad = good;
  bad.topk = 2;  // topk without indices
  throws(bad, nullptr);
  // topk 2: row 1 lists key 2 (> t), then a repeated key, then an id below -1.
  bad = good;
  bad.topk = 2;
  const std::vector<int32_t> future = {0, -1, 2, 0, 0, 1, 0, 1};
  const std::vector<int32_t> repeated = {0, -1, 1, 1, 0, 1, 0, 1};
  const std::vector<int32_t> negative = {0, -1, 0, 1, -2, 1, 0, 1};
  throws(bad, &future);
  throws(bad, &repeated);
  throws(bad, &negative);
  try {
    auto with = bad;
    with.p = p.data();
    with.indices = future.data();
    attention_target_reference(with);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("indices[1, 0] = 2"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------------------------------------
// KL loss

struct KlData {
  int64_t tokens;
  std::vector<double> scores, p;  // fp32-representable; p unnormalised, zeros included
};

// Scores outside the causal triangle are -inf (as the forward gives them), p random >= 0 with
// some exact zeros and one row of all zeros (`zero_row`).
KlData make_kl(int64_t tokens, uint32_t seed, int64_t zero_row) {
  KlData c{tokens, rounded(normal(size_t(tokens * tokens), seed, 2.0)),
           std::vector<double>(size_t(tokens * tokens))};
  std::mt19937 rng(seed + 1);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t s = 0; s < tokens; ++s) {
      const size_t i = size_t(t * tokens + s);
      if (s > t) c.scores[i] = -kInf;
      const double u = uniform(rng);
      c.p[i] = (t == zero_row || u < 0.2) ? 0.0 : u * u;
    }
  }
  c.p = rounded(c.p);
  return c;
}

template <typename Real>
IndexerKlLoss<Real> kl_params(const std::vector<Real>& scores, const std::vector<Real>& p,
                              const std::vector<int32_t>* indices, int64_t topk, int64_t tokens) {
  return {.scores = scores.data(),
          .p = p.data(),
          .indices = indices ? indices->data() : nullptr,
          .topk = indices ? topk : 0,
          .tokens = tokens};
}

TEST(IndexerKlLoss, ReferenceMatchesTheFormulaAndFiniteDifferences) {
  const int64_t T = 8, topk = 5, zero_row = 6;
  KlData c = make_kl(T, 60, zero_row);
  const std::vector<int32_t> indices = random_indices(T, topk, 61, /*empty_row=*/4);
  const double grad_scale = 0.37;
  for (const std::vector<int32_t>* idx : {(const std::vector<int32_t>*)nullptr, &indices}) {
    SCOPED_TRACE(idx ? "sparse" : "dense");
    const std::vector<bool> mask = key_mask(idx ? idx->data() : nullptr, topk, T);
    std::vector<double> row_loss(static_cast<size_t>(T)), dscores(size_t(T * T), 9.0);
    auto params = kl_params(c.scores, c.p, idx, topk, T);
    params.row_loss = row_loss.data();
    params.dscores = dscores.data();
    params.grad_scale = grad_scale;
    indexer_kl_loss_reference(params);
    // The loss from its definition: p̂ = p / Σ_K p, q = exp(I) / Σ_K exp(I) (no shift: |I| < 10).
    for (int64_t t = 0; t < T; ++t) {
      double p_sum = 0, exp_sum = 0;
      for (int64_t s = 0; s < T; ++s) {
        if (!mask[size_t(t * T + s)]) continue;
        p_sum += c.p[size_t(t * T + s)];
        exp_sum += std::exp(c.scores[size_t(t * T + s)]);
      }
      double expected = 0;
      for (int64_t s = 0; s < T; ++s) {
        const size_t i = size_t(t * T + s);
        if (!mask[i] || c.p[i] == 0) continue;
        const double target = c.p[i] / p_sum, q = std::exp(c.scores[i]) / exp_sum;
        expected += target * std::log(target / q);
      }
      // fp64 sums of <= 8 terms of magnitude <= 20: 1e-13 absolute.
      EXPECT_NEAR(row_loss[size_t(t)], expected, 1e-13) << "row " << t;
      if (t == zero_row || (idx && t == 4)) {
        EXPECT_EQ(row_loss[size_t(t)], 0.0) << "row " << t;
      }
    }
    EXPECT_GT(*std::max_element(row_loss.begin(), row_loss.end()), 0.1);
    // The closed form against the derivative of grad_scale · Σ_t row_loss[t]. The loss is smooth
    // in I (softmax and log-sum-exp, third derivatives O(1)): truncation step² ≈ 1e-12, rounding
    // 1e-16 · |L| / 1e-6 ≈ 1e-9 with |L| = O(10).
    auto loss = [&] {
      std::vector<double> rows(static_cast<size_t>(T));
      auto probe = kl_params(c.scores, c.p, idx, topk, T);
      probe.row_loss = rows.data();
      indexer_kl_loss_reference(probe);
      return grad_scale * std::accumulate(rows.begin(), rows.end(), 0.0);
    };
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t s = 0; s < T; ++s) {
        const size_t i = size_t(t * T + s);
        if (!mask[i]) {
          ASSERT_EQ(dscores[i], 0.0) << "outside K_t " << t << " " << s;
          continue;
        }
        ASSERT_NEAR(dscores[i], central_difference(c.scores, i, loss), 1e-8) << t << " " << s;
      }
    }
  }
}

// Fast vs reference, both fp32. With p̂ = p / Σp and q the softmax: each side's log q has error
// <= (T + 8) u (|I| + |lse| + 1) (the sum of <= T exps, the log, the subtraction), log p̂ and p̂
// (T + 4) u relative (the reference sums p in fp32); the loss is a sum of <= T terms
// p̂ log(p̂ / q). dscores = g (q − p̂): q's relative error is that of log q.
void expect_kl_close(const KlData& c, const std::vector<bool>& mask, double grad_scale,
                     const std::vector<float>& ref_loss, const std::vector<float>& ref_d,
                     const std::vector<float>& loss, const std::vector<float>& d) {
  const int64_t T = c.tokens;
  for (int64_t t = 0; t < T; ++t) {
    double p_sum = 0, exp_sum = 0;
    for (int64_t s = 0; s < T; ++s) {
      if (!mask[size_t(t * T + s)]) continue;
      p_sum += c.p[size_t(t * T + s)];
      exp_sum += std::exp(c.scores[size_t(t * T + s)]);
    }
    const double lse = std::log(exp_sum);
    double loss_bound = 0;
    for (int64_t s = 0; s < T; ++s) {
      const size_t i = size_t(t * T + s);
      if (!mask[i]) {
        ASSERT_EQ(d[i], 0.0f) << "outside K_t " << t << " " << s;
        continue;
      }
      if (p_sum == 0) {
        ASSERT_EQ(d[i], 0.0f);
        continue;
      }
      const double target = c.p[i] / p_sum, q = std::exp(c.scores[i] - lse);
      const double log_q_error =
          2 * double(T + 8) * kU * (std::fabs(c.scores[i]) + std::fabs(lse) + 1);
      if (target > 0) {
        loss_bound +=
            target * (log_q_error + 8 * kU * (std::fabs(std::log(target)) + 1) +
                      2 * double(T + 4) * kU * std::fabs(std::log(target) + lse - c.scores[i]));
      }
      const double d_bound =
          std::fabs(grad_scale) * (q * log_q_error * 1.01 + 2 * double(T + 4) * kU * target);
      ASSERT_NEAR(d[i], ref_d[i], d_bound + 1e-30) << "dscores " << t << " " << s;
    }
    ASSERT_NEAR(loss[size_t(t)], ref_loss[size_t(t)], loss_bound + 1e-30) << "row " << t;
  }
}

TEST(IndexerKlLoss, FastMatchesReference) {
  const int64_t T = 77, topk = 20;
  const KlData c = make_kl(T, 70, 33);
  const std::vector<int32_t> indices = random_indices(T, topk, 71, /*empty_row=*/50);
  const std::vector<float> scores = to_float(c.scores), p = to_float(c.p);
  const float grad_scale = 0.25f;
  for (const std::vector<int32_t>* idx : {(const std::vector<int32_t>*)nullptr, &indices}) {
    SCOPED_TRACE(idx ? "sparse" : "dense");
    const std::vector<bool> mask = key_mask(idx ? idx->data() : nullptr, topk, T);
    std::vector<float> ref_loss(static_cast<size_t>(T)), ref_d(size_t(T * T));
    auto params = kl_params(scores, p, idx, topk, T);
    params.grad_scale = grad_scale;
    params.row_loss = ref_loss.data();
    params.dscores = ref_d.data();
    indexer_kl_loss_reference(params);
    std::vector<float> first_loss, first_d;
    for (int threads : {1, 2, 3}) {
      ThreadPool pool(threads);
      std::vector<float> loss(size_t(T), 4.0f), d(size_t(T * T), 4.0f);
      params.row_loss = loss.data();
      params.dscores = d.data();
      indexer_kl_loss(params, pool);
      expect_kl_close(c, mask, grad_scale, ref_loss, ref_d, loss, d);
      if (first_loss.empty()) {
        first_loss = loss;
        first_d = d;
      }
      // Rows are independent: bit-identical for any thread count.
      ASSERT_EQ(std::memcmp(loss.data(), first_loss.data(), loss.size() * 4), 0);
      ASSERT_EQ(std::memcmp(d.data(), first_d.data(), d.size() * 4), 0);
      // dscores may be skipped.
      std::vector<float> loss_only(static_cast<size_t>(T));
      params.row_loss = loss_only.data();
      params.dscores = nullptr;
      indexer_kl_loss(params, pool);
      ASSERT_EQ(std::memcmp(loss.data(), loss_only.data(), loss.size() * 4), 0);
    }
  }
}

TEST(IndexerKlLoss, BadParametersThrow) {
  const KlData c = make_kl(3, 80, -1);
  std::vector<float> scores = to_float(c.scores), p = to_float(c.p), loss(3);
  ThreadPool pool(2);
  auto throws = [&](IndexerKlLossParams params) {
    EXPECT_THROW(indexer_kl_loss_reference(params), Error);
    EXPECT_THROW(indexer_kl_loss(params, pool), Error);
  };
  IndexerKlLossParams good = kl_params(scores, p, nullptr, 0, 3);
  good.row_loss = loss.data();
  auto bad = good;
  bad.row_loss = nullptr;
  throws(bad);
  bad = good;
  bad.tokens = -2;
  throws(bad);
  const std::vector<int32_t> future = {1, 0, 1};  // topk 1: row 0 lists key 1
  bad = good;
  bad.indices = future.data();
  bad.topk = 1;
  throws(bad);
  p[4] = -0.5f;  // p[1, 1] inside K_1
  throws(good);
  p[4] = 0.5f;
  scores[3] = std::numeric_limits<float>::infinity();  // I[1, 0]
  throws(good);
}

// ---------------------------------------------------------------------------------------------
// The chain: attention target → KL loss ← indexer scores, gradients into q, k, w.

TEST(IndexerTrainChain, GradientsOfTheKlLossMatchFiniteDifferences) {
  const int64_t T = 6, Hi = 2, D = 3, topk = 3;
  ScoresData c = make_scores(T, Hi, D, 90);
  ASSERT_GT(min_abs_qk(c), 1e-3) << "pick a seed whose products keep away from the ReLU kink";
  const AttentionData a = make_attention(T, 2, 4, 91);
  const std::vector<int32_t> indices = random_indices(T, topk, 92);
  const double grad_scale = 1.0 / double(T);
  for (const std::vector<int32_t>* idx : {(const std::vector<int32_t>*)nullptr, &indices}) {
    SCOPED_TRACE(idx ? "sparse" : "dense");
    const int32_t* index_data = idx ? idx->data() : nullptr;
    const std::vector<double> lse = attention_lse(a, key_mask(index_data, topk, T));
    std::vector<double> p(size_t(T * T));
    auto target = target_params(a.q, a.k, lse, a, idx, topk);
    target.p = p.data();
    attention_target_reference(target);
    // Total loss and, when asked, its dscores.
    auto run = [&](std::vector<double>* dscores) {
      std::vector<double> scores(size_t(T * T)), rows(static_cast<size_t>(T));
      auto sp = scores_params(c.q, c.k, c.w, T, Hi, D);
      sp.scores = scores.data();
      indexer_scores_train_forward_reference(sp);
      auto kl = kl_params(scores, p, idx, topk, T);
      kl.row_loss = rows.data();
      kl.dscores = dscores ? dscores->data() : nullptr;
      kl.grad_scale = grad_scale;
      indexer_kl_loss_reference(kl);
      return grad_scale * std::accumulate(rows.begin(), rows.end(), 0.0);
    };
    std::vector<double> dscores(size_t(T * T));
    EXPECT_GT(run(&dscores), 1e-3);
    std::vector<double> dq(c.q.size()), dk(c.k.size()), dw(c.w.size());
    auto sp = scores_params(c.q, c.k, c.w, T, Hi, D);
    sp.dscores = dscores.data();
    sp.dq = dq.data();
    sp.dk = dk.data();
    sp.dw = dw.data();
    indexer_scores_backward_reference(sp);
    // Smooth away from the ReLU kinks (none within 1e-3 of the points probed); truncation
    // step² · O(|w| |k|)³ ≈ 1e-11, rounding 1e-16 · |L| / 1e-6 ≈ 1e-10.
    auto loss = [&] { return run(nullptr); };
    const double tol = 1e-8;
    for (size_t i = 0; i < c.q.size(); ++i) {
      ASSERT_NEAR(dq[i], central_difference(c.q, i, loss), tol) << "dq " << i;
    }
    for (size_t i = 0; i < c.k.size(); ++i) {
      ASSERT_NEAR(dk[i], central_difference(c.k, i, loss), tol) << "dk " << i;
    }
    for (size_t i = 0; i < c.w.size(); ++i) {
      ASSERT_NEAR(dw[i], central_difference(c.w, i, loss), tol) << "dw " << i;
    }
    EXPECT_GT(*std::max_element(dq.begin(), dq.end()), 1e-4) << "the gradients must not vanish";
  }
}

}  // namespace
}  // namespace dsa

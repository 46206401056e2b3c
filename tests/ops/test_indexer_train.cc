// The indexer's training scores (ops/indexer/indexer_train.h) and their backward, against direct
// formulas, fp64 finite differences, and fast vs reference in fp32. The attention target, the KL
// loss and the whole chain are in test_indexer_loss_train.cc.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "core/error.h"
#include "indexer_train_test_util.h"
#include "ops/indexer/indexer_train.h"
#include "simd_targets.h"

namespace dsa {
namespace {

using namespace indexer_train_test;

// ---------------------------------------------------------------------------------------------
// Scores

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

}  // namespace
}  // namespace dsa

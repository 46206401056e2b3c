// The indexer's training target and loss (ops/indexer/indexer_train.h): the target distribution
// from the main attention, the KL loss with its closed-form gradient, and the whole chain, against
// direct formulas, fp64 finite differences, and fast vs reference in fp32.
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

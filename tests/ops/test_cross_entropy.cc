// The fused LM head + cross-entropy (ops/loss/cross_entropy.h): the reference against the formula
// and fp64 finite differences, fast vs reference in fp32 over chunk sizes and thread counts.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "ops/loss/cross_entropy.h"

namespace dsa {
namespace {

constexpr double kU = 0x1p-24;  // fp32 unit roundoff

std::vector<double> normal(size_t n, uint32_t seed, double stddev = 1.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> dist(0.0, stddev);
  std::vector<double> out(n);
  for (auto& v : out) v = double(float(dist(rng)));  // fp32-representable
  return out;
}

std::vector<float> to_float(const std::vector<double>& v) { return {v.begin(), v.end()}; }

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

// Targets in [0, V), every fifth row -1 (not counted).
std::vector<int32_t> make_targets(int64_t tokens, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> targets(static_cast<size_t>(tokens));
  for (int64_t t = 0; t < tokens; ++t) {
    targets[size_t(t)] = t % 5 == 3 ? -1 : int32_t(rng() % uint32_t(vocab));
  }
  return targets;
}

struct Problem {
  int64_t tokens, dim, vocab;
  std::vector<double> h, weight;  // [T, D], [V, D]
  std::vector<int32_t> targets;
};

Problem make_problem(int64_t tokens, int64_t dim, int64_t vocab, uint32_t seed) {
  return {tokens,
          dim,
          vocab,
          normal(size_t(tokens * dim), seed),
          normal(size_t(vocab * dim), seed + 1, 0.5),
          make_targets(tokens, vocab, seed + 2)};
}

template <typename Real>
LmHeadCrossEntropy<Real> params_for(const Problem& c, const std::vector<Real>& h,
                                    const std::vector<Real>& weight, Real* loss_sum) {
  return {.h = h.data(),
          .weight = weight.data(),
          .targets = c.targets.data(),
          .loss_sum = loss_sum,
          .tokens = c.tokens,
          .dim = c.dim,
          .vocab = c.vocab};
}

double logit(const Problem& c, int64_t t, int64_t v) {
  double sum = 0;
  for (int64_t d = 0; d < c.dim; ++d)
    sum += c.h[size_t(t * c.dim + d)] * c.weight[size_t(v * c.dim + d)];
  return sum;
}

TEST(LmHeadCrossEntropy, ReferenceMatchesTheFormula) {
  const Problem c = make_problem(6, 4, 11, 1);
  double loss_sum = -1;
  lm_head_cross_entropy_reference(params_for(c, c.h, c.weight, &loss_sum));
  double expected = 0;
  int counted = 0;
  for (int64_t t = 0; t < 6; ++t) {
    const int32_t y = c.targets[size_t(t)];
    if (y < 0) continue;
    ++counted;
    double sum = 0;  // no max shift: |logits| < 10 here
    for (int64_t v = 0; v < 11; ++v) sum += std::exp(logit(c, t, v));
    expected += -std::log(std::exp(logit(c, t, y)) / sum);
  }
  ASSERT_EQ(counted, 5);
  // fp64 sums of <= 11 terms of magnitude <= 10: 1e-13.
  EXPECT_NEAR(loss_sum, expected, 1e-13);
}

TEST(LmHeadCrossEntropy, ReferenceGradientsMatchFiniteDifferences) {
  Problem c = make_problem(6, 5, 13, 2);
  const double grad_scale = 0.3;
  auto loss = [&] {
    double sum = 0;
    lm_head_cross_entropy_reference(params_for(c, c.h, c.weight, &sum));
    return sum;
  };
  // Gradients accumulate: start from random values and compare the increments.
  const std::vector<double> dh_before = normal(c.h.size(), 3),
                            dw_before = normal(c.weight.size(), 4);
  std::vector<double> dh = dh_before, dw = dw_before;
  double loss_sum = 0;
  auto params = params_for(c, c.h, c.weight, &loss_sum);
  params.grad_scale = grad_scale;
  params.dh = dh.data();
  params.dweight = dw.data();
  lm_head_cross_entropy_reference(params);
  // The loss is smooth (log-sum-exp of linear functions, third derivatives O(|W|³) = O(1)):
  // truncation step² ≈ 1e-12, rounding 1e-16 · |L| / 1e-6 ≈ 1e-9 with |L| = O(20).
  const double tol = 1e-8;
  for (size_t i = 0; i < c.h.size(); ++i) {
    const double fd = grad_scale * central_difference(c.h, i, loss);
    ASSERT_NEAR(dh[i] - dh_before[i], fd, tol) << "dh " << i;
    if (c.targets[i / size_t(c.dim)] < 0) {
      ASSERT_EQ(dh[i], dh_before[i]) << "ignored row";
    }
  }
  for (size_t i = 0; i < c.weight.size(); ++i) {
    const double fd = grad_scale * central_difference(c.weight, i, loss);
    ASSERT_NEAR(dw[i] - dw_before[i], fd, tol) << "dweight " << i;
  }
}

struct Result {
  float loss_sum = 0;
  std::vector<float> dh, dweight;
};

// dh and dweight start from `init_dh`, `init_dw` (accumulation).
Result run_lm_head(const Problem& c, const std::vector<float>& h, const std::vector<float>& w,
                   const std::vector<float>& init_dh, const std::vector<float>& init_dw,
                   float grad_scale, int64_t chunk_rows, ThreadPool* pool) {
  Result out{0.0f, init_dh, init_dw};
  auto params = params_for(c, h, w, &out.loss_sum);
  params.grad_scale = grad_scale;
  params.dh = out.dh.data();
  params.dweight = out.dweight.data();
  params.chunk_rows = chunk_rows;
  if (pool) {
    lm_head_cross_entropy(params, *pool);
  } else {
    lm_head_cross_entropy_reference(params);
  }
  return out;
}

// Two fp32 runs (any chunking, either version) against each other; the bounds add both sides'
// worst-case errors. Per side: a logit has error e = (D + 2) u Σ_d |h W|; log-sum-exp is
// 1-Lipschitz in the max norm of the logits, and the sum of V exps (each 1 ulp), the log and the
// shift add (V + 4) u + u |lse|; a row's loss then errs by that plus its own logit's e. A
// softmax entry exp(l − lse) has relative error 1.01 (e + lse error + u (|l| + |lse|)) + 2 u;
// dlogits = g (softmax − onehot) adds u g. dh and dweight are sums of V resp. T such products
// onto their initial values (one rounding per chunk at most).
void expect_close(const Problem& c, const std::vector<float>& init_dh,
                  const std::vector<float>& init_dw, double g, const Result& a, const Result& b) {
  const int64_t T = c.tokens, D = c.dim, V = c.vocab;
  std::vector<double> ddlogit_dh(size_t(T * D)), abs_dh(size_t(T * D));
  std::vector<double> ddlogit_dw(size_t(V * D)), abs_dw(size_t(V * D));
  double loss_bound = 0, abs_loss = 0;
  std::vector<double> logits(static_cast<size_t>(V)), errors(static_cast<size_t>(V));
  for (int64_t t = 0; t < T; ++t) {
    const int32_t y = c.targets[size_t(t)];
    if (y < 0) continue;
    double max_error = 0, max_logit = -INFINITY;
    for (int64_t v = 0; v < V; ++v) {
      double abs_sum = 0;
      for (int64_t d = 0; d < D; ++d) {
        abs_sum += std::fabs(c.h[size_t(t * D + d)] * c.weight[size_t(v * D + d)]);
      }
      logits[size_t(v)] = logit(c, t, v);
      errors[size_t(v)] = double(D + 2) * kU * abs_sum;
      max_error = std::max(max_error, errors[size_t(v)]);
      max_logit = std::max(max_logit, logits[size_t(v)]);
    }
    double sum = 0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(logits[size_t(v)] - max_logit);
    const double lse = max_logit + std::log(sum);
    const double lse_error = max_error + double(V + 4) * kU + kU * std::fabs(lse);
    loss_bound += 2 * (lse_error + errors[size_t(y)]);
    abs_loss += lse - logits[size_t(y)];
    for (int64_t v = 0; v < V; ++v) {
      const double softmax = std::exp(logits[size_t(v)] - lse);
      const double dlogit = g * (softmax - double(v == y));
      const double ddlogit =
          2 * g *
          (softmax * (1.01 * (errors[size_t(v)] + lse_error +
                              kU * (std::fabs(logits[size_t(v)]) + std::fabs(lse))) +
                      2 * kU) +
           kU);
      for (int64_t d = 0; d < D; ++d) {
        const double w = c.weight[size_t(v * D + d)], h = c.h[size_t(t * D + d)];
        ddlogit_dh[size_t(t * D + d)] += ddlogit * std::fabs(w);
        abs_dh[size_t(t * D + d)] += std::fabs(dlogit * w);
        ddlogit_dw[size_t(v * D + d)] += ddlogit * std::fabs(h);
        abs_dw[size_t(v * D + d)] += std::fabs(dlogit * h);
      }
    }
  }
  ASSERT_NEAR(a.loss_sum, b.loss_sum, loss_bound + 2 * double(T + 2) * kU * abs_loss);
  for (size_t i = 0; i < abs_dh.size(); ++i) {
    const double bound = ddlogit_dh[i] + 2 * double(V + 2) * kU * abs_dh[i] +
                         2 * kU * (std::fabs(init_dh[i]) + std::fabs(a.dh[i]));
    ASSERT_NEAR(a.dh[i], b.dh[i], bound) << "dh " << i;
  }
  for (size_t i = 0; i < abs_dw.size(); ++i) {
    const double bound =
        ddlogit_dw[i] + 2 * double(T + 2) * kU * (abs_dw[i] + std::fabs(init_dw[i]));
    ASSERT_NEAR(a.dweight[i], b.dweight[i], bound) << "dweight " << i;
  }
}

TEST(LmHeadCrossEntropy, FastMatchesReferenceForEveryChunkSize) {
  const Problem c = make_problem(37, 19, 1003, 10);
  const std::vector<float> h = to_float(c.h), w = to_float(c.weight);
  const std::vector<float> init_dh = to_float(normal(c.h.size(), 11, 0.01));
  const std::vector<float> init_dw = to_float(normal(c.weight.size(), 12, 0.01));
  const float g = 1.0f / 30.0f;
  const Result ref = run_lm_head(c, h, w, init_dh, init_dw, g, 64, nullptr);
  std::vector<Result> by_chunk;
  for (int64_t chunk : {1, 7, 100}) {  // one row, a partial last chunk, more rows than T
    SCOPED_TRACE(testing::Message() << "chunk_rows " << chunk);
    for (int threads : {1, 2, 3}) {
      ThreadPool pool(threads);
      const Result fast = run_lm_head(c, h, w, init_dh, init_dw, g, chunk, &pool);
      expect_close(c, init_dh, init_dw, g, ref, fast);
      if (threads == 1) by_chunk.push_back(fast);
      // The pool only splits independent rows: bit-identical for any thread count and run.
      const Result& first = by_chunk.back();
      ASSERT_EQ(fast.loss_sum, first.loss_sum);
      ASSERT_EQ(std::memcmp(fast.dh.data(), first.dh.data(), fast.dh.size() * 4), 0);
      ASSERT_EQ(std::memcmp(fast.dweight.data(), first.dweight.data(), fast.dweight.size() * 4), 0);
    }
  }
  for (size_t i = 1; i < by_chunk.size(); ++i) {
    expect_close(c, init_dh, init_dw, g, by_chunk[0], by_chunk[i]);
  }
}

TEST(LmHeadCrossEntropy, IgnoredRowsPassNoGradient) {
  Problem c = make_problem(9, 8, 101, 20);
  const std::vector<float> h = to_float(c.h), w = to_float(c.weight);
  const std::vector<float> init_dh = to_float(normal(c.h.size(), 21));
  const std::vector<float> init_dw = to_float(normal(c.weight.size(), 22));
  ThreadPool pool(2);
  for (ThreadPool* p : {(ThreadPool*)nullptr, &pool}) {
    // Mixed: the ignored rows of dh are untouched (the zero dlogits add exactly 0).
    const Result mixed = run_lm_head(c, h, w, init_dh, init_dw, 1.0f, 4, p);
    for (int64_t t = 0; t < 9; ++t) {
      if (c.targets[size_t(t)] >= 0) continue;
      for (int64_t d = 0; d < 8; ++d)
        ASSERT_EQ(mixed.dh[size_t(t * 8 + d)], init_dh[size_t(t * 8 + d)]);
    }
    // None counted: no loss, no gradient at all.
    Problem none = c;
    std::fill(none.targets.begin(), none.targets.end(), -1);
    const Result empty = run_lm_head(none, h, w, init_dh, init_dw, 1.0f, 4, p);
    EXPECT_EQ(empty.loss_sum, 0.0f);
    EXPECT_EQ(empty.dh, init_dh);
    EXPECT_EQ(empty.dweight, init_dw);
  }
}

TEST(LmHeadCrossEntropy, GradScaleScalesTheGradientsOnly) {
  // A power-of-two grad_scale commutes with every rounding: the gradients scale exactly.
  const Problem c = make_problem(13, 10, 257, 30);
  const std::vector<float> h = to_float(c.h), w = to_float(c.weight);
  const std::vector<float> zero_dh(c.h.size(), 0.0f), zero_dw(c.weight.size(), 0.0f);
  ThreadPool pool(3);
  for (ThreadPool* p : {(ThreadPool*)nullptr, &pool}) {
    const Result one = run_lm_head(c, h, w, zero_dh, zero_dw, 1.0f, 5, p);
    const Result four = run_lm_head(c, h, w, zero_dh, zero_dw, 4.0f, 5, p);
    EXPECT_EQ(one.loss_sum, four.loss_sum);
    EXPECT_GT(one.loss_sum, 1.0f);
    for (size_t i = 0; i < one.dh.size(); ++i) ASSERT_EQ(4.0f * one.dh[i], four.dh[i]) << i;
    for (size_t i = 0; i < one.dweight.size(); ++i) {
      ASSERT_EQ(4.0f * one.dweight[i], four.dweight[i]) << i;
    }
  }
}

TEST(LmHeadCrossEntropy, EachGradientIsOptional) {
  const Problem c = make_problem(11, 6, 50, 40);
  const std::vector<float> h = to_float(c.h), w = to_float(c.weight);
  const std::vector<float> zero_dh(c.h.size(), 0.0f), zero_dw(c.weight.size(), 0.0f);
  ThreadPool pool(2);
  const Result both = run_lm_head(c, h, w, zero_dh, zero_dw, 0.5f, 3, &pool);
  float loss = 0;
  std::vector<float> dh(c.h.size(), 0.0f), dw(c.weight.size(), 0.0f);
  auto params = params_for(c, h, w, &loss);
  params.grad_scale = 0.5f;
  params.chunk_rows = 3;
  lm_head_cross_entropy(params, pool);  // forward only
  EXPECT_EQ(loss, both.loss_sum);
  params.dh = dh.data();
  lm_head_cross_entropy(params, pool);
  EXPECT_EQ(dh, both.dh);
  params.dh = nullptr;
  params.dweight = dw.data();
  lm_head_cross_entropy(params, pool);
  EXPECT_EQ(dw, both.dweight);
}

TEST(LmHeadCrossEntropy, BadParametersThrow) {
  Problem c = make_problem(5, 3, 7, 50);
  const std::vector<float> h = to_float(c.h), w = to_float(c.weight);
  float loss = 0;
  ThreadPool pool(1);
  auto throws = [&](const LmHeadCrossEntropyParams& params, const char* message) {
    EXPECT_THROW(lm_head_cross_entropy_reference(params), Error);
    try {
      lm_head_cross_entropy(params, pool);
      ADD_FAILURE() << "no error for " << message;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
    }
  };
  c.targets[3] = 7;  // == vocab
  throws(params_for(c, h, w, &loss), "targets[3] = 7");
  c.targets[3] = -2;
  throws(params_for(c, h, w, &loss), "targets[3] = -2");
  c.targets[3] = 0;
  auto bad = params_for(c, h, w, &loss);
  bad.chunk_rows = 0;
  throws(bad, "chunk_rows");
  bad = params_for(c, h, w, &loss);
  bad.loss_sum = nullptr;
  throws(bad, "loss_sum");
  bad = params_for(c, h, w, &loss);
  bad.dim = 0;
  throws(bad, "dim");
  bad = params_for(c, h, w, &loss);
  bad.grad_scale = NAN;
  throws(bad, "grad_scale");
  bad = params_for(c, h, w, &loss);
  bad.targets = nullptr;
  throws(bad, "targets");
}

TEST(LmHeadLogits, MatchesTheFormula) {
  const Problem c = make_problem(7, 33, 301, 60);
  const std::vector<float> h = to_float(c.h), w = to_float(c.weight);
  std::vector<float> out(size_t(7 * 301));
  ThreadPool pool(2);
  lm_head_logits(h.data(), w.data(), 7, 33, 301, out.data(), pool);
  for (int64_t t = 0; t < 7; ++t) {
    for (int64_t v = 0; v < 301; ++v) {
      double abs_sum = 0;
      for (int64_t d = 0; d < 33; ++d)
        abs_sum += std::fabs(c.h[size_t(t * 33 + d)] * c.weight[size_t(v * 33 + d)]);
      // One fp32 dot product of 33 terms: (D + 1) u Σ|h W|.
      ASSERT_NEAR(out[size_t(t * 301 + v)], logit(c, t, v), 34 * kU * abs_sum) << t << " " << v;
    }
  }
  EXPECT_THROW(lm_head_logits(h.data(), w.data(), 7, 0, 301, out.data(), pool), Error);
  EXPECT_THROW(lm_head_logits(h.data(), nullptr, 7, 33, 301, out.data(), pool), Error);
}

TEST(LmHeadCrossEntropy, RowLossesAddUpToTheSum) {
  // Each counted row's −log p, 0 for ignored rows; the fast version sums them in row order, so
  // its loss_sum is their double sum, and the reference's are its own terms (Real sums).
  const Problem c = make_problem(23, 9, 131, 50);
  const std::vector<float> h = to_float(c.h), w = to_float(c.weight);
  ThreadPool pool(2);
  std::vector<float> fast_rows(size_t(c.tokens), -1.0f), ref_rows(size_t(c.tokens), -1.0f);
  float fast_sum = 0.0f, ref_sum = 0.0f;
  LmHeadCrossEntropy<float> p{.h = h.data(),
                              .weight = w.data(),
                              .targets = c.targets.data(),
                              .loss_sum = &fast_sum,
                              .row_loss = fast_rows.data(),
                              .tokens = c.tokens,
                              .dim = c.dim,
                              .vocab = c.vocab,
                              .chunk_rows = 5};
  lm_head_cross_entropy(p, pool);
  p.loss_sum = &ref_sum;
  p.row_loss = ref_rows.data();
  lm_head_cross_entropy_reference(p);
  double total = 0.0;
  int counted = 0;
  for (int64_t t = 0; t < c.tokens; ++t) {
    if (c.targets[size_t(t)] < 0) {
      EXPECT_EQ(fast_rows[size_t(t)], 0.0f);
      EXPECT_EQ(ref_rows[size_t(t)], 0.0f);
      continue;
    }
    ++counted;
    EXPECT_GT(fast_rows[size_t(t)], 0.0f);
    // Same bound as the loss itself: both sum V exps in fp32 or double (see expect_close).
    EXPECT_NEAR(fast_rows[size_t(t)], ref_rows[size_t(t)], 1e-5 * ref_rows[size_t(t)]) << t;
    total += fast_rows[size_t(t)];
  }
  EXPECT_GT(counted, 0);
  EXPECT_NEAR(fast_sum, total, 1e-6 * total);
}

}  // namespace
}  // namespace dsa

// run_perplexity on a tiny random model against a direct computation from sequence_logits over
// the same windows (the scoring rule, PPL, its error, KL and top-1 recomputed here independently);
// sparse equal to dense when every row has at most index_topk keys; the running statistics; and
// the configuration errors.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "core/error.h"
#include "model/forward.h"
#include "perf/perplexity.h"
#include "support/model_fixture.h"
#include "support/test_util.h"

namespace dsa {
namespace {

using test::TempDir;

class PerplexityFixture : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    test::write_random_model(dir_->path() / "tiny", test::preset_config("tiny"), 11);
    ThreadPool pool(2);
    model_ = Model::load(dir_->path() / "tiny", pool).release();
  }
  static void TearDownTestSuite() {
    delete model_;
    delete dir_;
  }

  // Fixed ids spread over the vocabulary.
  static std::vector<int32_t> tokens(int64_t count) {
    std::vector<int32_t> ids;
    for (int64_t i = 0; i < count; ++i) ids.push_back(int32_t((i * 7919 + 13) % 1024));
    return ids;
  }

  ThreadPool pool_{2};
  static TempDir* dir_;
  static Model* model_;
};
TempDir* PerplexityFixture::dir_ = nullptr;
Model* PerplexityFixture::model_ = nullptr;

// The logits of positions 0 .. ctx-2 of window `w` (first token replaced by `bos` if given), run
// as prefill chunks of `chunk` from an empty cache: [ctx-1, vocab].
std::vector<float> window_logits(const Model& model, const std::vector<int32_t>& ids, int64_t w,
                                 int64_t ctx, int64_t chunk, AttentionMode mode, ThreadPool& pool,
                                 std::optional<int32_t> bos = std::nullopt) {
  std::vector<int32_t> window(ids.begin() + w * ctx, ids.begin() + (w + 1) * ctx - 1);
  if (bos) window[0] = *bos;
  ForwardOptions options;
  options.attention = mode;
  return sequence_logits(model, window, int64_t(window.size()), chunk, options, pool);
}

// log-softmax of one row in long double, written out plainly.
std::vector<long double> log_softmax(const float* row, int64_t vocab) {
  long double max = row[0];
  for (int64_t v = 1; v < vocab; ++v) max = std::max<long double>(max, row[v]);
  long double sum = 0;
  for (int64_t v = 0; v < vocab; ++v) sum += std::exp((long double)row[v] - max);
  std::vector<long double> out(static_cast<size_t>(vocab));
  for (int64_t v = 0; v < vocab; ++v) out[size_t(v)] = row[v] - max - std::log(sum);
  return out;
}

struct Direct {
  std::vector<double> nll;  // per scored token, in order
};

Direct direct_nll(const Model& model, const std::vector<int32_t>& ids, int64_t ctx, int64_t chunk,
                  AttentionMode mode, ThreadPool& pool, std::optional<int32_t> bos = std::nullopt) {
  const int64_t vocab = model.config().vocab_size, windows = int64_t(ids.size()) / ctx;
  Direct direct;
  for (int64_t w = 0; w < windows; ++w) {
    const std::vector<float> logits = window_logits(model, ids, w, ctx, chunk, mode, pool, bos);
    // Targets: window positions ctx/2 .. ctx-1, each predicted by the logits one position back.
    for (int64_t target = ctx / 2; target < ctx; ++target) {
      const std::vector<long double> lp = log_softmax(logits.data() + (target - 1) * vocab, vocab);
      direct.nll.push_back(double(-lp[size_t(ids[size_t(w * ctx + target)])]));
    }
  }
  return direct;
}

double mean(const std::vector<double>& xs) {
  double sum = 0;
  for (double x : xs) sum += x;
  return sum / double(xs.size());
}

double standard_error(const std::vector<double>& xs) {
  const double m = mean(xs);
  double ss = 0;
  for (double x : xs) ss += (x - m) * (x - m);
  return std::sqrt(ss / double(xs.size() - 1) / double(xs.size()));
}

// The per-token NLLs agree to double rounding: both sides compute log-softmax of the same float
// logits (the forward pass is deterministic for a given pool and chunking), in double here vs
// long double in the test, over 1024 terms: |error| <~ 1024 * 2^-53 * |logit| ~ 1e-12 for logits of
// magnitude < 10. Means and errors inherit that.
constexpr double kNllTolerance = 1e-10;

TEST_F(PerplexityFixture, MatchesDirectComputationDenseAndSparse) {
  // 3 windows of 40 (and 7 tokens left out), chunks of 8: positions 0..38 run in 5 calls, the first
  // two (positions < 19) without logits.
  const std::vector<int32_t> ids = tokens(127);
  PerplexityConfig config;
  config.context = 40;
  config.chunk = 8;
  config.modes = {AttentionMode::kSparse, AttentionMode::kDense};
  const PerplexityResult r = run_perplexity(*model_, ids, config, pool_);
  EXPECT_EQ(r.windows, 3);
  EXPECT_EQ(r.scored_per_window, 20);
  ASSERT_EQ(r.modes.size(), 2u);
  for (const ModePerplexity& m : r.modes) {
    const Direct direct = direct_nll(*model_, ids, 40, 8, m.mode, pool_);
    ASSERT_EQ(m.nll.count(), int64_t(direct.nll.size()));
    EXPECT_EQ(m.tokens_run, 3 * 39);
    EXPECT_NEAR(m.nll.mean(), mean(direct.nll), kNllTolerance);
    EXPECT_NEAR(m.nll.standard_error(), standard_error(direct.nll), kNllTolerance);
    EXPECT_NEAR(m.nll.max(), *std::max_element(direct.nll.begin(), direct.nll.end()),
                kNllTolerance);
    // PPL = exp(mean NLL), error = PPL * sem: relative tolerance from the NLL's absolute one.
    const double ppl = std::exp(mean(direct.nll));
    EXPECT_NEAR(m.perplexity(), ppl, ppl * 2 * kNllTolerance);
    EXPECT_NEAR(m.perplexity_error(), ppl * standard_error(direct.nll), ppl * 4 * kNllTolerance);
    EXPECT_GT(m.seconds, 0);
  }
}

TEST_F(PerplexityFixture, KlAndTopOneMatchDirectComputation) {
  // ctx 64 > index_topk 16: sparse really selects, so it differs from dense.
  const std::vector<int32_t> ids = tokens(128);
  PerplexityConfig config;
  config.context = 64;
  config.chunk = 64;
  const PerplexityResult r = run_perplexity(*model_, ids, config, pool_);
  ASSERT_EQ(r.comparisons.size(), 1u);
  const ModeComparison& c = r.comparisons[0];
  EXPECT_EQ(c.mode, AttentionMode::kSparse);
  const int64_t vocab = 1024;
  std::vector<double> kl;
  int64_t same = 0;
  for (int64_t w = 0; w < 2; ++w) {
    const auto dense = window_logits(*model_, ids, w, 64, 64, AttentionMode::kDense, pool_);
    const auto sparse = window_logits(*model_, ids, w, 64, 64, AttentionMode::kSparse, pool_);
    for (int64_t row = 31; row < 63; ++row) {
      const auto pd = log_softmax(dense.data() + row * vocab, vocab);
      const auto ps = log_softmax(sparse.data() + row * vocab, vocab);
      long double sum = 0;
      for (int64_t v = 0; v < vocab; ++v)
        sum += std::exp(pd[size_t(v)]) * (pd[size_t(v)] - ps[size_t(v)]);
      kl.push_back(double(sum));
      const auto argmax = [&](const std::vector<float>& x) {
        return std::max_element(x.begin() + row * vocab, x.begin() + (row + 1) * vocab) -
               (x.begin() + row * vocab);
      };
      same += argmax(dense) == argmax(sparse);
    }
  }
  ASSERT_EQ(c.kl.count(), 64);
  EXPECT_GT(mean(kl), 1e-6);  // the modes really differ here
  EXPECT_NEAR(c.kl.mean(), mean(kl), kNllTolerance);
  EXPECT_NEAR(c.kl.standard_error(), standard_error(kl), kNllTolerance);
  EXPECT_NEAR(c.kl.max(), *std::max_element(kl.begin(), kl.end()), kNllTolerance);
  EXPECT_EQ(c.top1_same, same);
  const double a = double(same) / 64;
  EXPECT_DOUBLE_EQ(c.top1_agreement(), a);
  EXPECT_DOUBLE_EQ(c.top1_error(), std::sqrt(a * (1 - a) / 64));
}

TEST_F(PerplexityFixture, SparseEqualsDenseWhenEveryRowFitsTopK) {
  // ctx 16 = index_topk: every row has at most 16 keys, so sparse attends to all of them.
  const std::vector<int32_t> ids = tokens(80);
  PerplexityConfig config;
  config.context = 16;
  config.chunk = 5;
  const PerplexityResult r = run_perplexity(*model_, ids, config, pool_);
  ASSERT_EQ(r.comparisons.size(), 1u);
  const ModeComparison& c = r.comparisons[0];
  EXPECT_EQ(c.kl.count(), 5 * 8);
  // Same attention, possibly through different kernels: the logits agree to float rounding
  // (|d| ~ 1e-6 relative), and KL is second order in the difference, ~|d|^2 ~ 1e-12.
  EXPECT_NEAR(c.kl.mean(), 0.0, 1e-9);
  EXPECT_NEAR(c.kl.max(), 0.0, 1e-9);
  EXPECT_EQ(c.top1_same, c.kl.count());
  EXPECT_DOUBLE_EQ(c.top1_agreement(), 1.0);
  EXPECT_NEAR(r.modes[0].nll.mean(), r.modes[1].nll.mean(), 1e-5);
}

TEST_F(PerplexityFixture, OddContextAndBos) {
  // ctx 9: the second half is positions 4..8, five tokens; the BOS replaces each window's first.
  const std::vector<int32_t> ids = tokens(30);
  PerplexityConfig config;
  config.context = 9;
  config.chunk = 3;
  config.modes = {AttentionMode::kDense};
  config.bos = 0;
  const PerplexityResult r = run_perplexity(*model_, ids, config, pool_);
  EXPECT_EQ(r.windows, 3);
  EXPECT_EQ(r.scored_per_window, 5);
  EXPECT_TRUE(r.comparisons.empty());
  const Direct direct = direct_nll(*model_, ids, 9, 3, AttentionMode::kDense, pool_, 0);
  ASSERT_EQ(r.modes[0].nll.count(), 15);
  EXPECT_NEAR(r.modes[0].nll.mean(), mean(direct.nll), kNllTolerance);
  // Without the BOS the windows start differently, so the result changes.
  config.bos.reset();
  EXPECT_NE(run_perplexity(*model_, ids, config, pool_).modes[0].nll.mean(), r.modes[0].nll.mean());
}

TEST_F(PerplexityFixture, ReportsProgressOverAllModes) {
  const std::vector<int32_t> ids = tokens(40);
  PerplexityConfig config;
  config.context = 20;
  config.chunk = 10;
  std::vector<std::pair<int64_t, int64_t>> calls;
  run_perplexity(*model_, ids, config, pool_,
                 [&](int64_t done, int64_t total) { calls.emplace_back(done, total); });
  ASSERT_FALSE(calls.empty());
  EXPECT_EQ(calls.front(), std::make_pair(int64_t(0), int64_t(2 * 19 * 2)));
  EXPECT_EQ(calls.back(), std::make_pair(int64_t(76), int64_t(76)));
}

TEST(RunningMean, MeanErrorAndMax) {
  RunningMean stats;
  EXPECT_EQ(stats.standard_error(), 0);
  for (double x : {2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0}) stats.add(x);
  EXPECT_EQ(stats.count(), 8);
  EXPECT_DOUBLE_EQ(stats.mean(), 5.0);
  EXPECT_DOUBLE_EQ(stats.max(), 9.0);
  // Squared deviations sum to 32: sample variance 32/7, sem sqrt(32/7/8).
  EXPECT_DOUBLE_EQ(stats.standard_error(), std::sqrt(32.0 / 7.0 / 8.0));
}

TEST(PerplexityValidate, NamesTheBadField) {
  const ModelConfig tiny = test::preset_config("tiny");
  const auto expect_error = [&](const PerplexityConfig& config, const ModelConfig& model,
                                int64_t n_tokens, const std::string& message) {
    try {
      validate(config, model, n_tokens);
      ADD_FAILURE() << "no error; expected: " << message;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
    }
  };
  PerplexityConfig ok;
  ok.context = 64;
  EXPECT_NO_THROW(validate(ok, tiny, 128));
  PerplexityConfig c = ok;
  expect_error(c, tiny, 127,
               "the text has 127 tokens, fewer than 2 windows of 64 (-c): at least 128 tokens are "
               "needed");
  c.context = 1;
  expect_error(c, tiny, 1000, "context 1 (-c) must be at least 2");
  c.context = 4096;
  expect_error(c, tiny, 10000,
               "context 4096 (-c) exceeds the model's max_position_embeddings (2048)");
  c = ok;
  c.chunk = 0;
  expect_error(c, tiny, 128, "chunk 0 (-b) must be at least 1");
  c = ok;
  c.modes = {};
  expect_error(c, tiny, 128, "no attention modes given (--attention)");
  c.modes = {AttentionMode::kDense, AttentionMode::kDense};
  expect_error(c, tiny, 128, "attention mode 'dense' (--attention) is given twice");
  c.modes = {AttentionMode::kSparse, AttentionMode::kDense};
  expect_error(c, test::preset_config("tiny-v3"), 128,
               "attention mode 'sparse' (--attention) needs a V3.2 model with an indexer; this "
               "one is DeepseekV3ForCausalLM (use --attention dense)");
  c = ok;
  c.bos = 1024;
  expect_error(c, tiny, 128, "BOS token 1024 is outside the model's vocabulary (1024)");
}

}  // namespace
}  // namespace dsa

// The whole-model benchmark runner on a tiny random model at tiny depths: every (mode, depth,
// test) record is present, in order, with positive times that agree with each other; the fill
// progress is reported for real prefill only; the synthetic cache holds valid entries the forward
// pass can read; bad configurations are rejected naming the field and flag. No speed is checked.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "core/error.h"
#include "core/float_formats.h"
#include "model/forward.h"
#include "ops/attention/latent_cache.h"
#include "perf/model_bench.h"
#include "support/model_fixture.h"
#include "support/test_util.h"

namespace dsa {
namespace {

using test::TempDir;

class ModelBenchFixture : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    test::write_random_model(dir_->path() / "tiny", test::preset_config("tiny"), 3);
    ThreadPool pool(1);
    model_ = Model::load(dir_->path() / "tiny", pool).release();
  }
  static void TearDownTestSuite() {
    delete model_;
    delete dir_;
  }

  // Depths around the tiny preset's index_topk (16): at 40 sparse attention really selects.
  static ModelBenchConfig small_config() {
    ModelBenchConfig config;
    config.depths = {40, 0, 24};
    config.n_prompt = 8;
    config.n_gen = 3;
    config.runs = 2;
    config.fill_chunk = 16;
    return config;
  }

  ThreadPool pool_{2};
  static TempDir* dir_;
  static Model* model_;
};
TempDir* ModelBenchFixture::dir_ = nullptr;
Model* ModelBenchFixture::model_ = nullptr;

// Records sorted by mode (config order), depth, then pp before tg, each with sane times.
void expect_complete(const std::vector<ModelBenchResult>& results, const ModelBenchConfig& config) {
  const std::vector<int64_t> depths = {0, 24, 40};
  ASSERT_EQ(results.size(), config.modes.size() * depths.size() * 2);
  size_t i = 0;
  for (AttentionMode mode : config.modes) {
    for (int64_t depth : depths) {
      for (ModelBenchTest test : {ModelBenchTest::kPrompt, ModelBenchTest::kGenerate}) {
        const ModelBenchResult& r = results[i++];
        SCOPED_TRACE(std::string(attention_mode_name(mode)) + " " + r.test_label());
        EXPECT_EQ(r.mode, mode);
        EXPECT_EQ(r.depth, depth);
        EXPECT_EQ(r.test, test);
        EXPECT_EQ(r.n_tokens, test == ModelBenchTest::kPrompt ? 8 : 3);
        ASSERT_EQ(r.run_seconds.size(), 2u);
        for (double seconds : r.run_seconds) EXPECT_GT(seconds, 0);
        const TimingStats per_token = r.seconds_per_token(), rate = r.tokens_per_second();
        EXPECT_EQ(rate.runs, 2);
        EXPECT_LE(per_token.min, per_token.median);
        EXPECT_LE(per_token.median, per_token.max);
        EXPECT_LE(rate.min, rate.median);
        EXPECT_LE(rate.median, rate.max);
        // The fastest run has the highest rate; 1 / x only rounds once each way (a few ulp).
        EXPECT_NEAR(rate.max * per_token.min, 1.0, 1e-12);
        EXPECT_NEAR(rate.min * per_token.max, 1.0, 1e-12);
      }
    }
  }
}

TEST_F(ModelBenchFixture, RealPrefillRecordsAreCompleteAndSane) {
  const ModelBenchConfig config = small_config();
  std::vector<std::tuple<std::string, int64_t, int64_t>> progress;
  const std::vector<ModelBenchResult> results = run_model_bench(
      *model_, config, pool_, [&](const std::string& label, int64_t done, int64_t total) {
        progress.emplace_back(label, done, total);
      });
  expect_complete(results, config);
  // One fill per mode to the largest depth in chunks of 16: 0, 16, 32, 40.
  const std::vector<std::tuple<std::string, int64_t, int64_t>> expected = {
      {"fill sparse", 0, 40},  {"fill sparse", 16, 40}, {"fill sparse", 32, 40},
      {"fill sparse", 40, 40}, {"fill dense", 0, 40},   {"fill dense", 16, 40},
      {"fill dense", 32, 40},  {"fill dense", 40, 40}};
  EXPECT_EQ(progress, expected);
}

TEST_F(ModelBenchFixture, SyntheticCacheRunsWithoutFilling) {
  ModelBenchConfig config = small_config();
  config.synthetic_cache = true;
  config.modes = {AttentionMode::kDense, AttentionMode::kSparse, AttentionMode::kAuto};
  int progress_calls = 0;
  const std::vector<ModelBenchResult> results = run_model_bench(
      *model_, config, pool_, [&](const std::string&, int64_t, int64_t) { ++progress_calls; });
  expect_complete(results, config);
  EXPECT_EQ(progress_calls, 0);
}

TEST_F(ModelBenchFixture, PromptOrGenerationAlone) {
  ModelBenchConfig config = small_config();
  config.depths = {4};
  config.runs = 1;
  config.n_gen = 0;
  std::vector<ModelBenchResult> results = run_model_bench(*model_, config, pool_);
  ASSERT_EQ(results.size(), 2u);
  for (const ModelBenchResult& r : results) EXPECT_EQ(r.test, ModelBenchTest::kPrompt);
  EXPECT_EQ(results[0].test_label(), "pp8 @ d4");
  config.n_prompt = 0;
  config.n_gen = 5;
  config.depths = {0};
  results = run_model_bench(*model_, config, pool_);
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[1].test, ModelBenchTest::kGenerate);
  EXPECT_EQ(results[1].test_label(), "tg5");  // llama-bench leaves "@ d0" out
}

TEST_F(ModelBenchFixture, SyntheticCacheEntriesAreValid) {
  const ModelConfig& c = model_->config();
  KvCache cache(c, 64);
  fill_synthetic_cache(c, cache, 48, 11, pool_);
  ASSERT_EQ(cache.size(), 48);
  std::vector<float> key(size_t(cache.latent_dims().key()));
  for (int64_t layer = 0; layer < cache.layers(); ++layer) {
    const LatentCacheView view = cache.latent(layer, 48);
    for (int64_t pos = 0; pos < 48; ++pos) {
      unpack_latent_token(view.token(pos), view.format, view.dims, key);
      double sum2 = 0;
      for (float x : key) {
        ASSERT_TRUE(std::isfinite(x)) << "layer " << layer << " position " << pos;
        sum2 += double(x) * x;
      }
      EXPECT_GT(sum2, 0);  // not left zeroed
      const float scale = cache.index_scales(layer)[pos];
      int exponent = 0;
      EXPECT_EQ(std::frexp(scale, &exponent), 0.5f) << scale;  // a positive power of two
      for (int64_t i = 0; i < c.index_head_dim; ++i) {
        ASSERT_TRUE(
            std::isfinite(fp8_to_float(cache.index_codes(layer)[pos * c.index_head_dim + i])));
      }
    }
  }
  // The forward pass reads it like a real cache: sparse decode gives finite logits.
  std::vector<float> logits(size_t(c.vocab_size));
  const int32_t token = 5;
  ForwardOptions options;
  options.attention = AttentionMode::kSparse;
  model_->forward({&token, 1}, cache, logits, options, pool_);
  for (float x : logits) ASSERT_TRUE(std::isfinite(x));
  EXPECT_EQ(cache.size(), 49);
}

void expect_config_error(const ModelBenchConfig& config, const ModelConfig& model,
                         const std::string& message) {
  try {
    validate(config, model);
    FAIL() << "no error for " << message;
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), message);
  }
}

TEST_F(ModelBenchFixture, RejectsBadConfigurations) {
  const ModelConfig& c = model_->config();  // max_position_embeddings 2048
  ModelBenchConfig config = small_config();
  EXPECT_NO_THROW(validate(config, c));
  config.depths = {};
  expect_config_error(config, c, "bench: no depths given (-d)");
  config.depths = {0, -3};
  expect_config_error(config, c, "bench: depth -3 (-d) must be at least 0");
  config.depths = {2000};
  config.n_prompt = 48;
  expect_config_error(config, c,
                      "bench: max depth 2000 + n_prompt 48 + n_gen 3 = 2051 positions exceed the "
                      "model's max_position_embeddings (2048); lower -d, -p or -n");
  config.n_gen = 0;
  EXPECT_NO_THROW(validate(config, c));  // exactly 2048 positions
  config.n_gen = 1;
  EXPECT_THROW(validate(config, c), Error);
  config = small_config();
  config.n_prompt = -1;
  expect_config_error(config, c, "bench: n_prompt -1 (-p) must be at least 0");
  config.n_prompt = 0;
  config.n_gen = 0;
  expect_config_error(config, c,
                      "bench: n_prompt (-p) and n_gen (-n) are both 0: nothing to measure");
  config = small_config();
  config.n_gen = -2;
  expect_config_error(config, c, "bench: n_gen -2 (-n) must be at least 0");
  config = small_config();
  config.runs = 0;
  expect_config_error(config, c, "bench: runs 0 (-r) must be at least 1");
  config = small_config();
  config.modes = {};
  expect_config_error(config, c, "bench: no attention modes given (--attention)");
  config.modes = {AttentionMode::kDense, AttentionMode::kSparse, AttentionMode::kDense};
  expect_config_error(config, c, "bench: attention mode 'dense' (--attention) is given twice");
  config.modes = {AttentionMode::kSparse};
  expect_config_error(config, test::preset_config("tiny-v3"),
                      "bench: attention mode 'sparse' (--attention) needs a V3.2 model with an "
                      "indexer; this one is DeepseekV3ForCausalLM");
  config.modes = {AttentionMode::kDense};
  EXPECT_NO_THROW(validate(config, test::preset_config("tiny-v3")));
  config = small_config();
  config.depths = {};
  EXPECT_THROW(run_model_bench(*model_, config, pool_), Error);
}

TEST(ProcessStats, PeakMemoryAndLoadAreRead) {
  EXPECT_GT(peak_rss_bytes(), 1u << 20);  // a running test binary holds more than 1 MiB
  EXPECT_GE(load_average_1m(), 0.0);
}

}  // namespace
}  // namespace dsa

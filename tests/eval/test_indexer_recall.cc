// The indexer-recall evaluation (src/eval/indexer_recall.h): key-set overlap, the shape and
// ranges of the result, the chance level's closed form, agreement of the fp32 and FP8 selections
// on a model whose weights both paths share, and the errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "eval/indexer_recall.h"
#include "model/train_graph.h"
#include "support/model_fixture.h"
#include "support/test_util.h"

namespace dsa::eval {
namespace {

TEST(CountCommonKeys, MergesAscendingListsAndSkipsPadding) {
  const std::vector<int32_t> a = {0, 3, 5, 9, -1, -1};
  const std::vector<int32_t> b = {1, 3, 4, 9, 12, -1};
  EXPECT_EQ(count_common_keys(a, b), 2);
  EXPECT_EQ(count_common_keys(a, a), 4);
  EXPECT_EQ(count_common_keys(a, {}), 0);
  const std::vector<int32_t> pad = {-1, -1};
  EXPECT_EQ(count_common_keys(pad, pad), 0);
}

class IndexerRecallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = test::preset_config("tiny", /*fp8=*/false);  // index_topk 16, 2 layers
    test::write_random_model(dir_.path(), config_, 11);
    model_ = Model::load(dir_.path(), pool_);
    params_ = std::make_unique<ParameterBuffer>(load_parameters(dir_.path(), pool_));
    for (int i = 0; i < 200; ++i) tokens_.push_back(int32_t((i * 71 + 5) % 1000));
  }
  test::TempDir dir_;
  ThreadPool pool_{2};
  ModelConfig config_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<ParameterBuffer> params_;
  std::vector<int32_t> tokens_;
};

TEST_F(IndexerRecallTest, RecallChanceAndOverlap) {
  IndexerRecallConfig config;
  config.context = 64;
  config.max_windows = 2;
  config.bos = 0;
  config.chunk = 24;
  int64_t calls = 0;
  const IndexerRecallResult r = run_indexer_recall(*params_, model_.get(), tokens_, config, pool_,
                                                   [&](int64_t done, int64_t total) {
                                                     EXPECT_EQ(done, ++calls);
                                                     EXPECT_EQ(total, 2);
                                                   });
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(r.windows, 2);
  const int64_t k = config_.index_topk;
  EXPECT_EQ(r.rows_per_window, 64 - k);
  ASSERT_EQ(int64_t(r.layers.size()), config_.num_hidden_layers);
  double chance = 0;
  for (int64_t t = k; t < 64; ++t) chance += double(k) / double(t + 1);
  chance /= double(64 - k);
  for (const LayerIndexerRecall& layer : r.layers) {
    EXPECT_EQ(layer.recall.count(), 2 * (64 - k));
    EXPECT_GT(layer.recall.mean(), 0.0);
    EXPECT_LE(layer.recall.mean(), 1.0 + 1e-6);
    EXPECT_NEAR(layer.chance.mean(), chance, 1e-12);
    // No selection of k keys holds more mass than the k largest.
    EXPECT_LE(layer.recall.mean(), layer.oracle.mean() + 1e-6);
    EXPECT_LE(layer.oracle.mean(), 1.0 + 1e-6);
    EXPECT_GE(layer.overlap.mean(), 0.0);
    EXPECT_LE(layer.overlap.mean(), 1.0);
  }
  // Layer 0 reads the same embedding rows in both paths; only the indexer's numerics differ
  // (fp32 against FP8 with the Hadamard rotation), so most selected keys agree.
  EXPECT_GT(r.layers[0].overlap.mean(), 0.5);
  EXPECT_NEAR(r.mean_chance(), chance, 1e-12);

  const IndexerRecallResult no_inference =
      run_indexer_recall(*params_, nullptr, tokens_, config, pool_);
  EXPECT_TRUE(std::isnan(no_inference.mean_overlap()));
  EXPECT_EQ(no_inference.mean_recall(), r.mean_recall());
}

TEST_F(IndexerRecallTest, PerRowRecallIsOneUpToTopkAndAMassBeyond) {
  const TrainBatch batch{
      .tokens = std::span(tokens_).first(48), .sequences = 1, .seq_len = 48, .targets = {}};
  TrainStepOptions options;
  options.lm_loss = false;
  options.record_indexer_recall = true;
  const TrainStepResult r = train_step(*params_, batch, options, nullptr, pool_);
  ASSERT_EQ(int64_t(r.indexer_recall.size()), config_.num_hidden_layers);
  ASSERT_EQ(r.indexer_oracle_recall.size(), r.indexer_recall.size());
  for (size_t l = 0; l < r.indexer_recall.size(); ++l) {
    const std::vector<float>& layer = r.indexer_recall[l];
    const std::vector<float>& oracle = r.indexer_oracle_recall[l];
    ASSERT_EQ(layer.size(), 48u);
    ASSERT_EQ(oracle.size(), 48u);
    for (int64_t t = 0; t < 48; ++t) {
      if (t < config_.index_topk) {
        EXPECT_EQ(layer[size_t(t)], 1.0f) << t;
      } else {
        EXPECT_LE(layer[size_t(t)], oracle[size_t(t)] + 1e-6f) << t;
        EXPECT_GT(layer[size_t(t)], 0.0f) << t;
        EXPECT_LT(layer[size_t(t)], 1.0f) << t;  // some mass is on the keys left out
      }
    }
  }
  // A sequence no longer than the top-k: every key of every row is selected.
  const TrainBatch short_batch{
      .tokens = std::span(tokens_).first(12), .sequences = 1, .seq_len = 12, .targets = {}};
  const TrainStepResult all = train_step(*params_, short_batch, options, nullptr, pool_);
  for (const std::vector<float>& layer : all.indexer_recall) {
    EXPECT_EQ(layer, std::vector<float>(12, 1.0f));
  }
  options.attention = AttentionMode::kSparse;
  EXPECT_THROW(train_step(*params_, batch, options, nullptr, pool_), Error);
}

TEST_F(IndexerRecallTest, TopkOverrideChangesOnlyTheSelection) {
  const ParameterBuffer wide = with_index_topk(*params_, 32);
  EXPECT_EQ(wide.layout().config().index_topk, 32);
  EXPECT_TRUE(std::equal(wide.values().begin(), wide.values().end(), params_->values().begin()));
  model_->set_index_topk(32);
  EXPECT_EQ(model_->config().index_topk, 32);
  // Twice the keys from the same scores: a superset of the top-16, so no row's recall drops.
  const TrainBatch batch{
      .tokens = std::span(tokens_).first(64), .sequences = 1, .seq_len = 64, .targets = {}};
  TrainStepOptions options;
  options.lm_loss = false;
  options.record_indexer_recall = true;
  const TrainStepResult r16 = train_step(*params_, batch, options, nullptr, pool_);
  const TrainStepResult r32 = train_step(wide, batch, options, nullptr, pool_);
  int64_t higher = 0;
  for (size_t l = 0; l < r16.indexer_recall.size(); ++l) {
    for (size_t t = 32; t < 64; ++t) {
      EXPECT_GE(r32.indexer_recall[l][t], r16.indexer_recall[l][t] - 1e-6f) << l << " " << t;
      higher += r32.indexer_recall[l][t] > r16.indexer_recall[l][t] ? 1 : 0;
    }
  }
  EXPECT_GT(higher, 0);
  IndexerRecallConfig config;
  config.context = 64;
  config.max_windows = 1;
  EXPECT_EQ(run_indexer_recall(wide, model_.get(), tokens_, config, pool_).rows_per_window, 32);
  EXPECT_THROW(with_index_topk(*params_, 0), Error);
  EXPECT_THROW(model_->set_index_topk(0), Error);
}

TEST_F(IndexerRecallTest, BadSettingsAreErrors) {
  IndexerRecallConfig config;
  config.context = config_.index_topk;  // no row has more keys than the top-k
  EXPECT_THROW(run_indexer_recall(*params_, nullptr, tokens_, config, pool_), Error);
  config.context = 4096;  // beyond max_position_embeddings
  EXPECT_THROW(run_indexer_recall(*params_, nullptr, tokens_, config, pool_), Error);
  config.context = 256;  // more than the 200 tokens
  EXPECT_THROW(run_indexer_recall(*params_, nullptr, tokens_, config, pool_), Error);
}

}  // namespace
}  // namespace dsa::eval

// Retrieval scoring (src/eval/retrieval.h) on a random-weight model: answers_correctly agrees
// with greedy decoding computed independently from the full-sequence logits, misses are misses,
// the grid is deterministic and complete, and bad grids are errors.
#include <gtest/gtest.h>

#include <algorithm>

#include "core/error.h"
#include "eval/retrieval.h"
#include "support/model_fixture.h"
#include "support/test_util.h"

namespace dsa::eval {
namespace {

class RetrievalTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    test::write_random_model(dir_->path(), test::preset_config("tiny"), 3);
    pool_ = new ThreadPool(2);
    model_ = Model::load(dir_->path(), *pool_).release();
    tokenizer_ = new text::Tokenizer(
        text::Tokenizer::from_file(test::data_dir() / "tokenizer/trained_small/tokenizer.json"));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete tokenizer_;
    delete pool_;
    delete dir_;
  }

  // The greedy continuation of `prompt` for `n` tokens, from sequence_logits of prompt + the
  // continuation so far (prefill in chunks of 7, an independent path through the engine).
  static std::vector<int32_t> greedy(std::vector<int32_t> tokens, int n, AttentionMode mode) {
    ForwardOptions options;
    options.attention = mode;
    const int64_t V = model_->config().vocab_size;
    std::vector<int32_t> out;
    for (int i = 0; i < n; ++i) {
      const std::vector<float> logits =
          sequence_logits(*model_, tokens, int64_t(tokens.size()), 7, options, *pool_);
      const float* last = logits.data() + (int64_t(tokens.size()) - 1) * V;
      const int32_t next = int32_t(std::max_element(last, last + V) - last);
      out.push_back(next);
      tokens.push_back(next);
    }
    return out;
  }

  static test::TempDir* dir_;
  static ThreadPool* pool_;
  static Model* model_;
  static text::Tokenizer* tokenizer_;
};
test::TempDir* RetrievalTest::dir_ = nullptr;
ThreadPool* RetrievalTest::pool_ = nullptr;
Model* RetrievalTest::model_ = nullptr;
text::Tokenizer* RetrievalTest::tokenizer_ = nullptr;

TEST_F(RetrievalTest, AnswersCorrectlyIsGreedyDecoding) {
  std::vector<int32_t> prompt;
  for (int i = 0; i < 40; ++i) prompt.push_back(int32_t((i * 37 + 11) % 700));
  for (const AttentionMode mode : {AttentionMode::kSparse, AttentionMode::kDense}) {
    const std::vector<int32_t> answer = greedy(prompt, 4, mode);
    EXPECT_TRUE(answers_correctly(*model_, prompt, answer, mode, 16, *pool_));
    for (size_t miss = 0; miss < answer.size(); ++miss) {
      std::vector<int32_t> wrong = answer;
      wrong[miss] = (wrong[miss] + 1) % 700;
      EXPECT_FALSE(answers_correctly(*model_, prompt, wrong, mode, 16, *pool_)) << miss;
    }
  }
}

TEST_F(RetrievalTest, GridIsCompleteAndDeterministic) {
  const train::SyntheticTaskGenerator generator(*tokenizer_, {});
  RetrievalGrid grid;
  grid.kind = train::SyntheticKind::kPasskey;
  grid.lengths = {160, 240};
  grid.depths = {0.0, 0.5, 1.0};
  grid.trials = 2;
  grid.seed = 5;
  int64_t last_done = 0, last_total = 0;
  const RetrievalResult a =
      run_retrieval(*model_, *tokenizer_, generator, grid, AttentionMode::kSparse, *pool_,
                    [&](int64_t done, int64_t total) {
                      EXPECT_EQ(done, last_done + 1);
                      last_done = done;
                      last_total = total;
                    });
  EXPECT_EQ(last_done, 12);
  EXPECT_EQ(last_total, 12);
  ASSERT_EQ(a.cells.size(), 6u);
  for (size_t i = 0; i < a.cells.size(); ++i) {
    EXPECT_EQ(a.cells[i].length, grid.lengths[i / 3]);
    EXPECT_EQ(a.cells[i].depth, grid.depths[i % 3]);
    EXPECT_EQ(a.cells[i].trials, 2);
    EXPECT_GE(a.cells[i].correct, 0);
    EXPECT_LE(a.cells[i].correct, 2);
  }
  EXPECT_EQ(a.trials(), 12);
  const RetrievalResult b =
      run_retrieval(*model_, *tokenizer_, generator, grid, AttentionMode::kSparse, *pool_);
  for (size_t i = 0; i < a.cells.size(); ++i) EXPECT_EQ(a.cells[i].correct, b.cells[i].correct);
}

TEST_F(RetrievalTest, BadGridsAreErrors) {
  const train::SyntheticTaskGenerator generator(*tokenizer_, {});
  RetrievalGrid grid;
  grid.lengths = {160};
  grid.depths = {0.5};
  const auto run = [&](const RetrievalGrid& g) {
    run_retrieval(*model_, *tokenizer_, generator, g, AttentionMode::kDense, *pool_);
  };
  RetrievalGrid g = grid;
  g.lengths = {4096};  // beyond max_position_embeddings (2048)
  EXPECT_THROW(run(g), Error);
  g = grid;
  g.lengths = {8};  // too short for the passkey text
  EXPECT_THROW(run(g), Error);
  g = grid;
  g.depths = {1.5};
  EXPECT_THROW(run(g), Error);
  g = grid;
  g.trials = 0;
  EXPECT_THROW(run(g), Error);
  g = grid;
  g.depths.clear();
  EXPECT_THROW(run(g), Error);
  g = grid;
  g.kind = train::SyntheticKind::kNeedle;  // no haystack
  EXPECT_THROW(run(g), Error);
}

}  // namespace
}  // namespace dsa::eval

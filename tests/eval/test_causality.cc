// The causality check (src/eval/causality.h) passes on the engine in both attention modes, at
// a position inside a prefill chunk and past index_topk, and does see the change in later rows.
#include <gtest/gtest.h>

#include "core/error.h"
#include "eval/causality.h"
#include "support/model_fixture.h"
#include "support/test_util.h"

namespace dsa::eval {
namespace {

TEST(Causality, EarlierLogitsAreBitIdenticalInBothModes) {
  test::TempDir dir;
  test::write_random_model(dir.path(), test::preset_config("tiny"), 4);
  ThreadPool pool(2);
  const std::unique_ptr<Model> model = Model::load(dir.path(), pool);
  std::vector<int32_t> tokens;
  for (int i = 0; i < 80; ++i) tokens.push_back(int32_t((i * 53 + 7) % 1000));
  // index_topk is 16: rows past 16 attend to a selection, which the change must not reach.
  for (const AttentionMode mode : {AttentionMode::kSparse, AttentionMode::kDense}) {
    const CausalityResult r = check_causality(*model, tokens, 50, mode, 32, pool);
    EXPECT_TRUE(r.passed()) << attention_mode_name(mode) << ": " << r.rows_differing;
    EXPECT_EQ(r.rows_before, 50);
    EXPECT_TRUE(r.later_rows_changed);
  }
  EXPECT_THROW(check_causality(*model, tokens, 0, AttentionMode::kSparse, 32, pool), Error);
  EXPECT_THROW(check_causality(*model, tokens, 80, AttentionMode::kSparse, 32, pool), Error);
}

}  // namespace
}  // namespace dsa::eval

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <vector>

#include "core/error.h"
#include "ops/topk/topk.h"

namespace dsa {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<int32_t> run_reference(const std::vector<float>& scores, int64_t rows, int64_t k) {
  std::vector<int32_t> out(size_t(rows * k), -7);
  topk_select_reference({.scores = scores.data(),
                         .indices = out.data(),
                         .rows = rows,
                         .cols = int64_t(scores.size()) / rows,
                         .k = k});
  return out;
}

// min_split_columns: rows with fewer rows than threads are split into column chunks of at
// least this many (the default keeps short rows whole).
std::vector<int32_t> run_fast(const std::vector<float>& scores, int64_t rows, int64_t k,
                              int threads,
                              int64_t min_split_columns = TopkParams{}.min_split_columns) {
  ThreadPool pool(threads);
  std::vector<int32_t> out(size_t(rows * k), -7);
  topk_select({.scores = scores.data(),
               .indices = out.data(),
               .rows = rows,
               .cols = int64_t(scores.size()) / rows,
               .k = k,
               .min_split_columns = min_split_columns},
              pool);
  return out;
}

// Brute force, independent of both: index s is selected iff fewer than k valid entries beat it
// (a higher score, or an equal score at a lower index).
std::vector<int32_t> brute_force(const float* scores, int64_t cols, int64_t k) {
  std::vector<int32_t> out;
  for (int64_t s = 0; s < cols; ++s) {
    if (std::isnan(scores[s]) || scores[s] == -kInf) continue;
    int64_t better = 0;
    for (int64_t o = 0; o < cols; ++o) {
      if (std::isnan(scores[o]) || scores[o] == -kInf) continue;
      better += scores[o] > scores[s] || (scores[o] == scores[s] && o < s);
    }
    if (better < k) out.push_back(int32_t(s));
  }
  while (int64_t(out.size()) < k) out.push_back(-1);
  return out;
}

void expect_all_agree(const std::vector<float>& scores, int64_t rows, int64_t k) {
  const int64_t cols = int64_t(scores.size()) / rows;
  const std::vector<int32_t> ref = run_reference(scores, rows, k);
  for (int64_t r = 0; r < rows; ++r) {
    const std::vector<int32_t> expected = brute_force(scores.data() + r * cols, cols, k);
    ASSERT_EQ(std::vector<int32_t>(ref.begin() + r * k, ref.begin() + (r + 1) * k), expected)
        << "reference, row " << r;
  }
  for (int threads : {1, 2}) EXPECT_EQ(run_fast(scores, rows, k, threads), ref) << threads;
  // Rows split into column chunks (1 column each at the least, so even tiny rows split), with
  // more threads than rows: 2, 3 and 5 chunks of uneven length.
  for (int threads : {2, 3, 5}) {
    for (int64_t min_split : {1, 2}) {
      EXPECT_EQ(run_fast(scores, rows, k, threads * int(rows), min_split), ref)
          << threads << " threads per row, min_split_columns " << min_split;
    }
  }
}

TEST(Topk, PicksTheLargestInAscendingIndexOrder) {
  const std::vector<float> scores = {0.5f, 3.0f, -1.0f, 2.0f, 7.0f, 0.0f};
  const std::vector<int32_t> expected = {1, 3, 4};
  EXPECT_EQ(run_reference(scores, 1, 3), expected);
  EXPECT_EQ(run_fast(scores, 1, 3, 1), expected);
}

TEST(Topk, AllEqualScoresTakeTheLowestIndices) {
  const std::vector<float> scores(100, 1.25f);
  const std::vector<int32_t> expected = {0, 1, 2, 3, 4, 5, 6};
  EXPECT_EQ(run_fast(scores, 1, 7, 1), expected);
  expect_all_agree(scores, 1, 7);
}

TEST(Topk, ZeroSignsAreEqual) {
  // Scores are exactly 0 when every head's ReLU is 0; -0.0 and +0.0 tie, lower index first.
  const std::vector<float> scores = {-0.0f, 0.0f, -0.0f, 0.0f, -1.0f};
  const std::vector<int32_t> expected = {0, 1};
  EXPECT_EQ(run_fast(scores, 1, 2, 1), expected);
  expect_all_agree(scores, 1, 2);
}

TEST(Topk, MaskedAndNaNAreNeverSelected) {
  // k >= valid keys: all valid ones, then -1. NaN counts as masked.
  const std::vector<float> scores = {-kInf, 2.0f, kNaN, -kInf, -3.0f, kInf, -kNaN};
  const std::vector<int32_t> expected = {1, 4, 5, -1, -1, -1};
  EXPECT_EQ(run_reference(scores, 1, 6), expected);
  EXPECT_EQ(run_fast(scores, 1, 6, 1), expected);
  expect_all_agree(scores, 1, 3);
}

TEST(Topk, SingleKeyAndNoValidKey) {
  EXPECT_EQ(run_fast({4.0f}, 1, 2048, 1)[0], 0);
  EXPECT_EQ(run_fast({4.0f}, 1, 2048, 1)[1], -1);
  const std::vector<int32_t> none = run_fast({-kInf, kNaN}, 1, 3, 1);
  EXPECT_EQ(none, std::vector<int32_t>(3, -1));
}

TEST(Topk, CausalRowsOfAChunk) {
  // Rows of a causal chunk: row t has t + 1 valid keys, the rest -inf; k = 5 covers rows with
  // fewer and more valid keys than k.
  const int64_t rows = 9, cols = 9;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> scores(size_t(rows * cols));
  for (int64_t t = 0; t < rows; ++t) {
    for (int64_t s = 0; s < cols; ++s) scores[size_t(t * cols + s)] = s <= t ? uniform(rng) : -kInf;
  }
  expect_all_agree(scores, rows, 5);
}

TEST(Topk, RandomRowsWithTiesAndExtremes) {
  // Few distinct values (many ties across the threshold), huge negative values whose keys share
  // the -inf key's leading byte, and sizes around the radix digits.
  std::mt19937 rng(5);
  for (int64_t cols : {1, 2, 255, 256, 257, 1000}) {
    for (int64_t k : {1, 2, 7, 64, 256, 2048}) {
      const int64_t rows = 3;
      std::vector<float> scores(size_t(rows * cols));
      std::uniform_int_distribution<int> pick(0, 9);
      const float values[] = {-3.3e38f, -2e38f, -kInf,        kNaN, 0.0f,
                              -0.0f,    1.0f,   1.0f + 1e-7f, 2.5f, kInf};
      for (auto& v : scores) v = values[pick(rng)];
      expect_all_agree(scores, rows, k);
    }
  }
}

TEST(Topk, FastMatchesReferenceOnLargeRows) {
  // 2048 of 128K, as in decode at long context, plus rows with quantized (tied) scores.
  const int64_t cols = 131072, k = 2048;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> scores(size_t(2 * cols));
  for (int64_t s = 0; s < cols; ++s) scores[size_t(s)] = normal(rng);
  for (int64_t s = 0; s < cols; ++s) scores[size_t(cols + s)] = std::round(normal(rng) * 8.0f);
  const std::vector<int32_t> ref = run_reference(scores, 2, k);
  for (int threads : {1, 2}) ASSERT_EQ(run_fast(scores, 2, k, threads), ref);
  // Split rows, as in decode: each row alone, its columns over 2 to 4 threads.
  for (int64_t r = 0; r < 2; ++r) {
    const std::vector<float> row(scores.begin() + r * cols, scores.begin() + (r + 1) * cols);
    const std::vector<int32_t> row_ref(ref.begin() + r * k, ref.begin() + (r + 1) * k);
    for (int threads : {2, 3, 4}) {
      ASSERT_EQ(run_fast(row, 1, k, threads), row_ref) << "row " << r << ", " << threads;
    }
  }
  // Selected scores are >= every unselected one.
  for (int64_t r = 0; r < 2; ++r) {
    const float* row = scores.data() + r * cols;
    std::set<int32_t> chosen(ref.begin() + r * k, ref.begin() + (r + 1) * k);
    float lowest_chosen = kInf, highest_other = -kInf;
    for (int64_t s = 0; s < cols; ++s) {
      if (chosen.count(int32_t(s)))
        lowest_chosen = std::min(lowest_chosen, row[s]);
      else
        highest_other = std::max(highest_other, row[s]);
    }
    EXPECT_GE(lowest_chosen, highest_other);
  }
}

// topk_select on a 4-score row with `params`'s k and min_split_columns must throw `message`.
void expect_topk_error(TopkParams params, const std::string& message) {
  ThreadPool pool(2);
  std::vector<float> scores(4);
  std::vector<int32_t> out(4);
  params.scores = scores.data();
  params.indices = out.data();
  params.rows = 1;
  params.cols = 4;
  try {
    topk_select(params, pool);
    FAIL() << "no error, expected: " << message;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
  }
}

TEST(Topk, RejectsBadParams) {
  expect_topk_error({.k = 0}, "topk: need rows >= 0, cols >= 0, k > 0; got rows 1, cols 4, k 0");
  expect_topk_error({.k = 4, .min_split_columns = 0},
                    "topk: min_split_columns must be at least 1, got 0");
}

}  // namespace
}  // namespace dsa

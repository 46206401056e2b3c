#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "ops/embedding/embedding_train.h"

namespace dsa {
namespace {

template <typename Real>
std::vector<Real> random_vector(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<Real> out(n);
  for (auto& v : out) v = Real(normal(rng));
  return out;
}

// Ids drawn from a small part of the vocabulary, so that many repeat (their gradients sum).
std::vector<int32_t> random_ids(int64_t tokens, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> pick(0, int32_t(std::max<int64_t>(1, vocab / 3)) - 1);
  std::vector<int32_t> ids(static_cast<size_t>(tokens));
  for (auto& id : ids) id = pick(rng);
  if (tokens > 0) ids.back() = int32_t(vocab - 1);  // the last row of the table
  return ids;
}

TEST(EmbeddingTrain, ForwardReferenceGathersRows) {
  const int64_t tokens = 9, vocab = 11, dim = 5;
  const auto table = random_vector<double>(size_t(vocab * dim), 1);
  const auto ids = random_ids(tokens, vocab, 2);
  std::vector<double> out(size_t(tokens * dim));
  embedding_train_forward_reference<double>({.table = table.data(),
                                             .ids = ids.data(),
                                             .out = out.data(),
                                             .tokens = tokens,
                                             .vocab = vocab,
                                             .dim = dim});
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < dim; ++i) {
      ASSERT_EQ(out[size_t(t * dim + i)], table[size_t(ids[t] * dim + i)]) << t << " " << i;
    }
  }
}

// L = Σ dout · out is linear in the table: central differences are exact up to the rounding of
// the few changed terms (~1e-16) over the step 2e-6, far below 1e-9. A row gathered twice must
// receive both gradients; a row never gathered, none.
TEST(EmbeddingTrain, BackwardMatchesFiniteDifferences) {
  const int64_t tokens = 8, vocab = 7, dim = 3;
  auto table = random_vector<double>(size_t(vocab * dim), 3);
  const std::vector<int32_t> ids = {2, 0, 2, 6, 2, 0, 5, 6};  // 1, 3 and 4 never appear
  const auto dout = random_vector<double>(size_t(tokens * dim), 4);
  std::vector<double> out(dout.size()), dtable(table.size(), 0.0);
  EmbeddingTrain<double> p{.table = table.data(),
                           .ids = ids.data(),
                           .out = out.data(),
                           .dout = dout.data(),
                           .dtable = dtable.data(),
                           .tokens = tokens,
                           .vocab = vocab,
                           .dim = dim};
  embedding_backward_reference(p);
  for (size_t e = 0; e < table.size(); ++e) {
    const double saved = table[e];
    const double h = 1e-6 * std::max(1.0, std::fabs(saved));
    double loss[2];
    for (int side = 0; side < 2; ++side) {
      table[e] = side == 0 ? saved + h : saved - h;
      embedding_train_forward_reference(p);
      long double sum = 0.0L;
      for (size_t o = 0; o < out.size(); ++o) sum += (long double)dout[o] * out[o];
      loss[side] = double(sum);
    }
    table[e] = saved;
    ASSERT_NEAR((loss[0] - loss[1]) / (2 * h), dtable[e], 1e-9) << "element " << e;
  }
  for (int64_t i = 0; i < dim; ++i) EXPECT_EQ(dtable[size_t(1 * dim + i)], 0.0);
}

TEST(EmbeddingTrain, BackwardReferenceAccumulatesInTokenOrder) {
  const int64_t tokens = 6, vocab = 4, dim = 2;
  const std::vector<int32_t> ids = {3, 1, 3, 3, 0, 1};
  const auto dout = random_vector<float>(size_t(tokens * dim), 5);
  const auto dtable0 = random_vector<float>(size_t(vocab * dim), 6);
  std::vector<float> dtable = dtable0;
  embedding_backward_reference<float>({.ids = ids.data(),
                                       .dout = dout.data(),
                                       .dtable = dtable.data(),
                                       .tokens = tokens,
                                       .vocab = vocab,
                                       .dim = dim});
  // The direct formula: start from the existing gradient, add each token's row in order.
  std::vector<float> expected = dtable0;
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < dim; ++i)
      expected[size_t(ids[t] * dim + i)] += dout[size_t(t * dim + i)];
  }
  EXPECT_EQ(dtable, expected);
}

// Both versions perform the same fp32 adds in the same order per element, so they are equal.
TEST(EmbeddingTrain, FastEqualsReference) {
  struct Case {
    int64_t tokens, vocab, dim;
  };
  for (const Case c : {Case{1, 3, 1}, Case{37, 50, 7}, Case{200, 31, 300}, Case{61, 1000, 1027}}) {
    SCOPED_TRACE(testing::Message() << "tokens " << c.tokens << " dim " << c.dim);
    const auto table = random_vector<float>(size_t(c.vocab * c.dim), 7);
    const auto ids = random_ids(c.tokens, c.vocab, 8);
    const auto dout = random_vector<float>(size_t(c.tokens * c.dim), 9);
    const auto dtable0 = random_vector<float>(table.size(), 10);
    std::vector<float> out_ref(dout.size()), dtable_ref = dtable0;
    EmbeddingTrainParams p{.table = table.data(),
                           .ids = ids.data(),
                           .out = out_ref.data(),
                           .dout = dout.data(),
                           .dtable = dtable_ref.data(),
                           .tokens = c.tokens,
                           .vocab = c.vocab,
                           .dim = c.dim};
    embedding_train_forward_reference(p);
    embedding_backward_reference(p);
    for (int threads : {1, 2, 3}) {
      ThreadPool pool(threads);
      for (int run = 0; run < 2; ++run) {
        std::vector<float> out(dout.size()), dtable = dtable0;
        EmbeddingTrainParams f = p;
        f.out = out.data();
        f.dtable = dtable.data();
        embedding_train_forward(f, pool);
        embedding_backward(f, pool);
        ASSERT_EQ(out, out_ref) << threads << " threads";
        ASSERT_EQ(dtable, dtable_ref) << threads << " threads";
      }
    }
  }
}

TEST(EmbeddingTrain, BadIdsAndParametersThrow) {
  const int64_t vocab = 5, dim = 3;
  std::vector<float> table(size_t(vocab * dim), 1.0f), out(12), dout(12, 1.0f),
      dtable(table.size());
  std::vector<int32_t> ids = {0, 4, 2, 1};
  ThreadPool pool(2);
  const EmbeddingTrainParams good{.table = table.data(),
                                  .ids = ids.data(),
                                  .out = out.data(),
                                  .dout = dout.data(),
                                  .dtable = dtable.data(),
                                  .tokens = 4,
                                  .vocab = vocab,
                                  .dim = dim};
  EXPECT_NO_THROW(embedding_train_forward(good, pool));
  EXPECT_NO_THROW(embedding_backward(good, pool));
  for (const int32_t bad : {-1, 5, 1 << 30}) {
    ids[3] = bad;
    const std::string expected = "ids[3] = " + std::to_string(bad);
    for (int which = 0; which < 4; ++which) {
      try {
        if (which == 0) embedding_train_forward(good, pool);
        if (which == 1) embedding_backward(good, pool);
        if (which == 2) embedding_train_forward_reference(good);
        if (which == 3) embedding_backward_reference(good);
        FAIL() << "no error for id " << bad << " (call " << which << ")";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
      }
    }
  }
  ids[3] = 1;
  auto p = good;
  p.dim = 0;
  EXPECT_THROW(validate(p), Error);
  p = good;
  p.vocab = 0;
  EXPECT_THROW(validate(p), Error);
  p = good;
  p.tokens = -2;
  EXPECT_THROW(embedding_backward(p, pool), Error);
  p = good;
  p.ids = nullptr;
  EXPECT_THROW(embedding_train_forward(p, pool), Error);
  p = good;
  p.dtable = nullptr;
  EXPECT_NO_THROW(embedding_train_forward(p, pool));  // the forward does not write dtable
  EXPECT_THROW(embedding_backward(p, pool), Error);
  p = good;
  p.out = nullptr;
  EXPECT_THROW(embedding_train_forward_reference(p), Error);
  // No tokens: a no-op, nothing read.
  p = EmbeddingTrainParams{.tokens = 0, .vocab = vocab, .dim = dim};
  EXPECT_NO_THROW(embedding_train_forward(p, pool));
  EXPECT_NO_THROW(embedding_backward(p, pool));
}

}  // namespace
}  // namespace dsa

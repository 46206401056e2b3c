// The sampler: greedy and top-k=1 are the argmax, a seed repeats its draws, the draws follow the
// softmax, and the filters (repetition penalty, top-k, top-p, min-p) keep exactly the tokens
// llama.cpp's definitions keep, on hand-made logits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <vector>

#include "core/error.h"
#include "runtime/sampler.h"

namespace dsa {
namespace {

// No filters, temperature 1: the plain softmax.
SamplerParams plain(uint64_t seed = 1) {
  SamplerParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = seed;
  return p;
}

std::vector<double> softmax(const std::vector<float>& logits, double temperature = 1.0) {
  double max = logits[0];
  for (float l : logits) max = std::max(max, double(l));
  std::vector<double> p;
  double sum = 0;
  for (float l : logits) sum += p.emplace_back(std::exp((double(l) - max) / temperature));
  for (double& v : p) v /= sum;
  return p;
}

std::map<int32_t, double> as_map(const std::vector<TokenProbability>& d) {
  std::map<int32_t, double> m;
  for (const TokenProbability& t : d) m[t.id] = t.probability;
  return m;
}

std::vector<float> random_logits(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> l(n);
  for (float& v : l) v = normal(rng);
  return l;
}

TEST(Sampler, GreedyAndTopKOneAreTheArgmax) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const std::vector<float> logits = random_logits(1000, seed);
    const int32_t argmax = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    SamplerParams greedy = plain(seed);
    greedy.temperature = 0.0f;
    Sampler g(greedy);
    SamplerParams top1 = plain(seed);
    top1.top_k = 1;
    top1.temperature = 1.5f;
    Sampler t(top1);
    for (int i = 0; i < 5; ++i) {
      EXPECT_EQ(g.sample(logits), argmax);
      EXPECT_EQ(t.sample(logits), argmax);
    }
  }
  // Ties go to the smaller id.
  SamplerParams greedy = plain();
  greedy.temperature = 0.0f;
  EXPECT_EQ(Sampler(greedy).sample(std::vector<float>{1.0f, 3.0f, 3.0f}), 1);
}

TEST(Sampler, ASeedRepeatsItsDraws) {
  const std::vector<float> logits(50, 0.0f);  // uniform: every draw matters
  const auto draws = [&](uint64_t seed) {
    Sampler s(plain(seed));
    std::vector<int32_t> out;
    for (int i = 0; i < 200; ++i) out.push_back(s.sample(logits));
    return out;
  };
  EXPECT_EQ(draws(42), draws(42));
  EXPECT_NE(draws(42), draws(43));
}

// Frequencies of N draws against the distribution: each count is Binomial(N, p), so its standard
// deviation is sqrt(N p (1 - p)); 5 standard deviations bound each of the few tokens with a false
// failure chance below 1e-6 (and the seed is fixed, so the test is deterministic anyway).
void expect_frequencies(Sampler& sampler, const std::vector<float>& logits,
                        const std::vector<double>& expected) {
  constexpr int kDraws = 200000;
  std::vector<int> counts(logits.size());
  for (int i = 0; i < kDraws; ++i) ++counts[size_t(sampler.sample(logits))];
  for (size_t i = 0; i < logits.size(); ++i) {
    const double sigma = std::sqrt(kDraws * expected[i] * (1 - expected[i]));
    EXPECT_NEAR(counts[i], kDraws * expected[i], 5 * sigma + 1e-9) << "token " << i;
  }
}

TEST(Sampler, DrawsFollowTheSoftmax) {
  const std::vector<float> logits = {2.0f, 1.0f, 0.5f, 0.0f, -1.0f, -3.0f};
  Sampler at_one(plain(7));
  expect_frequencies(at_one, logits, softmax(logits));
  SamplerParams hot = plain(8);
  hot.temperature = 2.0f;
  Sampler at_two(hot);
  expect_frequencies(at_two, logits, softmax(logits, 2.0));
  // The distribution itself is the softmax to double rounding (values ~1e-1, sums of 6 terms).
  const auto d = as_map(at_two.distribution(logits));
  const std::vector<double> p = softmax(logits, 2.0);
  for (size_t i = 0; i < p.size(); ++i) EXPECT_NEAR(d.at(int32_t(i)), p[i], 1e-14);
}

TEST(Sampler, TopKKeepsTheKLargest) {
  SamplerParams params = plain();
  params.top_k = 3;
  const std::vector<float> logits = {0.0f, 5.0f, 1.0f, 4.0f, 3.0f, -2.0f};
  const auto d = as_map(Sampler(params).distribution(logits));
  ASSERT_EQ(d.size(), 3u);
  const std::vector<double> p = softmax({5.0f, 4.0f, 3.0f});
  EXPECT_NEAR(d.at(1), p[0], 1e-14);
  EXPECT_NEAR(d.at(3), p[1], 1e-14);
  EXPECT_NEAR(d.at(4), p[2], 1e-14);
}

TEST(Sampler, TopPKeepsTheShortestPrefixReachingP) {
  // Probabilities 0.5, 0.25, 0.125, 0.125 (logits are log2 multiples of ln 2).
  const float ln2 = std::log(2.0f);
  const std::vector<float> logits = {ln2 * 1, ln2 * 3, ln2 * 2, ln2 * 1};
  const auto kept = [&](float p) {
    SamplerParams params = plain();
    params.top_p = p;
    return as_map(Sampler(params).distribution(logits));
  };
  // 0.5 alone reaches 0.4; the first two (0.75) reach 0.6; 0.875 falls short of 0.9: all four.
  EXPECT_EQ(kept(0.4f).size(), 1u);
  EXPECT_EQ(kept(0.4f).count(1), 1u);
  EXPECT_EQ(kept(0.6f).size(), 2u);
  const auto two = kept(0.6f);
  // Renormalised over the kept tokens: ~2/3 and ~1/3, exactly the softmax of their float logits.
  const std::vector<double> p = softmax({logits[1], logits[2]});
  EXPECT_NEAR(two.at(1), p[0], 1e-14);
  EXPECT_NEAR(two.at(2), p[1], 1e-14);
  EXPECT_EQ(kept(0.9f).size(), 4u);
  EXPECT_EQ(kept(1.0f).size(), 4u);
}

TEST(Sampler, TopPOnALargeVocabularyMatchesAFullSort) {
  // The sampler sorts only a growing prefix; a full sort must keep the same set.
  for (const float p : {0.5f, 0.9f, 0.99f}) {
    const std::vector<float> logits = random_logits(5000, 3);
    std::vector<int32_t> ids(logits.size());
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(i);
    std::sort(ids.begin(), ids.end(),
              [&](int32_t a, int32_t b) { return logits[size_t(a)] > logits[size_t(b)]; });
    const std::vector<double> probs = softmax(logits);
    double sum = 0;
    size_t keep = 0;
    while (keep < ids.size() && sum < p) sum += probs[size_t(ids[keep++])];
    SamplerParams params = plain();
    params.top_p = p;
    const auto d = as_map(Sampler(params).distribution(logits));
    ASSERT_EQ(d.size(), keep) << p;
    for (size_t i = 0; i < keep; ++i) EXPECT_EQ(d.count(ids[i]), 1u);
  }
}

TEST(Sampler, MinPKeepsTokensAboveAFractionOfTheMax) {
  // Relative probabilities 1, 1/2, 1/4, 1/8 against the largest.
  const float ln2 = std::log(2.0f);
  const std::vector<float> logits = {ln2 * 0, ln2 * 3, ln2 * 1, ln2 * 2};
  const auto kept = [&](float min_p) {
    SamplerParams params = plain();
    params.min_p = min_p;
    return as_map(Sampler(params).distribution(logits));
  };
  EXPECT_EQ(kept(0.6f).size(), 1u);
  EXPECT_EQ(kept(0.3f).size(), 2u);  // 1 and 1/2
  EXPECT_EQ(kept(0.3f).count(3), 1u);
  EXPECT_EQ(kept(0.2f).size(), 3u);  // and 1/4
  EXPECT_EQ(kept(0.2f).count(0), 0u);
  EXPECT_EQ(kept(0.1f).size(), 4u);
}

TEST(Sampler, FiltersRunBeforeTheTemperature) {
  // min-p sees temperature-1 probabilities: 1/4 of the max survives min_p 0.2 even though at
  // temperature 0.25 its probability would be (1/4)^4 of the max.
  const float ln2 = std::log(2.0f);
  const std::vector<float> logits = {ln2 * 2, ln2 * 0, ln2 * 1};
  SamplerParams params = plain();
  params.min_p = 0.2f;
  params.temperature = 0.25f;
  const auto d = as_map(Sampler(params).distribution(logits));
  ASSERT_EQ(d.size(), 3u);
  const std::vector<double> p = softmax(logits, 0.25);
  for (int32_t i = 0; i < 3; ++i) EXPECT_NEAR(d.at(i), p[size_t(i)], 1e-14);
}

TEST(Sampler, RepetitionPenaltyAsLlamaCppDefinesIt) {
  // Positive logits are divided by the penalty, negative ones multiplied, once per distinct
  // token of the window however often it occurs.
  SamplerParams params = plain();
  params.repeat_penalty = 2.0f;
  params.repeat_last_n = 3;
  Sampler s(params);
  for (int32_t t : {3, 0, 1, 1}) s.accept(t);  // window of 3: {0, 1, 1}; 3 has left it
  const std::vector<float> logits = {2.0f, -1.0f, 0.5f, 3.0f};
  const auto d = as_map(s.distribution(logits));
  const std::vector<double> p = softmax({1.0f, -2.0f, 0.5f, 3.0f});
  for (int32_t i = 0; i < 4; ++i) EXPECT_NEAR(d.at(i), p[size_t(i)], 1e-14) << i;

  // Greedy picks after the penalty; reset_history lifts it.
  SamplerParams greedy = params;
  greedy.temperature = 0.0f;
  Sampler g(greedy);
  g.accept(0);
  const std::vector<float> two = {3.0f, 2.0f};
  EXPECT_EQ(g.sample(two), 1);  // 3 / 2 < 2
  g.reset_history();
  EXPECT_EQ(g.sample(two), 0);

  // -1 looks back on every accepted token, 0 on none.
  SamplerParams all = greedy;
  all.repeat_last_n = -1;
  Sampler a(all);
  a.accept(0);
  for (int i = 0; i < 100; ++i) a.accept(5);
  EXPECT_EQ(a.sample(two), 1);
  SamplerParams none = greedy;
  none.repeat_last_n = 0;
  Sampler n(none);
  n.accept(0);
  EXPECT_EQ(n.sample(two), 0);
}

TEST(Sampler, BadParametersNameTheField) {
  const auto message = [](SamplerParams p) {
    try {
      Sampler s(p);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  SamplerParams p = plain();
  p.temperature = -1.0f;
  EXPECT_NE(message(p).find("temperature"), std::string::npos);
  p = plain();
  p.top_k = -2;
  EXPECT_NE(message(p).find("top_k"), std::string::npos);
  p = plain();
  p.top_p = 0.0f;
  EXPECT_NE(message(p).find("top_p"), std::string::npos);
  p = plain();
  p.min_p = 1.5f;
  EXPECT_NE(message(p).find("min_p"), std::string::npos);
  p = plain();
  p.repeat_penalty = 0.0f;
  EXPECT_NE(message(p).find("repeat_penalty"), std::string::npos);
  p = plain();
  p.repeat_last_n = -2;
  EXPECT_NE(message(p).find("repeat_last_n"), std::string::npos);
}

}  // namespace
}  // namespace dsa

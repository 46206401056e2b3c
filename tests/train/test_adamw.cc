// AdamW's pieces (train/adamw.h, train/adamw_update.h): the SIMD update gives the scalar
// definition's bits; the first step has PyTorch's closed form; the gradient norm and clipping do
// not depend on the thread count.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/thread_pool.h"
#include "support/model_fixture.h"
#include "train/adamw.h"
#include "train/adamw_update.h"

namespace dsa::train {
namespace {

std::vector<float> random_values(size_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  // memcmp must not see the null data() of an empty vector.
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

TEST(AdamWUpdate, SimdGivesTheReferenceBits) {
  AdamWCoefficients c;
  c.lr = 3e-4;
  c.beta1 = 0.9;
  c.beta2 = 0.95;
  c.eps = 1e-8;
  for (int step : {1, 7, 1000}) {
    c.bias_correction1 = 1.0 - std::pow(c.beta1, step);
    c.bias_correction2 = 1.0 - std::pow(c.beta2, step);
    for (double decay : {0.0, 3e-5}) {
      c.decay = decay;
      for (size_t n :
           {size_t(0), size_t(1), size_t(7), size_t(8), size_t(9), size_t(1000), size_t(65539)}) {
        const std::vector<float> p0 = random_values(n, 1, 0.02f);
        // Gradients over many magnitudes, some exactly zero; moments as after some steps.
        std::vector<float> g = random_values(n, 2, 1.0f);
        for (size_t i = 0; i < n; ++i)
          g[i] = i % 11 == 0 ? 0.0f : g[i] * std::ldexp(1.0f, int(i % 40) - 30);
        std::vector<float> m0 = random_values(n, 3, 1e-3f), v0 = random_values(n, 4, 1e-3f);
        for (float& x : v0) x = x * x;
        std::vector<float> p_ref = p0, m_ref = m0, v_ref = v0;
        adamw_update_reference(c, p_ref.data(), g.data(), m_ref.data(), v_ref.data(), int64_t(n));
        std::vector<float> p = p0, m = m0, v = v0;
        adamw_update(c, p.data(), g.data(), m.data(), v.data(), int64_t(n));
        EXPECT_TRUE(same_bits(p, p_ref)) << "n " << n << " step " << step << " decay " << decay;
        EXPECT_TRUE(same_bits(m, m_ref)) << "n " << n;
        EXPECT_TRUE(same_bits(v, v_ref)) << "n " << n;
        if (n > 0) EXPECT_FALSE(same_bits(p, p0)) << "the update changed nothing, n " << n;
      }
    }
  }
}

// After one step from zero moments, m̂ = g and v̂ = g², so each parameter moves by
// lr·g/(|g| + eps) after the decoupled decay p·(1 - lr·wd): PyTorch's AdamW.
TEST(AdamW, FirstStepHasTheClosedForm) {
  const ModelConfig config = test::preset_config("tiny", /*fp8=*/false);
  auto layout = std::make_shared<const ParameterLayout>(config);
  ParameterBuffer params(layout), grads(layout);
  const std::vector<float> p0 = random_values(params.values().size(), 5, 0.02f);
  const std::vector<float> g = random_values(params.values().size(), 6, 0.1f);
  std::copy(p0.begin(), p0.end(), params.values().begin());
  std::copy(g.begin(), g.end(), grads.values().begin());
  AdamWConfig settings;
  AdamW optimizer(layout, settings);
  ThreadPool pool(2);
  const double lr = 1e-3;
  optimizer.step(params, grads, lr, pool);
  int checked = 0;
  for (size_t index : optimizer.updated_tensors()) {
    const TrainTensor& t = layout->tensors()[index];
    for (int64_t i = 0; i < t.numel(); i += 97) {
      const size_t at = size_t(t.offset + i);
      const double decayed =
          double(p0[at]) * (1.0 - (t.weight_decay ? lr * settings.weight_decay : 0.0));
      const double gi = double(g[at]);
      const double expected = decayed - lr * gi / (std::fabs(gi) + settings.eps);
      ASSERT_NEAR(params.values()[at], expected, 1e-6 * std::fabs(expected) + 1e-9) << t.spec.name;
      ++checked;
    }
  }
  EXPECT_GT(checked, 1000);
}

TEST(GradientNorm, ExactEnoughAndTheSameForAnyThreadCount) {
  const ModelConfig config = test::preset_config("tiny", /*fp8=*/false);
  auto layout = std::make_shared<const ParameterLayout>(config);
  ParameterBuffer grads(layout);
  const std::vector<float> g = random_values(grads.values().size(), 8, 0.3f);
  std::copy(g.begin(), g.end(), grads.values().begin());
  std::vector<size_t> all;
  for (size_t i = 0; i < layout->tensors().size(); ++i) all.push_back(i);
  long double exact = 0.0L;
  for (float x : g) exact += (long double)x * (long double)x;
  ThreadPool one(1), three(3);
  const double norm1 = gradient_norm(grads, all, one), norm3 = gradient_norm(grads, all, three);
  EXPECT_EQ(norm1, norm3);
  EXPECT_NEAR(norm1, std::sqrt(double(exact)), 1e-12 * norm1);

  // Clipping to a tenth of the norm scales every gradient by the same factor.
  clip_gradients(grads, all, norm1, norm1 / 10, three);
  const double clipped = gradient_norm(grads, all, one);
  EXPECT_NEAR(clipped, norm1 / 10, 1e-6 * norm1);
  zero_gradients(grads, three);
  for (float x : grads.values()) ASSERT_EQ(x, 0.0f);
}

}  // namespace
}  // namespace dsa::train

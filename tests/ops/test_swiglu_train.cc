#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "ops/moe/swiglu_train.h"
#include "simd_targets.h"

namespace dsa {
namespace {

constexpr double kU = 0x1p-24;  // fp32 unit roundoff

template <typename Real>
std::vector<Real> random_vector(size_t n, uint32_t seed, double stddev = 1.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, stddev);
  std::vector<Real> out(n);
  for (auto& v : out) v = Real(normal(rng));
  return out;
}

// Random gates (spread 4) plus the cases that break naive formulas: exp(−g) overflowing
// (g < −88), σ rounding to 1 or to a subnormal, and silu'(g) = 0 near g = −1.2785.
std::vector<float> gates(size_t n, uint32_t seed) {
  std::vector<float> g = random_vector<float>(n, seed, 4.0);
  const float special[] = {0.0f,    1e-30f, -1e-30f, 1.2785f, -1.2785f, 17.0f,  -17.0f,  30.0f,
                           -30.0f,  88.0f,  -88.0f,  90.0f,   -90.0f,   100.0f, -100.0f, 104.5f,
                           -104.5f, 200.0f, -200.0f, 1e4f,    -1e4f,    1e30f,  -1e30f};
  for (size_t i = 0; i < std::size(special) && i < n; ++i) g[(i * 7) % n] = special[i];
  return g;
}

struct Exact {
  double h, dgate, dup;
  double abs_dgate;  // |dh u| σ(g) (1 + |g| σ(−g)): dgate evaluated with absolute values
};

// The formulas in long double (its exp does not overflow below g = −11356).
Exact exact(double g, double u, double dh) {
  const long double sig = 1.0L / (1.0L + std::exp(-(long double)g));
  const long double sig_neg = 1.0L / (1.0L + std::exp((long double)g));
  return {double(g * sig * u), double(dh * u * sig * (1.0L + g * sig_neg)), double(dh * g * sig),
          double(std::fabs(dh * u) * sig * (1.0L + std::fabs(g) * sig_neg))};
}

// Error bounds for an fp32 evaluation in either form (std::exp or Highway's Exp, each within
// 1 ulp): e = exp(−|g|) (1 rounding), 1 + e, the division and e · σ add one each, so σ(±g) are
// within 4 u relative; silu and h add one rounding each (<= 6 u), dgate's four more steps keep
// it within 10 u of A = |dh u| σ (1 + |g| σ(−g)). Where e is subnormal (|g| > 87) it is only
// within 2^-149 absolute, which 2^-126 times (1 + |g|) |u dh| covers with room.
struct Bounds {
  double h, dgate, dup;
};

Bounds fp32_bounds(double g, double u, double dh, const Exact& x, double units) {
  const double floor = 0x1p-126 * (1 + std::fabs(g));
  return {units * 6 * kU * std::fabs(x.h) + floor * std::fabs(u),
          units * 10 * kU * x.abs_dgate + floor * std::fabs(u * dh),
          units * 6 * kU * std::fabs(x.dup) + floor * std::fabs(dh)};
}

TEST(SwigluTrain, ReferenceMatchesTheFormula) {
  const size_t n = 101;
  const std::vector<float> gf = gates(n, 1);
  const std::vector<float> uf = random_vector<float>(n, 2), dhf = random_vector<float>(n, 3);
  const std::vector<double> g(gf.begin(), gf.end()), u(uf.begin(), uf.end()),
      dh(dhf.begin(), dhf.end());
  std::vector<double> h(n), dgate(n), dup(n);
  std::vector<float> hf(n), dgatef(n), dupf(n);
  const SwigluTrain<double> p{.gate = g.data(),
                              .up = u.data(),
                              .h = h.data(),
                              .dh = dh.data(),
                              .dgate = dgate.data(),
                              .dup = dup.data(),
                              .n = int64_t(n)};
  swiglu_train_forward_reference(p);
  swiglu_backward_reference(p);
  const SwigluTrainParams pf{.gate = gf.data(),
                             .up = uf.data(),
                             .h = hf.data(),
                             .dh = dhf.data(),
                             .dgate = dgatef.data(),
                             .dup = dupf.data(),
                             .n = int64_t(n)};
  swiglu_train_forward_reference(pf);
  swiglu_backward_reference(pf);
  for (size_t i = 0; i < n; ++i) {
    SCOPED_TRACE(testing::Message() << "g " << g[i]);
    const Exact x = exact(g[i], u[i], dh[i]);
    // double: the same steps with 2^-53 roundings (exp within 1 ulp); no subnormals here.
    EXPECT_NEAR(h[i], x.h, 6 * 0x1p-53 * std::fabs(x.h));
    EXPECT_NEAR(dgate[i], x.dgate, 10 * 0x1p-53 * x.abs_dgate);
    EXPECT_NEAR(dup[i], x.dup, 6 * 0x1p-53 * std::fabs(x.dup));
    const Bounds b = fp32_bounds(g[i], u[i], dh[i], x, 1);
    EXPECT_NEAR(hf[i], x.h, b.h);
    EXPECT_NEAR(dgatef[i], x.dgate, b.dgate);
    EXPECT_NEAR(dupf[i], x.dup, b.dup);
  }
}

TEST(SwigluTrain, LargeGatesGiveTheLimits) {
  ThreadPool pool(1);
  const std::vector<float> g = {1000.0f, -1000.0f, 3e38f, -3e38f};
  const std::vector<float> u = {0.75f, 0.75f, 0.5f, 0.5f}, dh = {-2.0f, -2.0f, 1.0f, 1.0f};
  for (bool fast : {false, true}) {
    std::vector<float> h(4), dgate(4), dup(4);
    const SwigluTrainParams p{.gate = g.data(),
                              .up = u.data(),
                              .h = h.data(),
                              .dh = dh.data(),
                              .dgate = dgate.data(),
                              .dup = dup.data(),
                              .n = 2};
    fast ? swiglu_train_forward(p, pool) : swiglu_train_forward_reference(p);
    fast ? swiglu_backward(p, pool) : swiglu_backward_reference(p);
    // σ(1000) = 1 and σ(−1000) = 0 exactly in fp32, so silu is g and 0, silu' is 1 and 0.
    EXPECT_EQ(h[0], 750.0f);
    EXPECT_EQ(h[1], 0.0f);
    EXPECT_EQ(dgate[0], -1.5f);
    EXPECT_EQ(dgate[1], 0.0f);
    EXPECT_EQ(dup[0], -2000.0f);
    EXPECT_EQ(dup[1], 0.0f);
    // Near the fp32 maximum (forward only: dh · u · g would not overflow either, but one case
    // suffices): exp(−|g|) is 0, not NaN or an overflow.
    auto q = p;
    q.gate = g.data() + 2;
    q.up = u.data() + 2;
    q.n = 2;
    fast ? swiglu_train_forward(q, pool) : swiglu_train_forward_reference(q);
    EXPECT_EQ(h[0], 1.5e38f);
    EXPECT_EQ(h[1], 0.0f);
  }
}

// L = Σ dh · h; central differences with step 1e-6 |g| (at least 1e-6): truncation
// h² |f'''| / 6 with |silu'''| <= 1 and |u| <= 4 stays below 1e-11, and only the perturbed
// element's term changes, so rounding adds ~1e-16 / 2e-6 < 1e-10. A wrong term is off by O(0.1).
TEST(SwigluTrain, BackwardMatchesFiniteDifferences) {
  const size_t n = 41;
  std::vector<double> g = random_vector<double>(n, 4, 3.0), u = random_vector<double>(n, 5);
  const std::vector<double> dh = random_vector<double>(n, 6);
  std::vector<double> h(n), dgate(n), dup(n);
  const SwigluTrain<double> p{.gate = g.data(),
                              .up = u.data(),
                              .h = h.data(),
                              .dh = dh.data(),
                              .dgate = dgate.data(),
                              .dup = dup.data(),
                              .n = int64_t(n)};
  swiglu_backward_reference(p);
  const auto loss = [&] {
    swiglu_train_forward_reference(p);
    long double sum = 0.0L;
    for (size_t i = 0; i < n; ++i) sum += (long double)dh[i] * h[i];
    return double(sum);
  };
  for (auto [param, grad, name] : {std::tuple{&g, &dgate, "dgate"}, std::tuple{&u, &dup, "dup"}}) {
    for (size_t i = 0; i < n; ++i) {
      const double saved = (*param)[i];
      const double step = 1e-6 * std::max(1.0, std::fabs(saved));
      (*param)[i] = saved + step;
      const double plus = loss();
      (*param)[i] = saved - step;
      const double minus = loss();
      (*param)[i] = saved;
      ASSERT_NEAR((plus - minus) / (2 * step), (*grad)[i], 1e-8) << name << " element " << i;
    }
  }
}

// Fast vs reference: each is within the fp32 bounds of the exact value, so within twice them
// of each other.
TEST(SwigluTrain, FastMatchesReference) {
  for (const size_t n :
       {size_t(1), size_t(7), size_t(16), size_t(37), size_t(1000), size_t(50001)}) {
    SCOPED_TRACE(testing::Message() << "n " << n);
    const std::vector<float> g = gates(n, 7);
    const std::vector<float> u = random_vector<float>(n, 8), dh = random_vector<float>(n, 9);
    std::vector<float> h_ref(n), dgate_ref(n), dup_ref(n);
    SwigluTrainParams p{.gate = g.data(),
                        .up = u.data(),
                        .h = h_ref.data(),
                        .dh = dh.data(),
                        .dgate = dgate_ref.data(),
                        .dup = dup_ref.data(),
                        .n = int64_t(n)};
    swiglu_train_forward_reference(p);
    swiglu_backward_reference(p);
    std::vector<Bounds> bounds(n);
    for (size_t i = 0; i < n; ++i) {
      bounds[i] = fp32_bounds(g[i], u[i], dh[i], exact(g[i], u[i], dh[i]), 2);
    }
    std::vector<float> first_h, first_dgate, first_dup;
    for (int threads : {1, 2, 3}) {
      ThreadPool pool(threads);
      test::for_each_simd_target([&] {
        std::vector<float> h(n), dgate(n), dup(n);
        SwigluTrainParams f = p;
        f.h = h.data();
        f.dgate = dgate.data();
        f.dup = dup.data();
        swiglu_train_forward(f, pool);
        swiglu_backward(f, pool);
        for (size_t i = 0; i < n; ++i) {
          ASSERT_NEAR(h[i], h_ref[i], bounds[i].h) << "h " << i << " g " << g[i];
          ASSERT_NEAR(dgate[i], dgate_ref[i], bounds[i].dgate) << "dgate " << i << " g " << g[i];
          ASSERT_NEAR(dup[i], dup_ref[i], bounds[i].dup) << "dup " << i << " g " << g[i];
        }
      });
      // Determinism with the best target: every element takes the same vector path, whatever
      // the split between threads.
      for (int run = 0; run < 2; ++run) {
        std::vector<float> h(n), dgate(n), dup(n);
        SwigluTrainParams f = p;
        f.h = h.data();
        f.dgate = dgate.data();
        f.dup = dup.data();
        swiglu_train_forward(f, pool);
        swiglu_backward(f, pool);
        if (first_h.empty()) {
          first_h = h, first_dgate = dgate, first_dup = dup;
          continue;
        }
        ASSERT_EQ(h, first_h);
        ASSERT_EQ(dgate, first_dgate);
        ASSERT_EQ(dup, first_dup);
      }
    }
  }
}

TEST(SwigluTrain, OutputsMayOverwriteInputs) {
  const size_t n = 37;
  const std::vector<float> g = gates(n, 10);
  const std::vector<float> u = random_vector<float>(n, 11), dh = random_vector<float>(n, 12);
  ThreadPool pool(2);
  std::vector<float> h(n), dgate(n), dup(n);
  const SwigluTrainParams p{.gate = g.data(),
                            .up = u.data(),
                            .h = h.data(),
                            .dh = dh.data(),
                            .dgate = dgate.data(),
                            .dup = dup.data(),
                            .n = int64_t(n)};
  for (bool fast : {false, true}) {
    fast ? swiglu_train_forward(p, pool) : swiglu_train_forward_reference(p);
    fast ? swiglu_backward(p, pool) : swiglu_backward_reference(p);
    std::vector<float> in_place_h = u;  // h written over up
    auto q = p;
    q.up = in_place_h.data();
    q.h = in_place_h.data();
    fast ? swiglu_train_forward(q, pool) : swiglu_train_forward_reference(q);
    EXPECT_EQ(in_place_h, h);
    std::vector<float> gate_buf = g, up_buf = u;  // dgate over gate, dup over up
    q = p;
    q.gate = gate_buf.data();
    q.up = up_buf.data();
    q.dgate = gate_buf.data();
    q.dup = up_buf.data();
    fast ? swiglu_backward(q, pool) : swiglu_backward_reference(q);
    EXPECT_EQ(gate_buf, dgate);
    EXPECT_EQ(up_buf, dup);
  }
}

TEST(SwigluTrain, BadParametersThrow) {
  std::vector<float> a(8, 1.0f), b(8), c(8);
  ThreadPool pool(2);
  const SwigluTrainParams good{.gate = a.data(),
                               .up = a.data(),
                               .h = b.data(),
                               .dh = a.data(),
                               .dgate = b.data(),
                               .dup = c.data(),
                               .n = 8};
  EXPECT_NO_THROW(swiglu_train_forward(good, pool));
  EXPECT_NO_THROW(swiglu_backward(good, pool));
  auto p = good;
  p.n = -1;
  EXPECT_THROW(validate(p), Error);
  EXPECT_THROW(swiglu_train_forward(p, pool), Error);
  p = good;
  p.h = nullptr;
  EXPECT_THROW(swiglu_train_forward_reference(p), Error);
  EXPECT_NO_THROW(swiglu_backward(p, pool));  // the backward does not write h
  p = good;
  p.dh = nullptr;
  EXPECT_THROW(swiglu_backward(p, pool), Error);
  p = good;
  p.dup = p.dgate;
  EXPECT_THROW(swiglu_backward_reference(p), Error);
  p = good;
  p.up = nullptr;
  EXPECT_THROW(swiglu_backward(p, pool), Error);
  p = SwigluTrainParams{.n = 0};
  EXPECT_NO_THROW(swiglu_train_forward(p, pool));
  EXPECT_NO_THROW(swiglu_backward(p, pool));
}

}  // namespace
}  // namespace dsa

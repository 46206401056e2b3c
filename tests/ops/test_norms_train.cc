#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "core/error.h"
#include "ops/norms/norms_train.h"
#include "simd_targets.h"

namespace dsa {
namespace {

constexpr double kU = 0x1p-24;  // fp32 unit roundoff

template <typename Real>
std::vector<Real> random_vector(size_t n, uint32_t seed, double mean = 0.0, double stddev = 1.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(mean, stddev);
  std::vector<Real> out(n);
  for (auto& v : out) v = Real(normal(rng));
  return out;
}

// Central differences of loss() with respect to every element of `param` (perturbed in place
// and restored). The step is 1e-6 scaled to the value; the quotient uses the step actually taken.
std::vector<double> numeric_gradient(std::vector<double>& param,
                                     const std::function<double()>& loss) {
  std::vector<double> grad(param.size());
  for (size_t i = 0; i < param.size(); ++i) {
    const double saved = param[i];
    const double h = 1e-6 * std::max(1.0, std::fabs(saved));
    const double plus = saved + h, minus = saved - h;
    param[i] = plus;
    const double loss_plus = loss();
    param[i] = minus;
    const double loss_minus = loss();
    param[i] = saved;
    grad[i] = (loss_plus - loss_minus) / (plus - minus);
  }
  return grad;
}

// L = Σ dy · y, summed in long double so that the sum adds no rounding of its own.
double dot_loss(const std::vector<double>& dy, const std::vector<double>& y) {
  long double sum = 0.0L;
  for (size_t i = 0; i < y.size(); ++i) sum += (long double)dy[i] * y[i];
  return double(sum);
}

// The problems here have D <= 17 and values of order 1, so L = Σ dy·y has S = Σ|dy·y| <= ~50
// and is computed with a relative error <= D·2^-53 (the row sums in double): at most 1e-13
// absolute, 1e-7 after division by the step 1e-6. Truncation (h²/6 · f''', f''' of order
// rstd³ ~ 1) is 1e-12. A wrong term changes the gradient by 1e-2 .. 1.
void expect_gradient_near(const std::vector<double>& numeric, const std::vector<double>& analytic,
                          const char* what) {
  ASSERT_EQ(numeric.size(), analytic.size());
  for (size_t i = 0; i < numeric.size(); ++i) {
    EXPECT_NEAR(numeric[i], analytic[i], 1e-6 * (1.0 + std::fabs(analytic[i])))
        << what << " element " << i;
  }
}

template <typename T>
void expect_bitwise_equal(const std::vector<T>& a, const std::vector<T>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]) << what << " element " << i;
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

TEST(RmsNormTrain, ForwardReferenceMatchesTheFormula) {
  const int64_t tokens = 3, dim = 37;
  const auto x = random_vector<double>(size_t(tokens * dim), 1, 0.3, 1.5);
  const auto w = random_vector<double>(size_t(dim), 2, 1.0, 0.3);
  std::vector<double> y(x.size()), rstd(tokens);
  rms_norm_train_forward_reference<double>({.x = x.data(),
                                            .weight = w.data(),
                                            .y = y.data(),
                                            .rstd = rstd.data(),
                                            .tokens = tokens,
                                            .dim = dim});
  // The float instantiation on the inputs rounded to fp32 (its expected values use those).
  const std::vector<float> xf(x.begin(), x.end()), wf(w.begin(), w.end());
  std::vector<float> yf(x.size()), rstdf(tokens);
  rms_norm_train_forward_reference<float>({.x = xf.data(),
                                           .weight = wf.data(),
                                           .y = yf.data(),
                                           .rstd = rstdf.data(),
                                           .tokens = tokens,
                                           .dim = dim});
  for (int64_t t = 0; t < tokens; ++t) {
    long double ms = 0.0L, msf = 0.0L;
    for (int64_t i = 0; i < dim; ++i) {
      ms += (long double)x[t * dim + i] * x[t * dim + i] / dim;
      msf += (long double)xf[t * dim + i] * xf[t * dim + i] / dim;
    }
    const long double r = 1.0L / std::sqrt(ms + 1e-6L), rf = 1.0L / std::sqrt(msf + 1e-6L);
    // double: sums of D terms (<= D·2^-53 relative) and three more roundings.
    EXPECT_NEAR(rstd[t], double(r), double(r) * (dim + 4) * 0x1p-53);
    // float: the sum is in double, so rstd is rounded about once (2 u for safety).
    EXPECT_NEAR(rstdf[t], double(rf), double(rf) * 2 * kU);
    for (int64_t i = 0; i < dim; ++i) {
      const size_t k = size_t(t * dim + i);
      const double expected = double(w[i] * x[k] * r);
      EXPECT_NEAR(y[k], expected, std::fabs(expected) * (dim + 6) * 0x1p-53) << k;
      const double expected_f = double((long double)wf[i] * xf[k] * rf);
      EXPECT_NEAR(yf[k], expected_f, std::fabs(expected_f) * 4 * kU) << k;  // rstd + 2 products
    }
  }
}

TEST(RmsNormTrain, BackwardMatchesFiniteDifferences) {
  const int64_t tokens = 3, dim = 17;
  auto x = random_vector<double>(size_t(tokens * dim), 3, 0.2, 1.0);
  auto w = random_vector<double>(size_t(dim), 4, 1.0, 0.4);
  const auto dy = random_vector<double>(x.size(), 5);
  std::vector<double> y(x.size()), rstd(tokens), dx(x.size()), dw(dim, 0.0);
  RmsNormTrain<double> p{.x = x.data(),
                         .weight = w.data(),
                         .y = y.data(),
                         .rstd = rstd.data(),
                         .dy = dy.data(),
                         .dx = dx.data(),
                         .dweight = dw.data(),
                         .tokens = tokens,
                         .dim = dim};
  rms_norm_train_forward_reference(p);
  rms_norm_backward_reference(p);
  const auto loss = [&] {
    rms_norm_train_forward_reference(p);
    return dot_loss(dy, y);
  };
  expect_gradient_near(numeric_gradient(x, loss), dx, "dx");
  expect_gradient_near(numeric_gradient(w, loss), dw, "dweight");
}

TEST(RmsNormTrain, BackwardReferenceAccumulatesDweightAndAllowsDxInPlace) {
  const int64_t tokens = 4, dim = 9;
  const auto x = random_vector<float>(size_t(tokens * dim), 6);
  const auto w = random_vector<float>(size_t(dim), 7, 1.0, 0.3);
  const auto dy = random_vector<float>(x.size(), 8);
  const auto dw0 = random_vector<float>(size_t(dim), 9);
  std::vector<float> y(x.size()), rstd(tokens), dx(x.size()), fresh(dim, 0.0f), dw = dw0;
  RmsNormTrainParams p{.x = x.data(),
                       .weight = w.data(),
                       .y = y.data(),
                       .rstd = rstd.data(),
                       .dy = dy.data(),
                       .dx = dx.data(),
                       .dweight = fresh.data(),
                       .tokens = tokens,
                       .dim = dim};
  rms_norm_train_forward_reference(p);
  rms_norm_backward_reference(p);
  p.dweight = dw.data();
  std::vector<float> in_place = dy;
  p.dy = in_place.data();
  p.dx = in_place.data();
  rms_norm_backward_reference(p);
  // The reference adds its (double-summed, then rounded) total to dweight in one fp32 add.
  for (int64_t i = 0; i < dim; ++i) EXPECT_EQ(dw[i], dw0[i] + fresh[i]) << i;
  expect_bitwise_equal(in_place, dx, "dx computed in place");
}

// Fast vs reference in fp32, same inputs. Bounds (u = 2^-24, first order):
//   rstd: the fast sum of D squares has relative error <= (D + 1) u, then /D, +eps, sqrt (halves
//         it, adds u), 1/ : <= (D/2 + 4) u; the reference's (double sum) <= 2 u.
//   y:    both sides round two products more: |Δy| <= (D/2 + 10) u |y|.
//   dx:   mean(g ⊙ x̂) is a sum of D terms with 3 roundings each: error <= (D + 4) u mean|g x̂|;
//         the elementwise steps add <= 5 u per side of A = rstd (|g| + |x̂| mean|g x̂|), the
//         magnitude of dx with absolute values: |Δdx| <= (D + 14) u A.
//   dw:   T products summed in fp32 (3 roundings each) and one add: (T + 4) u (Σ_t |dy x̂| + |dw0|).
struct RmsCase {
  int64_t tokens, dim;
};

TEST(RmsNormTrain, FastMatchesReference) {
  for (const RmsCase c : {RmsCase{1, 1}, RmsCase{5, 7}, RmsCase{3, 16}, RmsCase{37, 17},
                          RmsCase{6, 130}, RmsCase{33, 300}, RmsCase{4, 1027}}) {
    const int64_t tokens = c.tokens, dim = c.dim;
    SCOPED_TRACE(testing::Message() << "tokens " << tokens << " dim " << dim);
    const size_t n = size_t(tokens * dim);
    const auto x = random_vector<float>(n, uint32_t(dim), 0.3, 1.5);
    const auto w = random_vector<float>(size_t(dim), uint32_t(dim) + 1, 1.0, 0.3);
    const auto dy = random_vector<float>(n, uint32_t(dim) + 2);
    const auto dw0 = random_vector<float>(size_t(dim), uint32_t(dim) + 3);
    std::vector<float> y_ref(n), rstd_ref(tokens), dx_ref(n), dw_ref = dw0;
    RmsNormTrainParams p{.x = x.data(),
                         .weight = w.data(),
                         .y = y_ref.data(),
                         .rstd = rstd_ref.data(),
                         .dy = dy.data(),
                         .dx = dx_ref.data(),
                         .dweight = dw_ref.data(),
                         .tokens = tokens,
                         .dim = dim};
    rms_norm_train_forward_reference(p);
    rms_norm_backward_reference(p);
    // Magnitudes for the bounds, in double from the reference's statistics.
    std::vector<double> abs_dx(n), abs_dw(dim);
    for (int64_t t = 0; t < tokens; ++t) {
      double mean_abs = 0.0;
      for (int64_t i = 0; i < dim; ++i) {
        const size_t k = size_t(t * dim + i);
        mean_abs += std::fabs(double(w[i]) * dy[k] * x[k] * rstd_ref[t]) / dim;
        abs_dw[i] += std::fabs(double(dy[k]) * x[k] * rstd_ref[t]);
      }
      for (int64_t i = 0; i < dim; ++i) {
        const size_t k = size_t(t * dim + i);
        abs_dx[k] = rstd_ref[t] * (std::fabs(double(w[i]) * dy[k]) +
                                   std::fabs(double(x[k]) * rstd_ref[t]) * mean_abs);
      }
    }
    for (int threads : {1, 2, 3}) {
      ThreadPool pool(threads);
      test::for_each_simd_target([&] {
        std::vector<float> y(n), rstd(tokens), dx(n), dw = dw0;
        RmsNormTrainParams f = p;
        f.y = y.data();
        f.rstd = rstd.data();
        rms_norm_train_forward(f, pool);
        for (int64_t t = 0; t < tokens; ++t) {
          ASSERT_NEAR(rstd[t], rstd_ref[t], (dim / 2.0 + 6) * kU * rstd_ref[t]) << t;
        }
        for (size_t k = 0; k < n; ++k) {
          ASSERT_NEAR(y[k], y_ref[k], (dim / 2.0 + 10) * kU * std::fabs(y_ref[k])) << k;
        }
        // Backward from the reference's rstd, so that only the backward differs.
        f.rstd = rstd_ref.data();
        f.dx = dx.data();
        f.dweight = dw.data();
        rms_norm_backward(f, pool);
        for (size_t k = 0; k < n; ++k) {
          ASSERT_NEAR(dx[k], dx_ref[k], (dim + 14) * kU * abs_dx[k]) << k;
        }
        for (int64_t i = 0; i < dim; ++i) {
          ASSERT_NEAR(dw[i], dw_ref[i], (tokens + 4) * kU * (abs_dw[i] + std::fabs(dw0[i]))) << i;
        }
      });
    }
  }
}

TEST(RmsNormTrain, FastIsDeterministicAndAllowsDxInPlace) {
  for (const RmsCase c : {RmsCase{37, 1027}, RmsCase{301, 130}}) {
    const size_t n = size_t(c.tokens * c.dim);
    const auto x = random_vector<float>(n, 10);
    const auto w = random_vector<float>(size_t(c.dim), 11, 1.0, 0.3);
    const auto dy = random_vector<float>(n, 12);
    const auto dw0 = random_vector<float>(size_t(c.dim), 13);
    std::vector<float> first_y, first_dx, first_dw;
    for (int threads : {1, 2, 3}) {
      ThreadPool pool(threads);
      for (int run = 0; run < 2; ++run) {
        std::vector<float> y(n), rstd(c.tokens), dx(n), dw = dw0;
        RmsNormTrainParams p{.x = x.data(),
                             .weight = w.data(),
                             .y = y.data(),
                             .rstd = rstd.data(),
                             .dy = dy.data(),
                             .dx = dx.data(),
                             .dweight = dw.data(),
                             .tokens = c.tokens,
                             .dim = c.dim};
        rms_norm_train_forward(p, pool);
        rms_norm_backward(p, pool);
        if (first_y.empty()) {
          first_y = y, first_dx = dx, first_dw = dw;
          continue;
        }
        expect_bitwise_equal(y, first_y, "y");
        expect_bitwise_equal(dx, first_dx, "dx");
        expect_bitwise_equal(dw, first_dw, "dweight");
        // dx written over dy, and without dweight: the same dx.
        std::vector<float> in_place = dy;
        p.dy = in_place.data();
        p.dx = in_place.data();
        p.dweight = nullptr;
        rms_norm_backward(p, pool);
        expect_bitwise_equal(in_place, first_dx, "dx in place");
        // y written over x.
        std::vector<float> x_then_y = x;
        p.x = x_then_y.data();
        p.y = x_then_y.data();
        rms_norm_train_forward(p, pool);
        expect_bitwise_equal(x_then_y, first_y, "y in place");
      }
    }
  }
}

TEST(RmsNormTrain, BadParametersThrow) {
  std::vector<float> a(12, 1.0f), b(12), r(3);
  ThreadPool pool(2);
  const RmsNormTrainParams good{.x = a.data(),
                                .weight = a.data(),
                                .y = b.data(),
                                .rstd = r.data(),
                                .dy = a.data(),
                                .dx = b.data(),
                                .tokens = 3,
                                .dim = 4};
  EXPECT_NO_THROW(rms_norm_train_forward(good, pool));
  EXPECT_NO_THROW(rms_norm_backward(good, pool));
  auto p = good;
  p.dim = 0;
  EXPECT_THROW(validate(p), Error);
  p = good;
  p.tokens = -1;
  EXPECT_THROW(rms_norm_train_forward_reference(p), Error);
  p = good;
  p.eps = 0.0f;
  EXPECT_THROW(rms_norm_train_forward(p, pool), Error);
  p = good;
  p.rstd = nullptr;
  EXPECT_THROW(rms_norm_train_forward(p, pool), Error);
  EXPECT_THROW(rms_norm_backward_reference(p), Error);
  p = good;
  p.dy = nullptr;
  EXPECT_NO_THROW(rms_norm_train_forward(p, pool));  // the forward does not read dy
  EXPECT_THROW(rms_norm_backward(p, pool), Error);
  p = good;
  p.dx = nullptr;
  EXPECT_THROW(rms_norm_backward(p, pool), Error);
  try {
    p = good;
    p.x = nullptr;
    rms_norm_backward(p, pool);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("x must be set"), std::string::npos) << e.what();
  }
  // No tokens: nothing to read, nothing written.
  p = RmsNormTrainParams{.tokens = 0, .dim = 4};
  EXPECT_NO_THROW(rms_norm_train_forward(p, pool));
  EXPECT_NO_THROW(rms_norm_backward(p, pool));
}

// ---------------------------------------------------------------------------------------------
// LayerNorm

TEST(LayerNormTrain, ForwardReferenceMatchesTheFormula) {
  const int64_t tokens = 3, dim = 37;
  const auto xf = random_vector<float>(size_t(tokens * dim), 21, 2.0, 3.0);
  const auto wf = random_vector<float>(size_t(dim), 22, 1.0, 0.3);
  const auto bf = random_vector<float>(size_t(dim), 23, 0.0, 0.5);
  const std::vector<double> x(xf.begin(), xf.end()), w(wf.begin(), wf.end()),
      b(bf.begin(), bf.end());
  std::vector<double> y(x.size()), mean(tokens), rstd(tokens);
  layer_norm_train_forward_reference<double>({.x = x.data(),
                                              .weight = w.data(),
                                              .bias = b.data(),
                                              .y = y.data(),
                                              .mean = mean.data(),
                                              .rstd = rstd.data(),
                                              .tokens = tokens,
                                              .dim = dim});
  std::vector<float> yf(x.size()), meanf(tokens), rstdf(tokens);
  layer_norm_train_forward_reference<float>({.x = xf.data(),
                                             .weight = wf.data(),
                                             .bias = bf.data(),
                                             .y = yf.data(),
                                             .mean = meanf.data(),
                                             .rstd = rstdf.data(),
                                             .tokens = tokens,
                                             .dim = dim});
  for (int64_t t = 0; t < tokens; ++t) {
    long double m = 0.0L, var = 0.0L, mean_abs = 0.0L;
    for (int64_t i = 0; i < dim; ++i) m += (long double)x[t * dim + i] / dim;
    for (int64_t i = 0; i < dim; ++i) {
      var += std::pow((long double)x[t * dim + i] - m, 2) / dim;  // biased
      mean_abs += std::fabs((long double)x[t * dim + i]) / dim;
    }
    const long double r = 1.0L / std::sqrt(var + 1e-6L);
    EXPECT_NEAR(mean[t], double(m), (dim + 2) * 0x1p-53 * double(mean_abs));
    EXPECT_NEAR(rstd[t], double(r), (dim + 6) * 0x1p-53 * double(r));
    // float: statistics summed in double, then rounded once to fp32 (mean) or ~twice (rstd,
    // computed from the rounded mean: the error of the mean enters var only to second order).
    EXPECT_NEAR(meanf[t], double(m), kU * double(mean_abs));
    EXPECT_NEAR(rstdf[t], double(r), 2 * kU * double(r));
    for (int64_t i = 0; i < dim; ++i) {
      const size_t k = size_t(t * dim + i);
      const long double xhat = ((long double)x[k] - m) * r;
      const double expected = double(w[i] * xhat + b[i]);
      // double: the mean's error (D·2^-53 mean|x|) scaled by |w| rstd, plus a few roundings.
      const double scale = std::fabs(w[i]) * double(r) * double(mean_abs) + std::fabs(b[i]) +
                           std::fabs(double(w[i] * xhat));
      EXPECT_NEAR(y[k], expected, (dim + 8) * 0x1p-53 * scale) << k;
      // float: rounding of mean (u mean|x|) and rstd (2u), then 4 roundings of the elementwise
      // steps, each at most u of the magnitudes in `scale`.
      EXPECT_NEAR(yf[k], expected, 8 * kU * scale) << k;
    }
  }
}

TEST(LayerNormTrain, BackwardMatchesFiniteDifferences) {
  const int64_t tokens = 3, dim = 17;
  auto x = random_vector<double>(size_t(tokens * dim), 24, 0.5, 1.0);
  auto w = random_vector<double>(size_t(dim), 25, 1.0, 0.4);
  auto b = random_vector<double>(size_t(dim), 26, 0.0, 0.5);
  const auto dy = random_vector<double>(x.size(), 27);
  std::vector<double> y(x.size()), mean(tokens), rstd(tokens), dx(x.size()), dw(dim, 0.0),
      db(dim, 0.0);
  LayerNormTrain<double> p{.x = x.data(),
                           .weight = w.data(),
                           .bias = b.data(),
                           .y = y.data(),
                           .mean = mean.data(),
                           .rstd = rstd.data(),
                           .dy = dy.data(),
                           .dx = dx.data(),
                           .dweight = dw.data(),
                           .dbias = db.data(),
                           .tokens = tokens,
                           .dim = dim};
  layer_norm_train_forward_reference(p);
  layer_norm_backward_reference(p);
  const auto loss = [&] {
    layer_norm_train_forward_reference(p);
    return dot_loss(dy, y);
  };
  expect_gradient_near(numeric_gradient(x, loss), dx, "dx");
  expect_gradient_near(numeric_gradient(w, loss), dw, "dweight");
  expect_gradient_near(numeric_gradient(b, loss), db, "dbias");
}

TEST(LayerNormTrain, BackwardReferenceAccumulatesAndAllowsDxInPlace) {
  const int64_t tokens = 4, dim = 9;
  const auto x = random_vector<float>(size_t(tokens * dim), 28, 1.0, 2.0);
  const auto w = random_vector<float>(size_t(dim), 29, 1.0, 0.3);
  const auto b = random_vector<float>(size_t(dim), 30);
  const auto dy = random_vector<float>(x.size(), 31);
  const auto dw0 = random_vector<float>(size_t(dim), 32);
  const auto db0 = random_vector<float>(size_t(dim), 33);
  std::vector<float> y(x.size()), mean(tokens), rstd(tokens), dx(x.size());
  std::vector<float> fresh_w(dim, 0.0f), fresh_b(dim, 0.0f), dw = dw0, db = db0;
  LayerNormTrainParams p{.x = x.data(),
                         .weight = w.data(),
                         .bias = b.data(),
                         .y = y.data(),
                         .mean = mean.data(),
                         .rstd = rstd.data(),
                         .dy = dy.data(),
                         .dx = dx.data(),
                         .dweight = fresh_w.data(),
                         .dbias = fresh_b.data(),
                         .tokens = tokens,
                         .dim = dim};
  layer_norm_train_forward_reference(p);
  layer_norm_backward_reference(p);
  p.dweight = dw.data();
  p.dbias = db.data();
  std::vector<float> in_place = dy;
  p.dy = in_place.data();
  p.dx = in_place.data();
  layer_norm_backward_reference(p);
  for (int64_t i = 0; i < dim; ++i) {
    EXPECT_EQ(dw[i], dw0[i] + fresh_w[i]) << i;
    EXPECT_EQ(db[i], db0[i] + fresh_b[i]) << i;
  }
  expect_bitwise_equal(in_place, dx, "dx computed in place");
}

// Fast vs reference in fp32 (u = 2^-24, first order; m = mean|x|, v = var):
//   mean: D terms summed and divided: |Δmean| <= δ = (D + 3) u m.
//   rstd: Σ(x − mean)² from the computed mean has relative error (D + 4) u plus δ²/(v + eps)
//         (the first-order term of a shifted centre vanishes); sqrt halves it:
//         (D/2 + 6) u + δ²/(2 (v + eps)).
//   y:    |w| rstd (δ + u |x − mean|) from the centring, |w x̂| times rstd's error, and five
//         roundings per side of |w x̂| + |b|.
//   dx:   two sums of D terms with up to 4 roundings each, elementwise steps on both sides:
//         (D + 16) u A, A = rstd (|g| + mean|g| + |x̂| mean|g x̂|).
//   dw, db: as RMSNorm, (T + 5) u (Σ_t |dy x̂| + |dw0|) and (T + 2) u (Σ_t |dy| + |db0|).
struct LayerNormCase {
  int64_t tokens, dim;
  double mean, stddev;
};

TEST(LayerNormTrain, FastMatchesReference) {
  for (const LayerNormCase c : {LayerNormCase{1, 1, 0.5, 1.0}, LayerNormCase{5, 3, 1.0, 2.0},
                                LayerNormCase{9, 16, 1.0, 2.0}, LayerNormCase{37, 31, 1.0, 2.0},
                                LayerNormCase{6, 128, 1.0, 2.0}, LayerNormCase{7, 130, 50.0, 1.0},
                                LayerNormCase{4, 1027, 1.0, 2.0}}) {
    const int64_t tokens = c.tokens, dim = c.dim;
    SCOPED_TRACE(testing::Message() << "tokens " << tokens << " dim " << dim);
    const size_t n = size_t(tokens * dim);
    const auto x = random_vector<float>(n, uint32_t(dim) + 40, c.mean, c.stddev);
    const auto w = random_vector<float>(size_t(dim), uint32_t(dim) + 41, 1.0, 0.3);
    const auto b = random_vector<float>(size_t(dim), uint32_t(dim) + 42, 0.0, 0.5);
    const auto dy = random_vector<float>(n, uint32_t(dim) + 43);
    const auto dw0 = random_vector<float>(size_t(dim), uint32_t(dim) + 44);
    const auto db0 = random_vector<float>(size_t(dim), uint32_t(dim) + 45);
    std::vector<float> y_ref(n), mean_ref(tokens), rstd_ref(tokens), dx_ref(n);
    std::vector<float> dw_ref = dw0, db_ref = db0;
    LayerNormTrainParams p{.x = x.data(),
                           .weight = w.data(),
                           .bias = b.data(),
                           .y = y_ref.data(),
                           .mean = mean_ref.data(),
                           .rstd = rstd_ref.data(),
                           .dy = dy.data(),
                           .dx = dx_ref.data(),
                           .dweight = dw_ref.data(),
                           .dbias = db_ref.data(),
                           .tokens = tokens,
                           .dim = dim};
    layer_norm_train_forward_reference(p);
    layer_norm_backward_reference(p);
    std::vector<double> tol_mean(tokens), tol_rstd(tokens), tol_y(n), tol_dx(n), abs_dw(dim),
        abs_db(dim);
    for (int64_t t = 0; t < tokens; ++t) {
      const double rstd = rstd_ref[t], mean = mean_ref[t];
      double m = 0.0, mean_g = 0.0, mean_gx = 0.0;
      for (int64_t i = 0; i < dim; ++i) {
        const size_t k = size_t(t * dim + i);
        const double xhat = (x[k] - mean) * rstd, g = double(w[i]) * dy[k];
        m += std::fabs(x[k]) / dim;
        mean_g += std::fabs(g) / dim;
        mean_gx += std::fabs(g * xhat) / dim;
        abs_dw[i] += std::fabs(dy[k] * xhat);
        abs_db[i] += std::fabs(dy[k]);
      }
      const double delta = (dim + 3) * kU * m;
      double variance_eps = 1e-6;  // rstd is 1 / sqrt(var + eps): its error is relative to that
      for (int64_t i = 0; i < dim; ++i) variance_eps += std::pow(x[t * dim + i] - mean, 2) / dim;
      const double rstd_rel = (dim / 2.0 + 6) * kU + delta * delta / (2 * variance_eps);
      tol_mean[t] = delta;
      tol_rstd[t] = rstd_rel * rstd;
      for (int64_t i = 0; i < dim; ++i) {
        const size_t k = size_t(t * dim + i);
        const double centered = std::fabs(x[k] - mean), wxhat = std::fabs(w[i] * centered * rstd);
        tol_y[k] = std::fabs(w[i]) * rstd * (delta + kU * centered) + wxhat * rstd_rel +
                   5 * kU * (wxhat + std::fabs(b[i]));
        tol_dx[k] = (dim + 16) * kU * rstd *
                    (std::fabs(double(w[i]) * dy[k]) + mean_g + centered * rstd * mean_gx);
      }
    }
    for (int threads : {1, 2, 3}) {
      ThreadPool pool(threads);
      test::for_each_simd_target([&] {
        std::vector<float> y(n), mean(tokens), rstd(tokens), dx(n), dw = dw0, db = db0;
        LayerNormTrainParams f = p;
        f.y = y.data();
        f.mean = mean.data();
        f.rstd = rstd.data();
        layer_norm_train_forward(f, pool);
        for (int64_t t = 0; t < tokens; ++t) {
          ASSERT_NEAR(mean[t], mean_ref[t], tol_mean[t]) << t;
          ASSERT_NEAR(rstd[t], rstd_ref[t], tol_rstd[t]) << t;
        }
        for (size_t k = 0; k < n; ++k) ASSERT_NEAR(y[k], y_ref[k], tol_y[k]) << k;
        f.mean = mean_ref.data();
        f.rstd = rstd_ref.data();
        f.dx = dx.data();
        f.dweight = dw.data();
        f.dbias = db.data();
        layer_norm_backward(f, pool);
        for (size_t k = 0; k < n; ++k) ASSERT_NEAR(dx[k], dx_ref[k], tol_dx[k]) << k;
        for (int64_t i = 0; i < dim; ++i) {
          ASSERT_NEAR(dw[i], dw_ref[i], (tokens + 5) * kU * (abs_dw[i] + std::fabs(dw0[i]))) << i;
          ASSERT_NEAR(db[i], db_ref[i], (tokens + 2) * kU * (abs_db[i] + std::fabs(db0[i]))) << i;
        }
      });
    }
  }
}

TEST(LayerNormTrain, FastIsDeterministicAndAllowsDxInPlace) {
  for (const LayerNormCase c :
       {LayerNormCase{37, 1027, 1.0, 2.0}, LayerNormCase{301, 128, 1.0, 2.0}}) {
    const size_t n = size_t(c.tokens * c.dim);
    const auto x = random_vector<float>(n, 50, c.mean, c.stddev);
    const auto w = random_vector<float>(size_t(c.dim), 51, 1.0, 0.3);
    const auto b = random_vector<float>(size_t(c.dim), 52);
    const auto dy = random_vector<float>(n, 53);
    const auto dw0 = random_vector<float>(size_t(c.dim), 54);
    std::vector<float> first_y, first_dx, first_dw, first_db;
    for (int threads : {1, 2, 3}) {
      ThreadPool pool(threads);
      for (int run = 0; run < 2; ++run) {
        std::vector<float> y(n), mean(c.tokens), rstd(c.tokens), dx(n), dw = dw0, db = dw0;
        LayerNormTrainParams p{.x = x.data(),
                               .weight = w.data(),
                               .bias = b.data(),
                               .y = y.data(),
                               .mean = mean.data(),
                               .rstd = rstd.data(),
                               .dy = dy.data(),
                               .dx = dx.data(),
                               .dweight = dw.data(),
                               .dbias = db.data(),
                               .tokens = c.tokens,
                               .dim = c.dim};
        layer_norm_train_forward(p, pool);
        layer_norm_backward(p, pool);
        if (first_y.empty()) {
          first_y = y, first_dx = dx, first_dw = dw, first_db = db;
          continue;
        }
        expect_bitwise_equal(y, first_y, "y");
        expect_bitwise_equal(dx, first_dx, "dx");
        expect_bitwise_equal(dw, first_dw, "dweight");
        expect_bitwise_equal(db, first_db, "dbias");
        std::vector<float> in_place = dy;
        p.dy = in_place.data();
        p.dx = in_place.data();
        p.dweight = nullptr;
        p.dbias = nullptr;
        layer_norm_backward(p, pool);
        expect_bitwise_equal(in_place, first_dx, "dx in place");
        std::vector<float> x_then_y = x;
        p.x = x_then_y.data();
        p.y = x_then_y.data();
        layer_norm_train_forward(p, pool);
        expect_bitwise_equal(x_then_y, first_y, "y in place");
      }
    }
  }
}

TEST(LayerNormTrain, BadParametersThrow) {
  std::vector<float> a(12, 1.0f), b(12), m(3), r(3);
  a[1] = 2.0f;
  ThreadPool pool(2);
  const LayerNormTrainParams good{.x = a.data(),
                                  .weight = a.data(),
                                  .bias = a.data(),
                                  .y = b.data(),
                                  .mean = m.data(),
                                  .rstd = r.data(),
                                  .dy = a.data(),
                                  .dx = b.data(),
                                  .tokens = 3,
                                  .dim = 4};
  EXPECT_NO_THROW(layer_norm_train_forward(good, pool));
  EXPECT_NO_THROW(layer_norm_backward(good, pool));
  auto p = good;
  p.dim = -2;
  EXPECT_THROW(validate(p), Error);
  p = good;
  p.eps = -1.0f;
  EXPECT_THROW(layer_norm_train_forward_reference(p), Error);
  p = good;
  p.bias = nullptr;
  EXPECT_THROW(layer_norm_train_forward(p, pool), Error);
  EXPECT_NO_THROW(layer_norm_backward(p, pool));  // the backward does not read the bias
  p = good;
  p.mean = nullptr;
  EXPECT_THROW(layer_norm_backward(p, pool), Error);
  EXPECT_THROW(layer_norm_backward_reference(p), Error);
  p = good;
  p.dy = nullptr;
  EXPECT_THROW(layer_norm_backward(p, pool), Error);
}

}  // namespace
}  // namespace dsa

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "core/float_formats.h"
#include "ops/gemm/linear_train.h"

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

struct Shape {
  int64_t m, n, k;
};

// Σ_l |a[i, l] b[j, l]| etc.: the magnitudes that bound the rounding of each dot product.
// abs_y[i, j] = Σ_l |x[i, l] w[j, l]|, abs_dx[i, l] = Σ_j |dy[i, j] w[j, l]|,
// abs_dw[j, l] = Σ_i |dy[i, j] x[i, l]|.
struct Magnitudes {
  std::vector<double> y, dx, dw;
};

template <typename Real>
Magnitudes magnitudes(const Shape& s, const std::vector<Real>& x, const std::vector<Real>& w,
                      const std::vector<Real>& dy) {
  Magnitudes a{std::vector<double>(size_t(s.m * s.n)), std::vector<double>(size_t(s.m * s.k)),
               std::vector<double>(size_t(s.n * s.k))};
  for (int64_t i = 0; i < s.m; ++i) {
    for (int64_t j = 0; j < s.n; ++j) {
      for (int64_t l = 0; l < s.k; ++l) {
        const double xv = x[i * s.k + l], wv = w[j * s.k + l], dyv = dy[i * s.n + j];
        a.y[i * s.n + j] += std::fabs(xv * wv);
        a.dx[i * s.k + l] += std::fabs(dyv * wv);
        a.dw[j * s.k + l] += std::fabs(dyv * xv);
      }
    }
  }
  return a;
}

TEST(LinearTrain, ForwardReferenceMatchesTheFormula) {
  const Shape s{7, 13, 37};
  const auto xf = random_vector<float>(size_t(s.m * s.k), 1);
  const auto wf = random_vector<float>(size_t(s.n * s.k), 2);
  const std::vector<double> x(xf.begin(), xf.end()), w(wf.begin(), wf.end());
  std::vector<double> y(size_t(s.m * s.n));
  std::vector<float> yf(y.size());
  linear_train_forward_reference<double>(
      {.x = x.data(), .weight = w.data(), .y = y.data(), .m = s.m, .n = s.n, .k = s.k});
  linear_train_forward_reference<float>(
      {.x = xf.data(), .weight = wf.data(), .y = yf.data(), .m = s.m, .n = s.n, .k = s.k});
  const Magnitudes a = magnitudes(s, x, w, std::vector<double>(y.size()));
  for (int64_t i = 0; i < s.m; ++i) {
    for (int64_t j = 0; j < s.n; ++j) {
      long double expected = 0.0L;
      for (int64_t l = 0; l < s.k; ++l) expected += (long double)x[i * s.k + l] * w[j * s.k + l];
      const size_t o = size_t(i * s.n + j);
      // double: K products and sums, each rounding <= 2^-53 of the magnitudes.
      EXPECT_NEAR(y[o], double(expected), (s.k + 1) * 0x1p-53 * a.y[o]) << o;
      // float: the same double sum, then one rounding to fp32.
      EXPECT_NEAR(yf[o], double(expected),
                  kU * std::fabs(double(expected)) + (s.k + 1) * 0x1p-53 * a.y[o])
          << o;
    }
  }
}

// L = Σ dy · y is linear in x and in W, so central differences have no truncation error; the
// rounding of the N perturbed outputs (<= K 2^-53 Σ|x w| ~ 1e-13 each, times |dy|) over the
// step 2e-6 stays below 1e-6. A wrong index or transpose is off by O(1).
TEST(LinearTrain, BackwardMatchesFiniteDifferences) {
  const Shape s{5, 11, 9};
  auto x = random_vector<double>(size_t(s.m * s.k), 3);
  auto w = random_vector<double>(size_t(s.n * s.k), 4);
  const auto dy = random_vector<double>(size_t(s.m * s.n), 5);
  std::vector<double> y(dy.size()), dx(x.size(), 0.0), dw(w.size(), 0.0);
  LinearTrain<double> p{.x = x.data(),
                        .weight = w.data(),
                        .y = y.data(),
                        .dy = dy.data(),
                        .dx = dx.data(),
                        .dweight = dw.data(),
                        .m = s.m,
                        .n = s.n,
                        .k = s.k};
  linear_backward_reference(p);
  const auto loss = [&] {
    linear_train_forward_reference(p);
    long double sum = 0.0L;
    for (size_t o = 0; o < y.size(); ++o) sum += (long double)dy[o] * y[o];
    return double(sum);
  };
  for (auto [param, grad, name] : {std::tuple{&x, &dx, "dx"}, std::tuple{&w, &dw, "dweight"}}) {
    for (size_t e = 0; e < param->size(); ++e) {
      const double saved = (*param)[e];
      const double h = 1e-6 * std::max(1.0, std::fabs(saved));
      (*param)[e] = saved + h;
      const double plus = loss();
      (*param)[e] = saved - h;
      const double minus = loss();
      (*param)[e] = saved;
      ASSERT_NEAR((plus - minus) / (2 * h), (*grad)[e], 1e-6) << name << " element " << e;
    }
  }
}

TEST(LinearTrain, BackwardReferenceAccumulates) {
  const Shape s{4, 6, 5};
  const auto x = random_vector<float>(size_t(s.m * s.k), 6);
  const auto w = random_vector<float>(size_t(s.n * s.k), 7);
  const auto dy = random_vector<float>(size_t(s.m * s.n), 8);
  const auto dx0 = random_vector<float>(x.size(), 9);
  const auto dw0 = random_vector<float>(w.size(), 10);
  std::vector<float> fresh_dx(x.size(), 0.0f), fresh_dw(w.size(), 0.0f), dx = dx0, dw = dw0;
  LinearTrainParams p{.x = x.data(),
                      .weight = w.data(),
                      .dy = dy.data(),
                      .dx = fresh_dx.data(),
                      .dweight = fresh_dw.data(),
                      .m = s.m,
                      .n = s.n,
                      .k = s.k};
  linear_backward_reference(p);
  p.dx = dx.data();
  p.dweight = dw.data();
  linear_backward_reference(p);
  // The reference adds each rounded dot product to the gradient in one fp32 add.
  for (size_t e = 0; e < dx.size(); ++e) EXPECT_EQ(dx[e], dx0[e] + fresh_dx[e]) << e;
  for (size_t e = 0; e < dw.size(); ++e) EXPECT_EQ(dw[e], dw0[e] + fresh_dw[e]) << e;
}

// Fast (sgemm) vs reference, fp32, onto non-zero gradients. A dot product of L terms summed in
// fp32 in any order (blocked, FMA or not) is within L u Σ|terms| of the exact one (first
// order); the reference is within u of it, and the accumulation adds one rounding of
// |g0| + Σ|terms| on each side:
//   y:  (K + 2) u abs_y     dx: (N + 3) u (abs_dx + |dx0|)     dW: (M + 3) u (abs_dw + |dw0|)
TEST(LinearTrain, FastMatchesReference) {
  for (const Shape s : {Shape{7, 13, 37}, Shape{1, 5, 3}, Shape{13, 1, 7}, Shape{3, 8, 1},
                        Shape{130, 70, 96}, Shape{67, 129, 257}}) {
    SCOPED_TRACE(testing::Message() << "m " << s.m << " n " << s.n << " k " << s.k);
    const auto x = random_vector<float>(size_t(s.m * s.k), uint32_t(s.k));
    const auto w = random_vector<float>(size_t(s.n * s.k), uint32_t(s.k) + 1, 0.2);
    const auto dy = random_vector<float>(size_t(s.m * s.n), uint32_t(s.k) + 2);
    const auto dx0 = random_vector<float>(x.size(), uint32_t(s.k) + 3);
    const auto dw0 = random_vector<float>(w.size(), uint32_t(s.k) + 4);
    std::vector<float> y_ref(dy.size()), dx_ref = dx0, dw_ref = dw0;
    LinearTrainParams p{.x = x.data(),
                        .weight = w.data(),
                        .y = y_ref.data(),
                        .dy = dy.data(),
                        .dx = dx_ref.data(),
                        .dweight = dw_ref.data(),
                        .m = s.m,
                        .n = s.n,
                        .k = s.k};
    linear_train_forward_reference(p);
    linear_backward_reference(p);
    const Magnitudes a = magnitudes(s, x, w, dy);
    std::vector<float> first_y, first_dx, first_dw;
    for (int threads : {1, 2, 3}) {
      ThreadPool pool(threads);
      for (int run = 0; run < 2; ++run) {
        std::vector<float> y(dy.size(), 7.0f), dx = dx0, dw = dw0;
        LinearTrainParams f = p;
        f.y = y.data();
        f.dx = dx.data();
        f.dweight = dw.data();
        linear_train_forward(f, pool);
        linear_backward(f, pool);
        for (size_t o = 0; o < y.size(); ++o) {
          ASSERT_NEAR(y[o], y_ref[o], (s.k + 2) * kU * a.y[o]) << "y " << o;
        }
        for (size_t e = 0; e < dx.size(); ++e) {
          ASSERT_NEAR(dx[e], dx_ref[e], (s.n + 3) * kU * (a.dx[e] + std::fabs(dx0[e])))
              << "dx " << e;
        }
        for (size_t e = 0; e < dw.size(); ++e) {
          ASSERT_NEAR(dw[e], dw_ref[e], (s.m + 3) * kU * (a.dw[e] + std::fabs(dw0[e])))
              << "dweight " << e;
        }
        // Determinism: the same bits run to run (OpenBLAS's thread count is fixed in a process).
        if (first_y.empty()) {
          first_y = y, first_dx = dx, first_dw = dw;
        } else {
          ASSERT_EQ(y, first_y);
          ASSERT_EQ(dx, first_dx);
          ASSERT_EQ(dw, first_dw);
        }
      }
    }
  }
}

// bf16 compute: the fast path with operands rounded to bf16 is the fp32 reference over the
// rounded x, W and dy (their products are exact in fp32), within the same bounds; the
// accumulated gradients it adds to stay fp32.
TEST(LinearTrain, Bf16ComputeIsTheReferenceOverRoundedOperands) {
  const auto rounded = [](std::vector<float> v) {
    for (float& e : v) e = round_to_bf16(e);
    return v;
  };
  for (const Shape s : {Shape{7, 13, 37}, Shape{300, 70, 96}, Shape{67, 129, 257}}) {
    SCOPED_TRACE(testing::Message() << "m " << s.m << " n " << s.n << " k " << s.k);
    const auto x = random_vector<float>(size_t(s.m * s.k), uint32_t(s.k));
    const auto w = random_vector<float>(size_t(s.n * s.k), uint32_t(s.k) + 1, 0.2);
    const auto dy = random_vector<float>(size_t(s.m * s.n), uint32_t(s.k) + 2);
    const auto dx0 = random_vector<float>(x.size(), uint32_t(s.k) + 3);
    const auto dw0 = random_vector<float>(w.size(), uint32_t(s.k) + 4);
    const auto xr = rounded(x), wr = rounded(w), dyr = rounded(dy);
    std::vector<float> y_ref(dy.size()), dx_ref = dx0, dw_ref = dw0;
    LinearTrainParams r{.x = xr.data(),
                        .weight = wr.data(),
                        .y = y_ref.data(),
                        .dy = dyr.data(),
                        .dx = dx_ref.data(),
                        .dweight = dw_ref.data(),
                        .m = s.m,
                        .n = s.n,
                        .k = s.k};
    linear_train_forward_reference(r);
    linear_backward_reference(r);
    const Magnitudes a = magnitudes(s, xr, wr, dyr);
    std::vector<float> y(dy.size()), dx = dx0, dw = dw0;
    ThreadPool pool(2);
    linear_train_forward(LinearTrainParams{.x = x.data(),
                                           .weight = w.data(),
                                           .y = y.data(),
                                           .m = s.m,
                                           .n = s.n,
                                           .k = s.k,
                                           .precision = MatmulPrecision::kBf16},
                         pool);
    linear_backward(LinearTrainParams{.x = x.data(),
                                      .weight = w.data(),
                                      .dy = dy.data(),
                                      .dx = dx.data(),
                                      .dweight = dw.data(),
                                      .m = s.m,
                                      .n = s.n,
                                      .k = s.k,
                                      .precision = MatmulPrecision::kBf16},
                    pool);
    for (size_t o = 0; o < y.size(); ++o) {
      ASSERT_NEAR(y[o], y_ref[o], (s.k + 2) * kU * a.y[o]) << "y " << o;
    }
    for (size_t e = 0; e < dx.size(); ++e) {
      ASSERT_NEAR(dx[e], dx_ref[e], (s.n + 3) * kU * (a.dx[e] + std::fabs(dx0[e]))) << "dx " << e;
    }
    for (size_t e = 0; e < dw.size(); ++e) {
      ASSERT_NEAR(dw[e], dw_ref[e], (s.m + 3) * kU * (a.dw[e] + std::fabs(dw0[e])))
          << "dweight " << e;
    }
  }
}

TEST(LinearTrain, NullGradientsAreSkipped) {
  const Shape s{9, 10, 11};
  const auto x = random_vector<float>(size_t(s.m * s.k), 11);
  const auto w = random_vector<float>(size_t(s.n * s.k), 12);
  const auto dy = random_vector<float>(size_t(s.m * s.n), 13);
  const auto dx0 = random_vector<float>(x.size(), 14);
  const auto dw0 = random_vector<float>(w.size(), 15);
  ThreadPool pool(2);
  std::vector<float> both_dx = dx0, both_dw = dw0, only_dx = dx0, only_dw = dw0;
  LinearTrainParams p{.x = x.data(),
                      .weight = w.data(),
                      .dy = dy.data(),
                      .dx = both_dx.data(),
                      .dweight = both_dw.data(),
                      .m = s.m,
                      .n = s.n,
                      .k = s.k};
  linear_backward(p, pool);
  // dx alone needs no x; dW alone needs no weight.
  LinearTrainParams q = p;
  q.x = nullptr;
  q.dx = only_dx.data();
  q.dweight = nullptr;
  linear_backward(q, pool);
  EXPECT_EQ(only_dx, both_dx);
  q = p;
  q.weight = nullptr;
  q.dx = nullptr;
  q.dweight = only_dw.data();
  linear_backward(q, pool);
  EXPECT_EQ(only_dw, both_dw);
  q = p;
  q.dx = nullptr;
  q.dweight = nullptr;
  EXPECT_NO_THROW(linear_backward(q, pool));
  EXPECT_NO_THROW(linear_backward_reference(q));
}

TEST(LinearTrain, NoRowsIsANoOp) {
  ThreadPool pool(2);
  std::vector<float> dw(12, 1.5f);
  LinearTrainParams p{.dweight = dw.data(), .m = 0, .n = 3, .k = 4};
  EXPECT_NO_THROW(linear_train_forward(p, pool));
  EXPECT_NO_THROW(linear_backward(p, pool));
  EXPECT_NO_THROW(linear_train_forward_reference(p));
  EXPECT_NO_THROW(linear_backward_reference(p));
  for (float v : dw) EXPECT_EQ(v, 1.5f);
}

TEST(LinearTrain, BadParametersThrow) {
  std::vector<float> a(64, 1.0f), b(64);
  ThreadPool pool(2);
  const LinearTrainParams good{.x = a.data(),
                               .weight = a.data(),
                               .y = b.data(),
                               .dy = a.data(),
                               .dx = b.data(),
                               .dweight = b.data(),
                               .m = 2,
                               .n = 3,
                               .k = 4};
  EXPECT_NO_THROW(linear_train_forward(good, pool));
  EXPECT_NO_THROW(linear_backward(good, pool));
  auto p = good;
  p.m = -1;
  EXPECT_THROW(validate(p), Error);
  p = good;
  p.n = 0;
  EXPECT_THROW(linear_train_forward(p, pool), Error);
  p = good;
  p.k = 0;
  EXPECT_THROW(linear_backward_reference(p), Error);
  p = good;
  p.k = int64_t(1) << 31;
  EXPECT_THROW(validate(p), Error);
  p = good;
  p.y = nullptr;
  EXPECT_THROW(linear_train_forward(p, pool), Error);
  EXPECT_NO_THROW(linear_backward(p, pool));  // the backward does not write y
  p = good;
  p.dy = nullptr;
  EXPECT_THROW(linear_backward(p, pool), Error);
  p = good;
  p.weight = nullptr;
  EXPECT_THROW(linear_backward(p, pool), Error);  // needed for dx
  p = good;
  p.x = nullptr;
  EXPECT_THROW(linear_backward(p, pool), Error);  // needed for dweight
  try {
    p = good;
    p.n = -5;
    validate(p);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("n must be > 0, got -5"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace dsa

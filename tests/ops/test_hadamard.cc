#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "ops/indexer/hadamard.h"
#include "simd_targets.h"

namespace dsa {
namespace {

constexpr int kDim = kHadamardDim;

std::vector<bf16> random_rows(int64_t rows, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<bf16> out(size_t(rows * kDim));
  for (size_t i = 0; i < out.size(); ++i) {
    // Mixed magnitudes (an outlier every 37 elements), as the activations the rotation spreads.
    out[i] = float_to_bf16(normal(rng) * (i % 37 == 0 ? 50.0f : 1.0f));
  }
  return out;
}

// Sylvester's construction, independent of the popcount formula: H_{2n} = [[H, H], [H, -H]].
std::vector<int> sylvester_matrix() {
  std::vector<int> h = {1};
  for (int n = 1; n < kDim; n *= 2) {
    std::vector<int> next(size_t(4 * n * n));
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < n; ++j) {
        const int v = h[size_t(i * n + j)];
        next[size_t(i * 2 * n + j)] = v;
        next[size_t(i * 2 * n + j + n)] = v;
        next[size_t((i + n) * 2 * n + j)] = v;
        next[size_t((i + n) * 2 * n + j + n)] = -v;
      }
    }
    h = std::move(next);
  }
  return h;
}

double abs_sum(const bf16* x) {
  double sum = 0.0;
  for (int j = 0; j < kDim; ++j) sum += std::fabs(bf16_to_float(x[j]));
  return sum;
}

TEST(Hadamard, BasisVectorsGiveTheScaledColumns) {
  // H e_j = column j, scaled by 128^-0.5 = 0.0883883..., which rounds to bf16 0x3DB5.
  std::vector<bf16> x(kDim * kDim, bf16{0});
  for (int j = 0; j < kDim; ++j) x[size_t(j * kDim + j)] = float_to_bf16(1.0f);
  std::vector<bf16> y(x.size());
  hadamard_128_reference({.x = x.data(), .out = y.data(), .rows = kDim});
  const std::vector<int> h = sylvester_matrix();
  for (int j = 0; j < kDim; ++j) {
    for (int i = 0; i < kDim; ++i) {
      const uint16_t expected = h[size_t(i * kDim + j)] > 0 ? 0x3DB5 : 0xBDB5;
      ASSERT_EQ(y[size_t(j * kDim + i)].bits, expected) << "row " << j << " element " << i;
    }
  }
}

TEST(Hadamard, ReferenceMatchesSylvesterProductInDouble) {
  const int64_t rows = 8;
  const std::vector<bf16> x = random_rows(rows, 1);
  std::vector<bf16> y(x.size());
  hadamard_128_reference({.x = x.data(), .out = y.data(), .rows = rows});
  const std::vector<int> h = sylvester_matrix();
  for (int64_t r = 0; r < rows; ++r) {
    const bf16* xr = x.data() + r * kDim;
    // fp32 sequential sum: error <= 127 * 2^-24 * sum|x|; then the bf16 rounding of the output:
    // half an ulp <= 2^-8 |y| (8 significant bits).
    const double sum_error = 127.0 * std::ldexp(1.0, -24) * abs_sum(xr) * 0.0883883476;
    for (int i = 0; i < kDim; ++i) {
      double exact = 0.0;
      for (int j = 0; j < kDim; ++j)
        exact += h[size_t(i * kDim + j)] * double(bf16_to_float(xr[j]));
      exact *= std::pow(128.0, -0.5);
      const double tol = std::ldexp(std::fabs(exact), -8) + 2 * sum_error;
      ASSERT_NEAR(bf16_to_float(y[size_t(r * kDim + i)]), exact, tol) << r << " " << i;
    }
  }
}

TEST(Hadamard, AppliedTwiceIsTheIdentity) {
  // H is orthonormal and symmetric: H(Hx) = x up to the two bf16 roundings. The intermediate
  // rounding e (|e_i| <= 2^-8 |y_i|) reaches each output as |(He)_k| <= sum|e| / sqrt(128)
  // <= 2^-8 ||y||_2 = 2^-8 ||x||_2; the final rounding adds 2^-8 |x_k|; fp32 sums are far smaller.
  const std::vector<bf16> x = random_rows(4, 2);
  std::vector<bf16> y(x.size());
  ThreadPool pool(2);
  hadamard_128(HadamardParams{.x = x.data(), .out = y.data(), .rows = 4}, pool);
  hadamard_128(HadamardParams{.x = y.data(), .out = y.data(), .rows = 4}, pool);  // in place
  for (int64_t r = 0; r < 4; ++r) {
    double norm = 0.0;
    for (int i = 0; i < kDim; ++i) norm += std::pow(bf16_to_float(x[size_t(r * kDim + i)]), 2);
    norm = std::sqrt(norm);
    for (int i = 0; i < kDim; ++i) {
      const size_t k = size_t(r * kDim + i);
      const double xk = bf16_to_float(x[k]);
      const double tol = std::ldexp(norm + std::fabs(xk), -8) + 1e-4 * norm;
      ASSERT_NEAR(bf16_to_float(y[k]), xk, tol) << k;
    }
  }
}

TEST(Hadamard, FastMatchesReference) {
  // Both sum the same 128 signed terms in fp32, in different orders (sequential vs. 7-deep
  // butterfly): each sum is within 127 * 2^-24 * sum|x| of the exact one. After scaling, the
  // bf16 rounding can then land one ulp apart (ulp <= 2^-7 |y|).
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    for (int64_t rows : {1, 2, 15, 16, 17, 64, 129}) {
      const std::vector<bf16> x = random_rows(rows, uint32_t(rows));
      std::vector<bf16> ref(x.size());
      hadamard_128_reference({.x = x.data(), .out = ref.data(), .rows = rows});
      test::for_each_simd_target([&] {
        std::vector<bf16> fast = x;
        hadamard_128({.x = fast.data(), .out = fast.data(), .rows = rows}, pool);
        for (int64_t r = 0; r < rows; ++r) {
          const double sum_error =
              2 * 127.0 * std::ldexp(1.0, -24) * abs_sum(x.data() + r * kDim) * 0.0883883476;
          for (int i = 0; i < kDim; ++i) {
            const float rv = bf16_to_float(ref[size_t(r * kDim + i)]);
            const float fv = bf16_to_float(fast[size_t(r * kDim + i)]);
            ASSERT_LE(std::fabs(rv - fv), std::ldexp(std::fabs(rv), -7) + sum_error)
                << "rows " << rows << " row " << r << " element " << i;
          }
        }
      });
    }
  }
}

TEST(Hadamard, RejectsNullBuffers) {
  ThreadPool pool(1);
  try {
    hadamard_128({.x = nullptr, .out = nullptr, .rows = 3}, pool);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("hadamard: x and out must not be null for 3 rows"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace dsa

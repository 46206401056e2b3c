// The single-threaded sgemm of the training ops (ops/gemm/sgemm.h) against its double-precision
// reference, for every transpose combination and shapes at and around the kernel's tile and block
// edges (12×32 tiles, 264-row, 2048-column and 256-deep blocks).
//
// Tolerance per output: an fp32 FMA chain over k products, blocks of 256 added in order, then
// alpha· and + beta·C, is within γ_{k+2} (|alpha| Σ|a b| + |beta c|) of the exact value,
// γ_n = n 2^-24 / (1 - n 2^-24).
//
// The AVX-512 kernel's promise beyond accuracy: a row's (and a column's) result does not depend
// on m, n, or where the element falls in a tile, so results are bit-identical however the
// training ops split a product into blocks.
//
// sgemm_bf16 is held to the same bound against the reference over bf16-rounded operands: their
// products are exact in fp32, so each is added with one rounding, as an FMA would. Against the
// unrounded operands it would be off by about 2^-8 relative, far outside the bound.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/float_formats.h"
#include "ops/gemm/sgemm.h"

namespace dsa {
namespace {

struct Case {
  bool trans_a, trans_b;
  int64_t m, n, k;
  float alpha, beta;
  MatmulPrecision precision = MatmulPrecision::kFp32;
};

float operand(MatmulPrecision precision, float x) {
  return precision == MatmulPrecision::kBf16 ? round_to_bf16(x) : x;
}

std::vector<float> random_values(size_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(count);
  for (float& x : v) x = dist(rng);
  return v;
}

// Stored shapes: A is m×k (or k×m when transposed), B k×n (or n×k); strides padded by 3 so
// that lda, ldb and ldc differ from the widths.
struct Operands {
  int64_t lda, ldb, ldc;
  std::vector<float> a, b, c;
};

Operands make_operands(const Case& t, uint32_t seed) {
  Operands o;
  const int64_t a_rows = t.trans_a ? t.k : t.m, a_cols = t.trans_a ? t.m : t.k;
  const int64_t b_rows = t.trans_b ? t.n : t.k, b_cols = t.trans_b ? t.k : t.n;
  o.lda = a_cols + 3;
  o.ldb = b_cols + 3;
  o.ldc = t.n + 3;
  o.a = random_values(size_t(a_rows * o.lda), seed);
  o.b = random_values(size_t(b_rows * o.ldb), seed + 1);
  o.c = random_values(size_t(t.m * o.ldc), seed + 2);
  return o;
}

double gamma(int64_t n) {
  const double u = std::ldexp(1.0, -24);
  return double(n) * u / (1.0 - double(n) * u);
}

void expect_close_to_reference(const Case& t) {
  SCOPED_TRACE(::testing::Message()
               << "trans_a " << t.trans_a << " trans_b " << t.trans_b << " m " << t.m << " n "
               << t.n << " k " << t.k << " alpha " << t.alpha << " beta " << t.beta << " "
               << matmul_precision_name(t.precision));
  Operands o = make_operands(t, 7);
  std::vector<float> expected = o.c;
  if (t.precision == MatmulPrecision::kBf16) {
    sgemm_bf16_reference(t.trans_a, t.trans_b, t.m, t.n, t.k, t.alpha, o.a.data(), o.lda,
                         o.b.data(), o.ldb, t.beta, expected.data(), o.ldc);
  } else {
    sgemm_reference(t.trans_a, t.trans_b, t.m, t.n, t.k, t.alpha, o.a.data(), o.lda, o.b.data(),
                    o.ldb, t.beta, expected.data(), o.ldc);
  }
  std::vector<float> got = o.c;
  sgemm(t.precision, t.trans_a, t.trans_b, t.m, t.n, t.k, t.alpha, o.a.data(), o.lda, o.b.data(),
        o.ldb, t.beta, got.data(), o.ldc);
  int failures = 0;
  for (int64_t i = 0; i < t.m; ++i) {
    for (int64_t j = 0; j < t.n; ++j) {
      double magnitude = 0.0;
      for (int64_t p = 0; p < t.k; ++p) {
        const float x = operand(
            t.precision, t.trans_a ? o.a[size_t(p * o.lda + i)] : o.a[size_t(i * o.lda + p)]);
        const float y = operand(
            t.precision, t.trans_b ? o.b[size_t(j * o.ldb + p)] : o.b[size_t(p * o.ldb + j)]);
        magnitude += std::fabs(double(x) * double(y));
      }
      const size_t at = size_t(i * o.ldc + j);
      const double bound = gamma(t.k + 2) * (std::fabs(double(t.alpha)) * magnitude +
                                             std::fabs(double(t.beta) * double(o.c[at]))) +
                           1e-30;
      if (std::fabs(double(got[at]) - double(expected[at])) > bound && ++failures <= 5) {
        ADD_FAILURE() << "C[" << i << "][" << j << "] = " << got[at] << ", reference "
                      << expected[at] << ", bound " << bound;
      }
    }
    // Padding between rows is never written.
    for (int64_t j = t.n; j < o.ldc; ++j) {
      ASSERT_EQ(got[size_t(i * o.ldc + j)], o.c[size_t(i * o.ldc + j)]) << "row " << i;
    }
  }
  EXPECT_EQ(failures, 0);
}

const std::vector<std::array<int64_t, 3>> kEdgeShapes = {
    {1, 1, 1},     {12, 32, 256}, {13, 33, 257}, {11, 31, 255},
    {265, 70, 40}, {5, 2049, 9},  {30, 17, 600}, {256, 96, 512}};

TEST(Sgemm, MatchesReferenceForEveryTransposeAndEdge) {
  for (bool trans_a : {false, true}) {
    for (bool trans_b : {false, true}) {
      for (const auto& [m, n, k] : kEdgeShapes) {
        expect_close_to_reference({trans_a, trans_b, m, n, k, 1.0f, 0.0f});
      }
    }
  }
}

TEST(SgemmBf16, MatchesReferenceForEveryTransposeAndEdge) {
  SCOPED_TRACE(sgemm_bf16_implementation());
  for (bool trans_a : {false, true}) {
    for (bool trans_b : {false, true}) {
      for (const auto& [m, n, k] : kEdgeShapes) {
        expect_close_to_reference({trans_a, trans_b, m, n, k, 1.0f, 0.0f, MatmulPrecision::kBf16});
      }
    }
  }
  for (const auto& [alpha, beta] :
       std::vector<std::array<float, 2>>{{1.0f, 1.0f}, {-3.0f, 0.25f}}) {
    expect_close_to_reference({false, true, 27, 45, 301, alpha, beta, MatmulPrecision::kBf16});
  }
}

// The operands really are rounded: bf16 compute differs from fp32 on values that bf16 cannot
// hold, and agrees bit for bit on values it can (every product then exact in both).
TEST(SgemmBf16, RoundsTheOperandsOnly) {
  const int64_t m = 20, n = 40, k = 64;
  std::vector<float> a = random_values(size_t(m * k), 3), b = random_values(size_t(k * n), 4);
  std::vector<float> fp32(size_t(m * n)), bf16(size_t(m * n));
  sgemm(false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, fp32.data(), n);
  sgemm_bf16(false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, bf16.data(), n);
  EXPECT_NE(fp32, bf16);
  // Small integers: every product and partial sum is exact, so any order gives the same bits.
  for (float& x : a) x = std::round(x * 4.0f);
  for (float& x : b) x = std::round(x * 4.0f);
  sgemm(false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, fp32.data(), n);
  sgemm_bf16(false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, bf16.data(), n);
  EXPECT_EQ(fp32, bf16);
}

TEST(Sgemm, AlphaAndBetaFollowBlas) {
  for (const auto& [alpha, beta] : std::vector<std::array<float, 2>>{
           {1.0f, 1.0f}, {0.5f, 1.0f}, {1.0f, -2.0f}, {-3.0f, 0.25f}}) {
    expect_close_to_reference({false, true, 27, 45, 300, alpha, beta});
    expect_close_to_reference({true, false, 27, 45, 300, alpha, beta});
  }
}

TEST(Sgemm, BetaZeroIgnoresWhatCHolds) {
  const int64_t m = 14, n = 35, k = 20;
  const std::vector<float> a = random_values(size_t(m * k), 1), b = random_values(size_t(k * n), 2);
  std::vector<float> c(size_t(m * n), std::numeric_limits<float>::quiet_NaN());
  sgemm(false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n);
  for (float x : c) ASSERT_TRUE(std::isfinite(x));
}

TEST(Sgemm, ZeroDepthScalesC) {
  std::vector<float> c = {1.0f, -2.0f, std::numeric_limits<float>::quiet_NaN()};
  const float unused = 0.0f;
  sgemm(false, false, 1, 3, 0, 1.0f, &unused, 1, &unused, 3, 0.0f, c.data(), 3);
  EXPECT_EQ(c, (std::vector<float>{0.0f, 0.0f, 0.0f}));
  c = {1.0f, -2.0f, 4.0f};
  sgemm(false, false, 1, 3, 0, 1.0f, &unused, 1, &unused, 3, 0.5f, c.data(), 3);
  EXPECT_EQ(c, (std::vector<float>{0.5f, -1.0f, 2.0f}));
}

// One row or column computed alone, or inside a larger call at any offset, gives the same bits.
void expect_rows_independent_of_the_call(MatmulPrecision precision) {
  SCOPED_TRACE(matmul_precision_name(precision));
  const int64_t m = 300, n = 2100, k = 700;
  for (bool trans_a : {false, true}) {
    for (bool trans_b : {false, true}) {
      const Case t{trans_a, trans_b, m, n, k, 1.0f, 0.0f};
      Operands o = make_operands(t, 11);
      std::vector<float> whole(o.c.size());
      sgemm(precision, trans_a, trans_b, m, n, k, 1.0f, o.a.data(), o.lda, o.b.data(), o.ldb, 0.0f,
            whole.data(), o.ldc);
      for (int64_t row : {int64_t(0), int64_t(137), int64_t(299)}) {
        std::vector<float> single(static_cast<size_t>(n));
        const float* a_row = trans_a ? o.a.data() + row : o.a.data() + row * o.lda;
        sgemm(precision, trans_a, trans_b, 1, n, k, 1.0f, a_row, o.lda, o.b.data(), o.ldb, 0.0f,
              single.data(), n);
        for (int64_t j = 0; j < n; ++j) {
          ASSERT_EQ(single[size_t(j)], whole[size_t(row * o.ldc + j)])
              << "trans " << trans_a << trans_b << " row " << row << " col " << j;
        }
      }
      for (int64_t col : {int64_t(5), int64_t(2049)}) {
        std::vector<float> single(static_cast<size_t>(m));
        const float* b_col = trans_b ? o.b.data() + col * o.ldb : o.b.data() + col;
        sgemm(precision, trans_a, trans_b, m, 1, k, 1.0f, o.a.data(), o.lda, b_col, o.ldb, 0.0f,
              single.data(), 1);
        for (int64_t i = 0; i < m; ++i) {
          ASSERT_EQ(single[size_t(i)], whole[size_t(i * o.ldc + col)])
              << "trans " << trans_a << trans_b << " col " << col << " row " << i;
        }
      }
    }
  }
}

TEST(Sgemm, ResultOfARowDoesNotDependOnTheCall) {
  if (std::string(sgemm_implementation()) != "avx512") {
    GTEST_SKIP() << "OpenBLAS picks kernels by shape; the promise is the AVX-512 kernel's";
  }
  expect_rows_independent_of_the_call(MatmulPrecision::kFp32);
}

TEST(SgemmBf16, ResultOfARowDoesNotDependOnTheCall) {
  if (std::string(sgemm_implementation()) != "avx512") {
    GTEST_SKIP() << "the emulation runs through OpenBLAS, which picks kernels by shape";
  }
  expect_rows_independent_of_the_call(MatmulPrecision::kBf16);
}

}  // namespace
}  // namespace dsa

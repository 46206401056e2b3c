#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "ops/norms/norms.h"
#include "simd_targets.h"

namespace dsa {
namespace {

std::vector<bf16> random_bf16(size_t n, uint32_t seed, float mean = 0.0f, float stddev = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(mean, stddev);
  std::vector<bf16> out(n);
  for (auto& v : out) v = float_to_bf16(normal(rng));
  return out;
}

std::vector<float> random_floats(size_t n, uint32_t seed, float mean, float stddev) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(mean, stddev);
  std::vector<float> out(n);
  for (auto& v : out) v = normal(rng);
  return out;
}

// Fast vs reference: the statistic differs only by fp32 summation order (relative error
// <= D * 2^-24, a few 1e-4 at most for D = 7168, halved by the square root), the output
// element by contraction of its last multiply-add (1 fp32 ulp). Both are rounded to bf16, so
// the results may straddle a rounding boundary: at most one bf16 ulp apart (<= 2^-7 relative),
// plus the statistic's relative error.
void expect_bf16_close(const std::vector<bf16>& ref, const std::vector<bf16>& fast, int64_t dim,
                       const char* what) {
  const double stat_error = double(dim) * std::ldexp(1.0, -24);
  for (size_t i = 0; i < ref.size(); ++i) {
    const double r = bf16_to_float(ref[i]), f = bf16_to_float(fast[i]);
    ASSERT_LE(std::fabs(r - f), (std::ldexp(1.0, -7) + stat_error) * std::fabs(r) + 1e-30)
        << what << " element " << i << " (dim " << dim << ")";
  }
}

TEST(RmsNorm, ReferenceMatchesTheFormulaInDouble) {
  const int64_t dim = 64;
  const std::vector<bf16> x = random_bf16(dim, 1);
  const std::vector<float> weight = random_floats(dim, 2, 1.0f, 0.2f);
  std::vector<bf16> out(dim);
  rms_norm_reference(
      {.x = x.data(), .weight = weight.data(), .out = out.data(), .tokens = 1, .dim = dim});
  double mean_square = 0.0;
  for (auto v : x) mean_square += std::pow(bf16_to_float(v), 2) / dim;
  for (int64_t i = 0; i < dim; ++i) {
    const double expected = weight[i] * bf16_to_float(x[i]) / std::sqrt(mean_square + 1e-6);
    // bf16 output rounding: half an ulp <= 2^-8 relative; fp32 steps add ~1e-6 relative.
    EXPECT_NEAR(bf16_to_float(out[i]), expected,
                std::fabs(expected) * (std::ldexp(1.0, -8) + 1e-6));
  }
}

TEST(RmsNorm, FusedResidualNormalizesTheUnroundedSum) {
  // Sums of two bf16 values usually need more than 8 significant bits: the residual passed on is
  // rounded to bf16, the normalized output is computed from the exact fp32 sum (§2.5). Rebuild
  // both candidates with the same fp32 steps and check the output picks the unrounded one.
  const int64_t dim = 256;
  const std::vector<bf16> x = random_bf16(dim, 11);
  const std::vector<bf16> residual = random_bf16(dim, 12, 0.0f, 3.0f);
  const std::vector<float> weight = random_floats(dim, 13, 1.0f, 0.2f);
  std::vector<bf16> out(dim), residual_out(dim);
  rms_norm_reference({.x = x.data(),
                      .residual = residual.data(),
                      .weight = weight.data(),
                      .out = out.data(),
                      .residual_out = residual_out.data(),
                      .tokens = 1,
                      .dim = dim});
  std::vector<float> sum(dim);
  double sum_squares = 0.0;
  for (int64_t i = 0; i < dim; ++i) {
    sum[i] = bf16_to_float(x[i]) + bf16_to_float(residual[i]);  // exact in fp32
    sum_squares += double(sum[i]) * sum[i];
  }
  const float rms_inv = 1.0f / std::sqrt(float(sum_squares / dim) + 1e-6f);
  int outputs_that_differ = 0;
  for (int64_t i = 0; i < dim; ++i) {
    ASSERT_EQ(residual_out[i].bits, float_to_bf16(sum[i]).bits) << i;
    const float from_sum = round_to_bf16(weight[i] * (sum[i] * rms_inv));
    const float from_rounded = round_to_bf16(weight[i] * (round_to_bf16(sum[i]) * rms_inv));
    ASSERT_EQ(bf16_to_float(out[i]), from_sum) << i;
    outputs_that_differ += from_sum != from_rounded;
  }
  EXPECT_GT(outputs_that_differ, 0) << "the test data must exercise the rounding point";
}

TEST(RmsNorm, FastMatchesReference) {
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    for (int64_t dim : {1, 7, 8, 15, 16, 17, 128, 512, 1536, 7168}) {
      for (bool with_residual : {false, true}) {
        const int64_t tokens = 5;
        const size_t n = size_t(tokens * dim);
        const std::vector<bf16> x = random_bf16(n, uint32_t(dim));
        const std::vector<bf16> residual = random_bf16(n, uint32_t(dim) + 1, 0.5f, 3.0f);
        const std::vector<float> weight = random_floats(size_t(dim), 3, 1.0f, 0.3f);
        std::vector<bf16> ref(n), ref_residual(n);
        RmsNormParams params{.x = x.data(),
                             .residual = with_residual ? residual.data() : nullptr,
                             .weight = weight.data(),
                             .out = ref.data(),
                             .residual_out = with_residual ? ref_residual.data() : nullptr,
                             .tokens = tokens,
                             .dim = dim};
        rms_norm_reference(params);
        test::for_each_simd_target([&] {
          std::vector<bf16> fast(n), fast_residual(n);
          params.out = fast.data();
          params.residual_out = with_residual ? fast_residual.data() : nullptr;
          rms_norm(params, pool);
          expect_bf16_close(ref, fast, dim, "out");
          // The residual is one exact-input fp32 add and one rounding: bit-identical.
          if (with_residual) {
            for (size_t i = 0; i < n; ++i) ASSERT_EQ(ref_residual[i].bits, fast_residual[i].bits);
          }
        });
      }
    }
  }
}

TEST(LayerNorm, ReferenceMatchesTheFormulaInDouble) {
  const int64_t dim = 128;
  const std::vector<bf16> x = random_bf16(dim, 4, 2.0f, 3.0f);
  const std::vector<float> weight = random_floats(dim, 5, 1.0f, 0.2f);
  const std::vector<float> bias = random_floats(dim, 6, 0.0f, 0.1f);
  std::vector<bf16> out(dim);
  layer_norm_reference({.x = x.data(),
                        .weight = weight.data(),
                        .bias = bias.data(),
                        .out = out.data(),
                        .tokens = 1,
                        .dim = dim});
  double mean = 0.0, variance = 0.0;
  for (auto v : x) mean += bf16_to_float(v) / dim;
  for (auto v : x) variance += std::pow(bf16_to_float(v) - mean, 2) / dim;  // biased
  for (int64_t i = 0; i < dim; ++i) {
    const double expected =
        (bf16_to_float(x[i]) - mean) / std::sqrt(variance + 1e-6) * weight[i] + bias[i];
    // bf16 rounding (2^-8 relative) plus fp32 cancellation in x - mean (2^-24 |x| / std).
    EXPECT_NEAR(bf16_to_float(out[i]), expected, std::fabs(expected) * std::ldexp(1.0, -8) + 1e-5);
  }
}

TEST(LayerNorm, FastMatchesReference) {
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    for (int64_t dim : {1, 3, 16, 31, 128, 7168}) {
      const int64_t tokens = 9;
      const size_t n = size_t(tokens * dim);
      const std::vector<bf16> x = random_bf16(n, uint32_t(dim), 1.0f, 2.0f);
      const std::vector<float> weight = random_floats(size_t(dim), 7, 1.0f, 0.3f);
      const std::vector<float> bias = random_floats(size_t(dim), 8, 0.0f, 0.5f);
      std::vector<bf16> ref(n);
      LayerNormParams params{.x = x.data(),
                             .weight = weight.data(),
                             .bias = bias.data(),
                             .out = ref.data(),
                             .tokens = tokens,
                             .dim = dim};
      layer_norm_reference(params);
      test::for_each_simd_target([&] {
        std::vector<bf16> fast(n);
        params.out = fast.data();
        layer_norm(params, pool);
        // The statistics differ by fp32 summation order: mean by <= D u mean|x| absolute,
        // rstd by <= D u relative (u = 2^-24); the last step by FMA contraction (u of its terms).
        // The bias add may cancel the normalized term, so these errors are absolute; one bf16
        // ulp (2^-7 relative) of the result on top covers the final rounding.
        const double u = std::ldexp(1.0, -24);
        for (int64_t t = 0; t < tokens; ++t) {
          double mean = 0.0, mean_abs = 0.0, variance = 0.0;
          for (int64_t i = 0; i < dim; ++i) {
            mean += bf16_to_float(x[size_t(t * dim + i)]) / double(dim);
            mean_abs += std::fabs(bf16_to_float(x[size_t(t * dim + i)])) / double(dim);
          }
          for (int64_t i = 0; i < dim; ++i) {
            variance += std::pow(bf16_to_float(x[size_t(t * dim + i)]) - mean, 2) / double(dim);
          }
          const double rstd = 1.0 / std::sqrt(variance + 1e-6);
          for (int64_t i = 0; i < dim; ++i) {
            const size_t k = size_t(t * dim + i);
            const double centered = std::fabs(bf16_to_float(x[k]) - mean);
            const double stat_error =
                std::fabs(weight[i]) * rstd * double(dim) * u * (mean_abs + centered);
            const double last_step =
                u * (centered * rstd * std::fabs(weight[i]) + std::fabs(bias[i]));
            const double r = bf16_to_float(ref[k]), f = bf16_to_float(fast[k]);
            ASSERT_LE(std::fabs(r - f), std::ldexp(std::fabs(r), -7) + 2 * (stat_error + last_step))
                << "element " << k << " dim " << dim;
          }
        }
      });
    }
  }
}

TEST(Norms, RejectBadParams) {
  ThreadPool pool(1);
  std::vector<bf16> x(8);
  std::vector<float> w(8);
  try {
    rms_norm({.x = x.data(),
              .residual = x.data(),
              .weight = w.data(),
              .out = x.data(),
              .tokens = 1,
              .dim = 8},
             pool);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rms_norm: a residual is given but residual_out is null"),
              std::string::npos)
        << e.what();
  }
  try {
    layer_norm({.x = x.data(), .weight = w.data(), .out = x.data(), .tokens = 1, .dim = 8}, pool);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer_norm: x, weight, bias and out must be set"),
              std::string::npos)
        << e.what();
  }
  try {
    layer_norm_reference({.x = x.data(),
                          .weight = w.data(),
                          .bias = w.data(),
                          .out = x.data(),
                          .tokens = 1,
                          .dim = 0});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("dim > 0, got tokens 1 dim 0"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace dsa

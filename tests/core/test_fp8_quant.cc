// act_quant (DeepSeek's per-128 activation quantization) and FP8 weight block (de)quantization.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/fp8_quant.h"

namespace dsa {
namespace {

std::vector<float> random_bf16_values(size_t n, float spread, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, spread);
  std::vector<float> values(n);
  for (auto& v : values) v = round_to_bf16(normal(rng));
  return values;
}

TEST(ActQuantScale, Ue8m0IsTheSmallestPowerOfTwoAtOrAboveAmaxOver448) {
  for (float amax : {1e-4f, 3e-3f, 0.5f, 1.0f, 448.0f, 449.0f, 1000.0f, 65504.0f, 3.0e5f}) {
    const float scale = act_quant_scale(amax, ScaleFormat::kUe8m0);
    const double target = double(amax * (1.0f / 448.0f));  // fp32 product, as the kernel forms it
    int exponent;
    EXPECT_EQ(std::frexp(scale, &exponent), 0.5f) << "not a power of two: " << scale;
    EXPECT_GE(double(scale), target) << "amax " << amax;
    EXPECT_LT(double(scale) / 2, target) << "amax " << amax;
  }
  // 448 * 2^k maps to exactly 2^k: no rounding up when amax/448 is already a power of two.
  EXPECT_EQ(act_quant_scale(448.0f, ScaleFormat::kUe8m0), 1.0f);
  EXPECT_EQ(act_quant_scale(896.0f, ScaleFormat::kUe8m0), 2.0f);
}

TEST(ActQuantScale, AmaxIsFlooredAt1e4) {
  const float floor_scale = act_quant_scale(1e-4f, ScaleFormat::kUe8m0);
  EXPECT_EQ(act_quant_scale(0.0f, ScaleFormat::kUe8m0), floor_scale);
  EXPECT_EQ(act_quant_scale(1e-9f, ScaleFormat::kUe8m0), floor_scale);
  EXPECT_EQ(floor_scale, std::ldexp(1.0f, -22));  // 1e-4/448 = 2.23e-7 -> 2^-22 = 2.38e-7
  EXPECT_EQ(act_quant_scale(0.0f, ScaleFormat::kPlain), 1e-4f * (1.0f / 448.0f));
}

TEST(ActQuantScale, PlainMultipliesByTheFloatReciprocal) {
  for (float amax : {0.3f, 1.0f, 7.0f, 123.456f}) {
    EXPECT_EQ(act_quant_scale(amax, ScaleFormat::kPlain), amax * (1.0f / 448.0f));
  }
}

TEST(ActQuant, Ue8m0CodesAreExactlyTheRoundedQuotients) {
  const std::vector<float> x = random_bf16_values(512, 3.0f, 1);
  std::vector<fp8_e4m3> codes(512);
  std::vector<float> scales(4);
  act_quant_row(x, ScaleFormat::kUe8m0, codes, scales);
  for (size_t group = 0; group < 4; ++group) {
    float amax = 0;
    for (size_t i = 0; i < 128; ++i) amax = std::max(amax, std::fabs(x[group * 128 + i]));
    EXPECT_EQ(scales[group], act_quant_scale(amax, ScaleFormat::kUe8m0));
    for (size_t i = group * 128; i < (group + 1) * 128; ++i) {
      // Power-of-two scale: x / s is exact, so the code is the fp8 rounding of that quotient.
      ASSERT_EQ(codes[i].bits, float_to_fp8(x[i] / scales[group]).bits) << "element " << i;
      ASSERT_FALSE(std::isnan(fp8_to_float(codes[i])));
    }
  }
}

TEST(ActQuant, RoundTripErrorIsWithinHalfAnFp8Step) {
  for (ScaleFormat format : {ScaleFormat::kUe8m0, ScaleFormat::kPlain}) {
    const std::vector<float> x = random_bf16_values(1024, 0.7f, 2);
    std::vector<float> back(x.size());
    act_quant_round_trip(x, format, back);
    for (size_t group = 0; group < x.size() / 128; ++group) {
      float amax = 0;
      for (size_t i = 0; i < 128; ++i) amax = std::max(amax, std::fabs(x[group * 128 + i]));
      const float scale = act_quant_scale(amax, format);
      for (size_t i = group * 128; i < (group + 1) * 128; ++i) {
        // e4m3 keeps 3 mantissa bits: relative error <= 2^-4 for normals; below the normal range
        // (2^-6 in code units) the absolute error is half a subnormal step, 2^-10 code units.
        const float bound = std::max(std::fabs(x[i]) * 0.0625f, scale * std::ldexp(1.0f, -10));
        ASSERT_LE(std::fabs(back[i] - x[i]), bound * 1.0001f) << "element " << i;
      }
    }
  }
}

TEST(ActQuant, LargestElementMapsToTheTopOfTheRangeWithoutNan) {
  std::vector<float> x(128, 0.0f);
  x[5] = -300.0f;
  x[77] = 299.0f;
  std::vector<fp8_e4m3> codes(128);
  float scale;
  act_quant_row(x, ScaleFormat::kPlain, codes, std::span<float>(&scale, 1));
  EXPECT_EQ(fp8_to_float(codes[5]), -448.0f);  // clamped at 448 even if x/s rounds a bit above
  EXPECT_FALSE(std::isnan(fp8_to_float(codes[77])));
  act_quant_row(x, ScaleFormat::kUe8m0, codes, std::span<float>(&scale, 1));
  EXPECT_EQ(scale, 1.0f);  // 300/448 < 1: the power of two above is 1
  EXPECT_EQ(fp8_to_float(codes[5]), -288.0f);  // 300 rounds to 288 in e4m3 (256 + 32 steps)
}

TEST(WeightFp8, DequantizeUsesTheScaleOfEachBlock) {
  // 130 x 260 has partial blocks on both axes: scales are [2, 3].
  const int64_t rows = 130, cols = 260;
  ASSERT_EQ(weight_scale_rows(rows), 2);
  ASSERT_EQ(weight_scale_cols(cols), 3);
  std::vector<fp8_e4m3> codes(rows * cols);
  std::mt19937 rng(3);
  for (auto& c : codes) c.bits = uint8_t(rng() % 256 & 0xF7);  // avoid NaN codes 0x7F/0xFF
  const std::vector<float> scales = {0.5f, 2.0f, 0.25f, 8.0f, 1.5f, 3.0f};
  std::vector<float> out(rows * cols);
  dequantize_weight_fp8(codes.data(), scales.data(), rows, cols, out.data());
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      const float expected = fp8_e4m3_value(codes[i * cols + j].bits) * scales[(i / 128) * 3 + j / 128];
      ASSERT_EQ(out[i * cols + j], expected) << i << "," << j;
    }
  }
}

TEST(WeightFp8, QuantizeThenDequantizeIsCloseAndScalesAreBlockwise) {
  const int64_t rows = 200, cols = 129;
  std::vector<float> w = random_bf16_values(rows * cols, 0.02f, 4);
  for (int64_t j = 0; j < cols; ++j) w[150 * cols + j] = 0.0f;  // rows 128..199 x cols 0..127 not all zero
  std::vector<fp8_e4m3> codes(rows * cols);
  std::vector<float> scales(weight_scale_rows(rows) * weight_scale_cols(cols));
  quantize_weight_fp8(w.data(), rows, cols, codes.data(), scales.data());
  std::vector<float> back(rows * cols);
  dequantize_weight_fp8(codes.data(), scales.data(), rows, cols, back.data());
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      const float scale = scales[(i / 128) * weight_scale_cols(cols) + j / 128];
      const float bound = std::max(std::fabs(w[i * cols + j]) * 0.0625f, scale * std::ldexp(1.0f, -10));
      ASSERT_LE(std::fabs(back[i * cols + j] - w[i * cols + j]), bound * 1.0001f);
    }
  }
}

TEST(WeightFp8, AllZeroBlockGetsUnitScale) {
  std::vector<float> w(128 * 128, 0.0f);
  std::vector<fp8_e4m3> codes(w.size());
  float scale = -1;
  quantize_weight_fp8(w.data(), 128, 128, codes.data(), &scale);
  EXPECT_EQ(scale, 1.0f);
  for (auto c : codes) ASSERT_EQ(c.bits, 0);
}

}  // namespace
}  // namespace dsa

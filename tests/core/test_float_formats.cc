// Conversions to bf16, fp16 and fp8 e4m3fn against independent references: exhaustive over all fp8
// codes, nearest-value search over the code table for fp8 rounding, ties at every midpoint.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "core/float_formats.h"

namespace dsa {
namespace {

// Independent fp8 reference: scan all non-negative codes for the nearest value; ties go to the
// even code. 480 (the value code 0x7F would have if it were finite) stands in for NaN, so that
// anything rounding up past 448 becomes NaN, as in PyTorch.
uint8_t nearest_fp8_code(float x) {
  if (std::isnan(x) || std::fabs(x) >= 480.0f) return std::signbit(x) ? 0xFF : 0x7F;
  const float magnitude = std::fabs(x);
  int best = 0;
  double best_distance = std::numeric_limits<double>::infinity();
  for (int code = 0; code <= 0x7F; ++code) {
    const double value = code == 0x7F ? 480.0 : double(fp8_e4m3_value(uint8_t(code)));
    const double distance = std::fabs(value - double(magnitude));
    if (distance < best_distance || (distance == best_distance && code % 2 == 0)) {
      best = code;
      best_distance = distance;
    }
  }
  return uint8_t(best | (std::signbit(x) ? 0x80 : 0));
}

TEST(Fp8, DecodesEveryCodeAsTheFormatDefines) {
  EXPECT_EQ(fp8_e4m3_value(0x00), 0.0f);
  EXPECT_TRUE(std::signbit(fp8_e4m3_value(0x80)));
  EXPECT_EQ(fp8_e4m3_value(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(fp8_e4m3_value(0x07), 7.0f * std::ldexp(1.0f, -9));
  EXPECT_EQ(fp8_e4m3_value(0x08), std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_EQ(fp8_e4m3_value(0x38), 1.0f);
  EXPECT_EQ(fp8_e4m3_value(0x7E), 448.0f);
  EXPECT_EQ(fp8_e4m3_value(0xFE), -448.0f);
  EXPECT_TRUE(std::isnan(fp8_e4m3_value(0x7F)));
  EXPECT_TRUE(std::isnan(fp8_e4m3_value(0xFF)));
  for (int code = 0; code < 256; ++code) {
    const float from_table = fp8_to_float(fp8_e4m3{uint8_t(code)});
    const float from_formula = fp8_e4m3_value(uint8_t(code));
    EXPECT_EQ(std::bit_cast<uint32_t>(from_table), std::bit_cast<uint32_t>(from_formula))
        << "table and formula disagree at code " << code;
  }
}

TEST(Fp8, AllCodesRoundTrip) {
  for (int code = 0; code < 256; ++code) {
    const float value = fp8_to_float(fp8_e4m3{uint8_t(code)});
    EXPECT_EQ(float_to_fp8(value).bits, code) << "code " << code << " value " << value;
  }
}

TEST(Fp8, MidpointsRoundToEven) {
  // Between every pair of neighbouring finite codes: the midpoint goes to the even code, and the
  // floats just below and above it go down and up.
  for (int code = 0; code < 0x7E; ++code) {
    const float low = fp8_e4m3_value(uint8_t(code));
    const float high = fp8_e4m3_value(uint8_t(code + 1));
    const float mid = (low + high) / 2;  // exact: both have few significant bits
    const int even = code % 2 == 0 ? code : code + 1;
    EXPECT_EQ(float_to_fp8(mid).bits, even) << "midpoint of codes " << code << ", " << code + 1;
    EXPECT_EQ(float_to_fp8(std::nextafter(mid, 0.0f)).bits, code);
    EXPECT_EQ(float_to_fp8(std::nextafter(mid, 1e9f)).bits, code + 1);
    EXPECT_EQ(float_to_fp8(-mid).bits, even | 0x80);
  }
}

TEST(Fp8, SaturatesIntoNanLikePyTorch) {
  EXPECT_EQ(float_to_fp8(448.0f).bits, 0x7E);
  EXPECT_EQ(float_to_fp8(464.0f).bits, 0x7E);  // midpoint 448|480: ties to even code 0x7E
  EXPECT_EQ(float_to_fp8(470.0f).bits, 0x7F);  // rounds up to the NaN code
  EXPECT_EQ(float_to_fp8(480.0f).bits, 0x7F);
  EXPECT_EQ(float_to_fp8(1e30f).bits, 0x7F);
  EXPECT_EQ(float_to_fp8(-1e30f).bits, 0xFF);
  EXPECT_EQ(float_to_fp8(std::numeric_limits<float>::infinity()).bits, 0x7F);
  EXPECT_EQ(float_to_fp8(-std::numeric_limits<float>::infinity()).bits, 0xFF);
  EXPECT_EQ(float_to_fp8(std::numeric_limits<float>::quiet_NaN()).bits, 0x7F);
  EXPECT_EQ(float_to_fp8(std::ldexp(1.0f, -10)).bits, 0x00);  // half the smallest subnormal: even
  EXPECT_EQ(float_to_fp8(std::ldexp(1.0f, -140)).bits, 0x00);  // float subnormal input
}

TEST(Fp8, MatchesNearestValueSearch) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> exponent(-14.0f, 9.5f);
  std::uniform_int_distribution<int> sign(0, 1);
  for (int i = 0; i < 20000; ++i) {
    const float x = (sign(rng) ? -1.0f : 1.0f) * std::exp2(exponent(rng));
    ASSERT_EQ(float_to_fp8(x).bits, nearest_fp8_code(x)) << "x = " << x;
  }
}

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f).bits, 0x3F80);
  // 1 + 2^-8 lies exactly halfway between 1 and 1 + 2^-7: ties to the even mantissa (1.0).
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8)).bits, 0x3F80);
  // 1 + 3*2^-8 is halfway between 1+2^-7 (odd) and 1+2^-6 (even): goes up.
  EXPECT_EQ(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)).bits, 0x3F82);
  EXPECT_EQ(float_to_bf16(std::nextafter(1.0f + std::ldexp(1.0f, -8), 2.0f)).bits, 0x3F81);
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::max()).bits, 0x7F80);  // rounds to inf
  EXPECT_EQ(float_to_bf16(-std::numeric_limits<float>::infinity()).bits, 0xFF80);
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::quiet_NaN()).bits, 0x7FC0);
  EXPECT_EQ(float_to_bf16(-std::numeric_limits<float>::quiet_NaN()).bits, 0x7FC0);
}

TEST(Bf16, AllFiniteValuesRoundTripAndNeighboursRound) {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const float value = bf16_to_float(bf16{uint16_t(bits)});
    if (std::isnan(value)) continue;
    ASSERT_EQ(float_to_bf16(value).bits, bits);
    // The float just above a value (toward larger magnitude) still rounds back to it.
    const float above = std::bit_cast<float>(std::bit_cast<uint32_t>(value) + 1);
    if (!std::isinf(value)) ASSERT_EQ(float_to_bf16(above).bits, bits);
  }
}

TEST(Fp16, MatchesCompilerConversion) {
  // _Float16 conversion is IEEE round-to-nearest-even on x86-64 (an independent implementation).
  std::mt19937 rng(11);
  std::uniform_int_distribution<uint32_t> any_bits;
  for (int i = 0; i < 200000; ++i) {
    const float x = std::bit_cast<float>(any_bits(rng));
    if (std::isnan(x)) continue;
    const _Float16 expected = static_cast<_Float16>(x);
    ASSERT_EQ(float_to_fp16(x).bits, std::bit_cast<uint16_t>(expected)) << "x = " << x;
  }
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const _Float16 h = std::bit_cast<_Float16>(uint16_t(bits));
    const float expected = static_cast<float>(h);
    const float actual = fp16_to_float(fp16{uint16_t(bits)});
    if (std::isnan(expected)) {
      ASSERT_TRUE(std::isnan(actual));
    } else {
      ASSERT_EQ(actual, expected) << "bits " << bits;
      ASSERT_EQ(float_to_fp16(actual).bits, bits);
    }
  }
}

TEST(Fp16, TiesAndLimits) {
  EXPECT_EQ(float_to_fp16(65504.0f).bits, 0x7BFF);
  EXPECT_EQ(float_to_fp16(65520.0f).bits, 0x7C00);  // halfway to 65536: ties to even = inf
  EXPECT_EQ(float_to_fp16(std::ldexp(1.0f, -25)).bits, 0x0000);  // half the smallest subnormal
  EXPECT_EQ(float_to_fp16(std::ldexp(3.0f, -26)).bits, 0x0001);
  EXPECT_EQ(float_to_fp16(std::numeric_limits<float>::quiet_NaN()).bits, 0x7E00);
  EXPECT_EQ(float_to_fp16(-std::numeric_limits<float>::quiet_NaN()).bits, 0xFE00);
}

}  // namespace
}  // namespace dsa

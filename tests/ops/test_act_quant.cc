// act_quant_rows (SIMD, on the pool) against the scalar act_quant_padded_row, bit for bit, on
// every SIMD target: random rows of every length around the vector width and the 128-group, and
// sweeps of the values that decide the rounding (every e4m3 code, the midpoints between codes and
// their neighbours, the subnormal range, the clamp at 448, zeros, denormals, inf and NaN).
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "core/float_formats.h"
#include "core/fp8_quant.h"
#include "core/thread_pool.h"
#include "ops/gemm/gemm.h"
#include "simd_targets.h"

namespace dsa {
namespace {

// Equal bits, or both NaN (a NaN's payload is not part of the contract).
bool same_value(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) ||
         std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b);
}

void expect_matches_scalar(const std::vector<float>& x, int64_t m, int64_t k, ScaleFormat format,
                           int threads) {
  const int64_t blocks = weight_scale_cols(k);
  std::vector<float> codes(size_t(m * k), -1.0f), scales(size_t(m * blocks), -1.0f);
  ThreadPool pool(threads);
  act_quant_rows(x.data(), m, k, format, codes.data(), scales.data(), pool);
  std::vector<float> want_codes(static_cast<size_t>(k)), want_scales(static_cast<size_t>(blocks));
  int64_t mismatches = 0;
  for (int64_t r = 0; r < m; ++r) {
    act_quant_padded_row(x.data() + r * k, k, format, want_codes.data(), want_scales.data());
    for (int64_t b = 0; b < blocks; ++b) {
      if (!same_value(scales[r * blocks + b], want_scales[b]) && mismatches++ < 5) {
        ADD_FAILURE() << "row " << r << " scale " << b << ": " << scales[r * blocks + b]
                      << " != " << want_scales[b];
      }
    }
    for (int64_t i = 0; i < k; ++i) {
      if (!same_value(codes[r * k + i], want_codes[i]) && mismatches++ < 5) {
        ADD_FAILURE() << "row " << r << " element " << i << " x=" << x[r * k + i] << ": "
                      << codes[r * k + i] << " != " << want_codes[i];
      }
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(ActQuantRows, RandomRowsOfEveryLength) {
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (const int64_t k : {1, 15, 16, 17, 31, 127, 128, 129, 200, 256, 1000, 7168}) {
    const int64_t m = 5;
    std::vector<float> x(size_t(m * k));
    // Groups of very different magnitude, bf16 values as the model feeds them.
    for (int64_t i = 0; i < m * k; ++i) {
      x[i] = round_to_bf16(dist(rng) * std::ldexp(1.0f, int((i / 128) % 23) - 11));
    }
    for (const ScaleFormat format : {ScaleFormat::kUe8m0, ScaleFormat::kPlain}) {
      SCOPED_TRACE(testing::Message() << "k=" << k << " plain=" << (format == ScaleFormat::kPlain));
      test::for_each_simd_target([&] {
        expect_matches_scalar(x, m, k, format, 1);
        expect_matches_scalar(x, m, k, format, 3);
      });
    }
  }
}

// Rows of 128 whose first element is 448, so the scale is (about) 1 and the other 127 values land
// on the e4m3 grid where the rounding is decided.
std::vector<float> rows_at_unit_scale(const std::vector<float>& values) {
  std::vector<float> x;
  for (size_t i = 0; i < values.size(); ++i) {
    if (x.size() % 128 == 0) x.push_back(448.0f);
    x.push_back(values[i]);
  }
  while (x.size() % 128 != 0) x.push_back(0.0f);
  return x;
}

TEST(ActQuantRows, RoundsEveryCodeMidpointAndSubnormalAsTheScalarPath) {
  std::vector<float> values;
  for (int code = 0; code < 256; ++code) {
    const float v = fp8_to_float(fp8_e4m3{uint8_t(code)});
    const float next =
        fp8_to_float(fp8_e4m3{uint8_t(code + 1 == 0x7F || code + 1 == 0xFF ? code : code + 1)});
    if (std::isnan(v)) continue;
    const float mid = v + (next - v) / 2;  // exact: the midpoint of two e4m3 codes is a float
    for (const float u : {v, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f),
                          std::nextafter(mid, -1e9f)}) {
      values.push_back(u);
      values.push_back(-u);
    }
  }
  // A fine sweep of magnitudes from 2^-13 to past 480 (every 101st float).
  for (uint32_t bits = std::bit_cast<uint32_t>(0x1p-13f); bits < std::bit_cast<uint32_t>(500.0f);
       bits += 101) {
    values.push_back(std::bit_cast<float>(bits));
    values.push_back(-std::bit_cast<float>(bits));
  }
  const float inf = std::numeric_limits<float>::infinity();
  for (const float special :
       {0.0f, -0.0f, 1e-40f, -1e-40f, 0x1p-10f, 0x1p-11f, 448.0f, 464.0f, 470.0f, -470.0f, 1e30f}) {
    values.push_back(special);
  }
  const std::vector<float> x = rows_at_unit_scale(values);
  const int64_t m = int64_t(x.size()) / 128;
  for (const ScaleFormat format : {ScaleFormat::kUe8m0, ScaleFormat::kPlain}) {
    test::for_each_simd_target([&] { expect_matches_scalar(x, m, 128, format, 2); });
  }
  // inf and NaN in a group: the scalar path's amax ignores NaN and an inf makes the scale inf.
  std::vector<float> odd = rows_at_unit_scale({1.0f, std::nanf(""), -3.0f, 2.5f});
  odd.resize(256, 0.5f);
  odd[200] = inf;
  odd[201] = -inf;
  test::for_each_simd_target([&] { expect_matches_scalar(odd, 2, 128, ScaleFormat::kUe8m0, 1); });
}

}  // namespace
}  // namespace dsa

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "ops/rope/rope.h"
#include "simd_targets.h"

namespace dsa {
namespace {

std::vector<bf16> random_bf16(size_t n, uint32_t seed, float scale = 4.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<bf16> out(n);
  for (auto& v : out) v = float_to_bf16(normal(rng));
  return out;
}

TEST(YarnRope, FrequenciesMatchDsaReferenceNumbers) {
  // dsa-reference §2.7 lists fp32 values with 7 significant digits; 5e-7 relative covers the
  // printed precision (fp32 itself is exact to 6e-8).
  const std::vector<float> freqs = yarn_rope_frequencies(YarnRopeConfig{});
  ASSERT_EQ(freqs.size(), 32u);
  const std::pair<int, double> expected[] = {
      {0, 1.0},          {10, 5.623413e-2}, {11, 3.900693e-2}, {16, 5.500000e-3},
      {22, 1.778279e-4}, {23, 3.333804e-5}, {31, 3.333804e-6}};
  for (auto [i, value] : expected) EXPECT_NEAR(freqs[i], value, 5e-7 * value) << "pair " << i;
}

TEST(YarnRope, FrequenciesFollowTheRampFormula) {
  // Direct formula in double: low = 10, high = 23 for the V3.2 config (§2.7); dims <= 10 keep
  // base^(-2i/64), dims >= 23 are divided by 40, the ramp interpolates linearly in between.
  // fp32 evaluation differs from this by a few ulps: 1e-6 relative.
  const std::vector<float> freqs = yarn_rope_frequencies(YarnRopeConfig{});
  for (int i = 0; i < 32; ++i) {
    const double base = std::pow(10000.0, -2.0 * i / 64.0);
    const double ramp = std::clamp((i - 10.0) / 13.0, 0.0, 1.0);
    const double expected = base / 40.0 * ramp + base * (1.0 - ramp);
    EXPECT_NEAR(freqs[i], expected, 1e-6 * expected) << "pair " << i;
  }
}

TEST(YarnRope, NoCorrectionWhenTheTableFitsTheOriginalContext) {
  YarnRopeConfig config;
  config.max_seq_len = 4096;
  const std::vector<float> freqs = yarn_rope_frequencies(config);
  EXPECT_NEAR(freqs[31], std::pow(10000.0, -62.0 / 64.0), 1e-6 * freqs[31]);
}

TEST(YarnRope, TableHoldsCosSinOfPositionTimesFrequency) {
  YarnRopeConfig config;
  config.max_seq_len = 5000;
  const RopeTable table(config);
  const std::vector<float> freqs = yarn_rope_frequencies(config);
  ASSERT_EQ(table.positions(), 5000);
  ASSERT_EQ(table.pairs(), 32);
  for (int64_t p : {0, 1, 7, 4095, 4999}) {
    for (int i = 0; i < 32; ++i) {
      // The angle is fp32(p) * freq in fp32 (up to 2^-24 relative of an angle below 5000 rad =
      // 3e-4 absolute); cos/sin of that fp32 angle are exact to ~1 ulp.
      const double angle = double(float(p) * freqs[i]);
      EXPECT_NEAR(table.cos(p)[i], std::cos(angle), 2e-7) << p << " " << i;
      EXPECT_NEAR(table.sin(p)[i], std::sin(angle), 2e-7) << p << " " << i;
    }
  }
  EXPECT_EQ(table.cos(0)[5], 1.0f);
  EXPECT_EQ(table.sin(0)[5], 0.0f);
}

TEST(YarnRope, RejectsBadConfig) {
  YarnRopeConfig config;
  config.rope_dim = 63;
  try {
    RopeTable table(config);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rope_dim must be even"), std::string::npos) << e.what();
  }
}

// A hand-written rotation of one pair, in double, rounded to bf16 at the end.
float rotate_first(float a, float b, float c, float s) {
  return float(double(a) * c - double(b) * s);
}
float rotate_second(float a, float b, float c, float s) {
  return float(double(a) * s + double(b) * c);
}

class RopeLayouts : public ::testing::Test {
 protected:
  YarnRopeConfig config_ = [] {
    YarnRopeConfig c;
    c.max_seq_len = 8192;
    return c;
  }();
  RopeTable table_{config_};
};

TEST_F(RopeLayouts, InterleavedRotatesAdjacentPairsOfTheLastDims) {
  // MLA q: one head of 192 dims, RoPE on [128, 192), pairs (128 + 2i, 128 + 2i + 1).
  std::vector<bf16> x = random_bf16(192, 1);
  const std::vector<bf16> before = x;
  const int64_t position = 4321;
  RopeParams params{.x = x.data(),
                    .tokens = 1,
                    .heads = 1,
                    .row = 192,
                    .offset = 128,
                    .start_pos = position,
                    .layout = RopeLayout::kInterleaved,
                    .table = &table_};
  apply_rope_reference(params);
  for (int d = 0; d < 128; ++d) EXPECT_EQ(x[d].bits, before[d].bits) << "nope dim " << d;
  for (int i = 0; i < 32; ++i) {
    const float a = bf16_to_float(before[128 + 2 * i]), b = bf16_to_float(before[129 + 2 * i]);
    const float c = table_.cos(position)[i], s = table_.sin(position)[i];
    // One fp32 rounding of products and sum vs. double: far below half a bf16 ulp except on
    // rounding boundaries; allow one bf16 ulp (2^-8 relative) of the larger input.
    const float tol = std::ldexp(std::max(std::fabs(a), std::fabs(b)), -8);
    EXPECT_NEAR(bf16_to_float(x[128 + 2 * i]), rotate_first(a, b, c, s), tol) << i;
    EXPECT_NEAR(bf16_to_float(x[129 + 2 * i]), rotate_second(a, b, c, s), tol) << i;
  }
}

TEST_F(RopeLayouts, HalvesRotatePairsIAndIPlus32OfTheFirstDims) {
  // Indexer q: 128 dims, RoPE on [0, 64), pairs (i, i + 32); dims [64, 128) untouched.
  std::vector<bf16> x = random_bf16(128, 2);
  const std::vector<bf16> before = x;
  const int64_t position = 77;
  RopeParams params{.x = x.data(),
                    .tokens = 1,
                    .heads = 1,
                    .row = 128,
                    .offset = 0,
                    .start_pos = position,
                    .layout = RopeLayout::kHalves,
                    .table = &table_};
  apply_rope_reference(params);
  for (int d = 64; d < 128; ++d) EXPECT_EQ(x[d].bits, before[d].bits) << "nope dim " << d;
  for (int i = 0; i < 32; ++i) {
    const float a = bf16_to_float(before[i]), b = bf16_to_float(before[32 + i]);
    const float c = table_.cos(position)[i], s = table_.sin(position)[i];
    const float tol = std::ldexp(std::max(std::fabs(a), std::fabs(b)), -8);  // as above
    EXPECT_NEAR(bf16_to_float(x[i]), rotate_first(a, b, c, s), tol) << i;
    EXPECT_NEAR(bf16_to_float(x[32 + i]), rotate_second(a, b, c, s), tol) << i;
  }
}

TEST_F(RopeLayouts, PositionZeroIsTheIdentity) {
  std::vector<bf16> x = random_bf16(2 * 64, 3);
  const std::vector<bf16> before = x;
  for (RopeLayout layout : {RopeLayout::kInterleaved, RopeLayout::kHalves}) {
    RopeParams params{.x = x.data(),
                      .tokens = 1,
                      .heads = 2,
                      .row = 64,
                      .offset = 0,
                      .start_pos = 0,
                      .layout = layout,
                      .table = &table_};
    apply_rope_reference(params);
    for (size_t d = 0; d < x.size(); ++d) ASSERT_EQ(x[d].bits, before[d].bits) << d;
  }
}

TEST_F(RopeLayouts, FastMatchesReference) {
  // Fast and reference compute the same fp32 products and sum; the only freedom is the
  // compiler contracting a product and the add into an FMA, which changes the fp32 result by
  // at most 1 ulp and so the bf16 output by at most 1 bf16 ulp (2^-8 of the larger input).
  struct Case {
    int64_t tokens, heads, row, offset, start_pos;
    RopeLayout layout;
  };
  const Case cases[] = {{5, 128, 192, 128, 0, RopeLayout::kInterleaved},   // MLA q
                        {3, 1, 576, 512, 8000, RopeLayout::kInterleaved},  // MLA k_pe
                        {4, 64, 128, 0, 4093, RopeLayout::kHalves},        // indexer q
                        {9, 1, 128, 0, 17, RopeLayout::kHalves}};          // indexer k
  for (int threads : {1, 3}) {
    ThreadPool pool(threads);
    for (const Case& c : cases) {
      std::vector<bf16> ref = random_bf16(size_t(c.tokens * c.heads * c.row), 4);
      RopeParams params{.x = ref.data(),
                        .tokens = c.tokens,
                        .heads = c.heads,
                        .row = c.row,
                        .offset = c.offset,
                        .start_pos = c.start_pos,
                        .layout = c.layout,
                        .table = &table_};
      const std::vector<bf16> input = ref;
      apply_rope_reference(params);
      test::for_each_simd_target([&] {
        std::vector<bf16> fast = input;
        params.x = fast.data();
        apply_rope(params, pool);
        for (size_t i = 0; i < fast.size(); ++i) {
          const float r = bf16_to_float(ref[i]), f = bf16_to_float(fast[i]);
          const size_t row_start = i / size_t(c.row) * size_t(c.row);
          float magnitude = 0.0f;
          for (int64_t d = c.offset; d < c.row; ++d) {
            magnitude = std::max(magnitude, std::fabs(bf16_to_float(input[row_start + d])));
          }
          ASSERT_LE(std::fabs(r - f), std::ldexp(magnitude, -8)) << "element " << i;
        }
      });
    }
  }
}

TEST_F(RopeLayouts, RejectsBadParams) {
  std::vector<bf16> x(128);
  RopeParams params{.x = x.data(),
                    .tokens = 1,
                    .heads = 1,
                    .row = 100,
                    .offset = 40,
                    .start_pos = 0,
                    .layout = RopeLayout::kHalves,
                    .table = &table_};
  try {
    apply_rope_reference(params);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rotated dims [40, 104) do not fit in a row of 100"),
              std::string::npos)
        << e.what();
  }
  params.row = 128;
  params.start_pos = 8192;
  ThreadPool pool(1);
  try {
    apply_rope(params, pool);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("positions [8192, 8193) exceed the table's 8192"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace dsa

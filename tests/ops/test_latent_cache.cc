// The latent cache formats: byte layout of the 656-byte FP8 token, round trips, and that the FP8
// token holds exactly REF's simulated FP8 latent (act_quant then dequantize, §5.3).
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "core/float_formats.h"
#include "core/fp8_quant.h"
#include "ops/latent_cache.h"

namespace dsa {
namespace {

std::vector<float> random_bf16_values(size_t n, float range, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-range, range);
  std::vector<float> out(n);
  for (float& x : out) x = round_to_bf16(dist(rng));
  return out;
}

TEST(LatentCache, Fp8LayoutIsCodesThenScalesThenBf16Rope) {
  std::vector<float> latent = random_bf16_values(kMlaLatentDim, 3.0f, 1);
  latent[200] = 40.0f;  // a different scale in block 1
  const std::vector<float> rope = random_bf16_values(kMlaRopeDim, 2.0f, 2);
  std::vector<std::byte> token(kLatentFp8TokenBytes);
  pack_latent_token(latent, rope, LatentCacheFormat::kFp8, ScaleFormat::kUe8m0, token.data());

  // Independent expectation: act_quant of the latent row, the scales as fp32, the rope as bf16.
  std::vector<fp8_e4m3> codes(kMlaLatentDim);
  std::vector<float> scales(kLatentScaleCount);
  act_quant_row(latent, ScaleFormat::kUe8m0, codes, scales);
  EXPECT_EQ(std::memcmp(token.data(), codes.data(), kMlaLatentDim), 0);
  float stored_scales[kLatentScaleCount];
  std::memcpy(stored_scales, token.data() + 512, sizeof(stored_scales));
  for (int g = 0; g < kLatentScaleCount; ++g) EXPECT_EQ(stored_scales[g], scales[g]) << g;
  EXPECT_EQ(stored_scales[1], 0.125f);  // amax 40 -> 40/448 rounded up to 2^-3
  for (int i = 0; i < kMlaRopeDim; ++i) {
    bf16 value;
    std::memcpy(&value, token.data() + 528 + 2 * i, 2);
    EXPECT_EQ(value.bits, float_to_bf16(rope[i]).bits) << i;
  }
}

TEST(LatentCache, Fp8UnpackIsRefsSimulatedFp8Latent) {
  const std::vector<float> latent = random_bf16_values(kMlaLatentDim, 5.0f, 3);
  const std::vector<float> rope = random_bf16_values(kMlaRopeDim, 2.0f, 4);
  for (ScaleFormat format : {ScaleFormat::kUe8m0, ScaleFormat::kPlain}) {
    std::vector<std::byte> token(kLatentFp8TokenBytes);
    pack_latent_token(latent, rope, LatentCacheFormat::kFp8, format, token.data());
    std::vector<float> key(kMlaKeyDim);
    unpack_latent_token(token.data(), LatentCacheFormat::kFp8, key);
    // REF: kv = (fp8 * scale).to(bf16): the core round trip, then bf16 rounding (exact for ue8m0).
    std::vector<float> expected(kMlaLatentDim);
    act_quant_round_trip(latent, format, expected);
    for (int i = 0; i < kMlaLatentDim; ++i) EXPECT_EQ(key[i], round_to_bf16(expected[i])) << i;
    for (int i = 0; i < kMlaRopeDim; ++i) EXPECT_EQ(key[kMlaLatentDim + i], rope[i]) << i;
    if (format == ScaleFormat::kUe8m0) {
      for (int i = 0; i < kMlaLatentDim; ++i) EXPECT_EQ(key[i], expected[i]) << i;
    }
  }
}

TEST(LatentCache, Bf16RoundTripIsExactForBf16Values) {
  const std::vector<float> latent = random_bf16_values(kMlaLatentDim, 7.0f, 5);
  const std::vector<float> rope = random_bf16_values(kMlaRopeDim, 2.0f, 6);
  std::vector<std::byte> token(kLatentBf16TokenBytes);
  pack_latent_token(latent, rope, LatentCacheFormat::kBf16, ScaleFormat::kUe8m0, token.data());
  std::vector<float> key(kMlaKeyDim);
  unpack_latent_token(token.data(), LatentCacheFormat::kBf16, key);
  for (int i = 0; i < kMlaLatentDim; ++i) EXPECT_EQ(key[i], latent[i]) << i;
  for (int i = 0; i < kMlaRopeDim; ++i) EXPECT_EQ(key[kMlaLatentDim + i], rope[i]) << i;
  // The bf16 token is little-endian bf16 bits, latent first.
  bf16 first;
  std::memcpy(&first, token.data(), 2);
  EXPECT_EQ(first.bits, float_to_bf16(latent[0]).bits);
}

TEST(LatentCache, TokenSizes) {
  EXPECT_EQ(latent_token_bytes(LatentCacheFormat::kFp8), 656u);
  EXPECT_EQ(latent_token_bytes(LatentCacheFormat::kBf16), 1152u);
  std::vector<std::byte> cache(3 * 656);
  const LatentCacheView view{LatentCacheFormat::kFp8, cache.data(), 3};
  EXPECT_EQ(view.token(2), cache.data() + 2 * 656);
}

}  // namespace
}  // namespace dsa

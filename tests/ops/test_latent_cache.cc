// The latent cache formats: byte layout of the FP8 token (656 bytes for V3.2), round trips, and
// that the FP8 token holds exactly REF's simulated FP8 latent (act_quant then dequantize, §5.3);
// for V3.2's dims and for smaller configs (latent 128 / rope 64, latent 256 / rope 32).
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/float_formats.h"
#include "core/fp8_quant.h"
#include "ops/attention/latent_cache.h"

namespace dsa {
namespace {

std::vector<float> random_bf16_values(size_t n, float range, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-range, range);
  std::vector<float> out(n);
  for (float& x : out) x = round_to_bf16(dist(rng));
  return out;
}

class LatentCache : public ::testing::TestWithParam<LatentDims> {};

TEST_P(LatentCache, Fp8LayoutIsCodesThenScalesThenBf16Rope) {
  const LatentDims dims = GetParam();
  std::vector<float> latent = random_bf16_values(dims.latent, 3.0f, 1);
  if (dims.scale_count() > 1) latent[kFp8BlockSize + 72] = 40.0f;  // a different scale in block 1
  const std::vector<float> rope = random_bf16_values(dims.rope, 2.0f, 2);
  std::vector<std::byte> token(latent_token_bytes(LatentCacheFormat::kFp8, dims));
  pack_latent_token(latent, rope, LatentCacheFormat::kFp8, ScaleFormat::kUe8m0, token.data());

  // Independent expectation: act_quant of the latent row, the scales as fp32, the rope as bf16.
  std::vector<fp8_e4m3> codes(dims.latent);
  std::vector<float> scales(dims.scale_count());
  act_quant_row(latent, ScaleFormat::kUe8m0, codes, scales);
  EXPECT_EQ(std::memcmp(token.data(), codes.data(), dims.latent), 0);
  std::vector<float> stored_scales(dims.scale_count());
  std::memcpy(stored_scales.data(), token.data() + dims.latent, 4 * stored_scales.size());
  for (int g = 0; g < dims.scale_count(); ++g) EXPECT_EQ(stored_scales[g], scales[g]) << g;
  if (dims.scale_count() > 1) {
    EXPECT_EQ(stored_scales[1], 0.125f);  // amax 40 -> 40/448 rounded up to 2^-3
  }
  const size_t rope_offset = dims.latent + 4 * dims.scale_count();
  ASSERT_EQ(rope_offset + 2 * dims.rope, token.size());
  for (int i = 0; i < dims.rope; ++i) {
    bf16 value;
    std::memcpy(&value, token.data() + rope_offset + 2 * i, 2);
    EXPECT_EQ(value.bits, float_to_bf16(rope[i]).bits) << i;
  }
}

TEST_P(LatentCache, Fp8UnpackIsRefsSimulatedFp8Latent) {
  const LatentDims dims = GetParam();
  const std::vector<float> latent = random_bf16_values(dims.latent, 5.0f, 3);
  const std::vector<float> rope = random_bf16_values(dims.rope, 2.0f, 4);
  for (ScaleFormat format : {ScaleFormat::kUe8m0, ScaleFormat::kPlain}) {
    std::vector<std::byte> token(latent_token_bytes(LatentCacheFormat::kFp8, dims));
    pack_latent_token(latent, rope, LatentCacheFormat::kFp8, format, token.data());
    std::vector<float> key(dims.key());
    unpack_latent_token(token.data(), LatentCacheFormat::kFp8, dims, key);
    // REF: kv = (fp8 * scale).to(bf16): the core round trip, then bf16 rounding (exact for ue8m0).
    std::vector<float> expected(dims.latent);
    act_quant_round_trip(latent, format, expected);
    for (int i = 0; i < dims.latent; ++i) EXPECT_EQ(key[i], round_to_bf16(expected[i])) << i;
    for (int i = 0; i < dims.rope; ++i) EXPECT_EQ(key[dims.latent + i], rope[i]) << i;
    if (format == ScaleFormat::kUe8m0) {
      for (int i = 0; i < dims.latent; ++i) EXPECT_EQ(key[i], expected[i]) << i;
    }
  }
}

TEST_P(LatentCache, Bf16RoundTripIsExactForBf16Values) {
  const LatentDims dims = GetParam();
  const std::vector<float> latent = random_bf16_values(dims.latent, 7.0f, 5);
  const std::vector<float> rope = random_bf16_values(dims.rope, 2.0f, 6);
  std::vector<std::byte> token(latent_token_bytes(LatentCacheFormat::kBf16, dims));
  pack_latent_token(latent, rope, LatentCacheFormat::kBf16, ScaleFormat::kUe8m0, token.data());
  std::vector<float> key(dims.key());
  unpack_latent_token(token.data(), LatentCacheFormat::kBf16, dims, key);
  for (int i = 0; i < dims.latent; ++i) EXPECT_EQ(key[i], latent[i]) << i;
  for (int i = 0; i < dims.rope; ++i) EXPECT_EQ(key[dims.latent + i], rope[i]) << i;
  // The bf16 token is little-endian bf16 bits, latent first.
  bf16 first, first_rope;
  std::memcpy(&first, token.data(), 2);
  std::memcpy(&first_rope, token.data() + 2 * dims.latent, 2);
  EXPECT_EQ(first.bits, float_to_bf16(latent[0]).bits);
  EXPECT_EQ(first_rope.bits, float_to_bf16(rope[0]).bits);
}

INSTANTIATE_TEST_SUITE_P(Dims, LatentCache,
                         ::testing::Values(LatentDims{512, 64}, LatentDims{128, 64},
                                           LatentDims{256, 32}),
                         [](const auto& test_info) {
                           return "latent" + std::to_string(test_info.param.latent) + "_rope" +
                                  std::to_string(test_info.param.rope);
                         });

TEST(LatentCacheSizes, TokenSizes) {
  EXPECT_EQ(latent_token_bytes(LatentCacheFormat::kFp8, {}), 656u);  // FlashMLA's V3.2 layout
  EXPECT_EQ(latent_token_bytes(LatentCacheFormat::kBf16, {}), 1152u);
  EXPECT_EQ(latent_token_bytes(LatentCacheFormat::kFp8, {128, 64}), 128u + 4 + 128);
  EXPECT_EQ(latent_token_bytes(LatentCacheFormat::kBf16, {128, 64}), 384u);
  EXPECT_EQ(latent_token_bytes(LatentCacheFormat::kFp8, {256, 32}), 256u + 8 + 64);
  EXPECT_EQ(latent_token_bytes(LatentCacheFormat::kBf16, {256, 32}), 576u);
  std::vector<std::byte> cache(3 * 656);
  const LatentCacheView view{LatentCacheFormat::kFp8, {}, cache.data(), 3};
  EXPECT_EQ(view.token_bytes(), 656u);
  EXPECT_EQ(view.token(2), cache.data() + 2 * 656);
  const LatentCacheView small{LatentCacheFormat::kBf16, {256, 32}, cache.data(), 3};
  EXPECT_EQ(small.token(2), cache.data() + 2 * 576);
}

TEST(LatentCacheSizes, RejectsDimsTheFormatCannotHold) {
  const auto message = [](LatentDims dims) {
    try {
      validate(dims, "op");
    } catch (const Error& error) {
      return std::string(error.what());
    }
    return std::string("accepted");
  };
  EXPECT_EQ(message({128, 2}), "accepted");
  EXPECT_NE(
      message({100, 64}).find("dims.latent (kv_lora_rank) must be a positive multiple of 128"),
      std::string::npos);
  EXPECT_NE(message({0, 64}).find("dims.latent"), std::string::npos);
  EXPECT_NE(
      message({128, 33}).find("dims.rope (qk_rope_head_dim) must be positive and even, got 33"),
      std::string::npos);
  EXPECT_NE(message({128, 0}).find("dims.rope"), std::string::npos);
}

}  // namespace
}  // namespace dsa

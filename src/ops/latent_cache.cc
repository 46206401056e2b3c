#include "ops/latent_cache.h"

#include <cstring>

#include "core/error.h"
#include "core/float_formats.h"

namespace dsa {

void pack_latent_token(std::span<const float> latent, std::span<const float> rope,
                       LatentCacheFormat format, ScaleFormat scales, std::byte* out) {
  DSA_CHECK(latent.size() == kMlaLatentDim && rope.size() == kMlaRopeDim,
            "latent token needs 512 + 64 values, got {} + {}", latent.size(), rope.size());
  std::byte* rope_out = out + 2 * kMlaLatentDim;  // bf16 latent, then RoPE
  if (format == LatentCacheFormat::kFp8) {
    fp8_e4m3 codes[kMlaLatentDim];
    float scale_values[kLatentScaleCount];
    act_quant_row(latent, scales, codes, scale_values);
    std::memcpy(out, codes, kMlaLatentDim);
    std::memcpy(out + kMlaLatentDim, scale_values, sizeof(scale_values));
    rope_out = out + kMlaLatentDim + sizeof(scale_values);
  } else {
    for (int i = 0; i < kMlaLatentDim; ++i) {
      const bf16 value = float_to_bf16(latent[i]);
      std::memcpy(out + 2 * i, &value, 2);
    }
  }
  for (int i = 0; i < kMlaRopeDim; ++i) {
    const bf16 value = float_to_bf16(rope[i]);
    std::memcpy(rope_out + 2 * i, &value, 2);
  }
}

void unpack_latent_token(const std::byte* token, LatentCacheFormat format, std::span<float> out) {
  DSA_CHECK(out.size() == kMlaKeyDim, "a latent key has 576 values, got {}", out.size());
  const std::byte* rope_bytes;
  if (format == LatentCacheFormat::kFp8) {
    float scales[kLatentScaleCount];
    std::memcpy(scales, token + kMlaLatentDim, sizeof(scales));
    for (int i = 0; i < kMlaLatentDim; ++i) {
      const fp8_e4m3 code{std::to_integer<uint8_t>(token[i])};
      out[i] = round_to_bf16(fp8_to_float(code) * scales[i / kFp8BlockSize]);
    }
    rope_bytes = token + kMlaLatentDim + sizeof(scales);
  } else {
    for (int i = 0; i < kMlaLatentDim; ++i) {
      bf16 value;
      std::memcpy(&value, token + 2 * i, 2);
      out[i] = bf16_to_float(value);
    }
    rope_bytes = token + 2 * kMlaLatentDim;
  }
  for (int i = 0; i < kMlaRopeDim; ++i) {
    bf16 value;
    std::memcpy(&value, rope_bytes + 2 * i, 2);
    out[kMlaLatentDim + i] = bf16_to_float(value);
  }
}

}  // namespace dsa

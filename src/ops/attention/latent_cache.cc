#include "ops/attention/latent_cache.h"

#include <cstring>

#include "core/error.h"
#include "core/float_formats.h"

namespace dsa {

void validate(LatentDims dims, const char* op) {
  if (dims.latent <= 0 || dims.latent % kFp8BlockSize != 0) {
    fail(
        "{}: latent cache dims.latent (kv_lora_rank) must be a positive multiple of {} (one FP8 "
        "scale per {}), got {}",
        op, kFp8BlockSize, kFp8BlockSize, dims.latent);
  }
  if (dims.rope <= 0 || dims.rope % 2 != 0) {
    fail("{}: latent cache dims.rope (qk_rope_head_dim) must be positive and even, got {}", op,
         dims.rope);
  }
}

void pack_latent_token(std::span<const float> latent, std::span<const float> rope,
                       LatentCacheFormat format, ScaleFormat scales, std::byte* out) {
  const LatentDims dims{int(latent.size()), int(rope.size())};
  DSA_CHECK(dims.latent > 0 && dims.latent % kFp8BlockSize == 0 && dims.rope % 2 == 0,
            "a latent token needs a multiple of 128 latent and an even number of rope values, got "
            "{} + {}",
            latent.size(), rope.size());
  std::byte* rope_out = out + 2 * dims.latent;  // bf16 latent, then RoPE
  if (format == LatentCacheFormat::kFp8) {
    // One act_quant group at a time: its codes go to the front, its scale after all the codes.
    for (int g = 0; g < dims.scale_count(); ++g) {
      fp8_e4m3 codes[kFp8BlockSize];
      float scale;
      act_quant_row(latent.subspan(size_t(g) * kFp8BlockSize, kFp8BlockSize), scales, codes,
                    {&scale, 1});
      std::memcpy(out + g * kFp8BlockSize, codes, kFp8BlockSize);
      std::memcpy(out + dims.latent + 4 * g, &scale, 4);
    }
    rope_out = out + dims.latent + 4 * dims.scale_count();
  } else {
    for (int i = 0; i < dims.latent; ++i) {
      const bf16 value = float_to_bf16(latent[i]);
      std::memcpy(out + 2 * i, &value, 2);
    }
  }
  for (int i = 0; i < dims.rope; ++i) {
    const bf16 value = float_to_bf16(rope[i]);
    std::memcpy(rope_out + 2 * i, &value, 2);
  }
}

void unpack_latent_token(const std::byte* token, LatentCacheFormat format, LatentDims dims,
                         std::span<float> out) {
  DSA_CHECK(out.size() == size_t(dims.key()), "a latent key has {} values, got {}", dims.key(),
            out.size());
  const std::byte* rope_bytes;
  if (format == LatentCacheFormat::kFp8) {
    const std::byte* scale_bytes = token + dims.latent;
    for (int g = 0; g < dims.scale_count(); ++g) {
      float scale;
      std::memcpy(&scale, scale_bytes + 4 * g, 4);
      for (int i = g * kFp8BlockSize; i < (g + 1) * kFp8BlockSize; ++i) {
        const fp8_e4m3 code{std::to_integer<uint8_t>(token[i])};
        out[i] = round_to_bf16(fp8_to_float(code) * scale);
      }
    }
    rope_bytes = scale_bytes + 4 * dims.scale_count();
  } else {
    for (int i = 0; i < dims.latent; ++i) {
      bf16 value;
      std::memcpy(&value, token + 2 * i, 2);
      out[i] = bf16_to_float(value);
    }
    rope_bytes = token + 2 * dims.latent;
  }
  for (int i = 0; i < dims.rope; ++i) {
    bf16 value;
    std::memcpy(&value, rope_bytes + 2 * i, 2);
    out[dims.latent + i] = bf16_to_float(value);
  }
}

}  // namespace dsa

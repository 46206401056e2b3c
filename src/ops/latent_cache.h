// The MLA latent KV cache, one entry per token (dsa-reference.md §5.3, §5.6). A key is 576 dims:
// the 512-dim normalized latent c_kv followed by the 64-dim RoPE'd k_pe; the value is the latent.
//
//   kFp8  (FlashMLA's V3.2 layout, 656 bytes): bytes 0..511 the e4m3 codes of the latent,
//         512..527 four fp32 scales (one per 128 latent dims, in order), 528..655 the 64 RoPE
//         values as bf16 (not quantized).
//   kBf16 (REF's demo cache, 1152 bytes): 576 bf16 values, latent then RoPE.
//
// Unpacking gives the bf16 values REF computes with: latent = bf16(fp8(code) * scale), which is
// exact for power-of-two (ue8m0) scales.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "core/fp8_quant.h"

namespace dsa {

constexpr int kMlaLatentDim = 512;  // kv_lora_rank: the value width in absorbed (MQA) mode
constexpr int kMlaRopeDim = 64;     // qk_rope_head_dim
constexpr int kMlaKeyDim = kMlaLatentDim + kMlaRopeDim;           // 576
constexpr int kLatentScaleCount = kMlaLatentDim / kFp8BlockSize;  // 4

enum class LatentCacheFormat { kFp8, kBf16 };

constexpr size_t kLatentFp8TokenBytes = kMlaLatentDim + 4 * kLatentScaleCount + 2 * kMlaRopeDim;
constexpr size_t kLatentBf16TokenBytes = 2 * kMlaKeyDim;
static_assert(kLatentFp8TokenBytes == 656 && kLatentBf16TokenBytes == 1152);

constexpr size_t latent_token_bytes(LatentCacheFormat format) {
  return format == LatentCacheFormat::kFp8 ? kLatentFp8TokenBytes : kLatentBf16TokenBytes;
}

// Read-only view of a contiguous cache: [num_tokens, latent_token_bytes(format)] bytes.
struct LatentCacheView {
  LatentCacheFormat format = LatentCacheFormat::kFp8;
  const std::byte* data = nullptr;
  int64_t num_tokens = 0;

  const std::byte* token(int64_t index) const {
    return data + size_t(index) * latent_token_bytes(format);
  }
};

// Writes one token: `latent` [512] and `rope` [64] (bf16 values held in float). For kFp8 the
// latent is act_quant'ed per 128 dims with `scales` (V3.2: ue8m0); kBf16 rounds to bf16.
void pack_latent_token(std::span<const float> latent, std::span<const float> rope,
                       LatentCacheFormat format, ScaleFormat scales, std::byte* out);

// Reads one token back as the 576 key values [latent 512 | rope 64].
void unpack_latent_token(const std::byte* token, LatentCacheFormat format, std::span<float> out);

}  // namespace dsa

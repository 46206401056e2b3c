// The MLA latent KV cache, one entry per token (dsa-reference.md §5.3, §5.6). A key is
// latent + rope dims: the normalized latent c_kv (kv_lora_rank dims, 512 for V3.2) followed by the
// RoPE'd k_pe (qk_rope_head_dim dims, 64 for V3.2); the value is the latent.
//
//   kFp8  (FlashMLA's layout; 656 bytes for V3.2): bytes [0, latent) the e4m3 codes of the latent,
//         then latent / 128 fp32 scales (one per 128 latent dims, in order), then the rope values
//         as bf16 (not quantized).
//   kBf16 (REF's demo cache; 1152 bytes for V3.2): latent + rope bf16 values, latent first.
//
// Unpacking gives the bf16 values REF computes with: latent = bf16(fp8(code) * scale), which is
// exact for power-of-two (ue8m0) scales.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "core/fp8_quant.h"

namespace dsa {

constexpr int kMlaLatentDim = 512;  // V3.2's kv_lora_rank: the value width in absorbed (MQA) mode
constexpr int kMlaRopeDim = 64;     // V3.2's qk_rope_head_dim

// Widths of one latent-cache token: the kv_lora_rank latent and the qk_rope_head_dim RoPE key.
struct LatentDims {
  int latent = kMlaLatentDim;  // kv_lora_rank, a multiple of 128 (one FP8 scale per 128)
  int rope = kMlaRopeDim;      // qk_rope_head_dim, even
  constexpr int key() const { return latent + rope; }
  constexpr int scale_count() const { return latent / kFp8BlockSize; }
};

enum class LatentCacheFormat { kFp8, kBf16 };

// fp8: latent codes + 4 bytes per scale + 2 bytes per rope value; bf16: 2 bytes per key value.
constexpr size_t latent_token_bytes(LatentCacheFormat format, LatentDims dims) {
  return format == LatentCacheFormat::kFp8
             ? size_t(dims.latent) + 4 * size_t(dims.scale_count()) + 2 * size_t(dims.rope)
             : 2 * size_t(dims.key());
}
static_assert(latent_token_bytes(LatentCacheFormat::kFp8, LatentDims{}) == 656 &&
              latent_token_bytes(LatentCacheFormat::kBf16, LatentDims{}) == 1152);

// Throws dsa::Error unless latent is a positive multiple of 128 and rope positive and even; `op`
// names the caller in the message.
void validate(LatentDims dims, const char* op);

// Read-only view of a contiguous cache: [num_tokens, latent_token_bytes(format, dims)] bytes.
struct LatentCacheView {
  LatentCacheFormat format = LatentCacheFormat::kFp8;
  LatentDims dims;
  const std::byte* data = nullptr;
  int64_t num_tokens = 0;

  size_t token_bytes() const { return latent_token_bytes(format, dims); }
  const std::byte* token(int64_t index) const { return data + size_t(index) * token_bytes(); }
};

// Writes one token: `latent` [dims.latent] and `rope` [dims.rope] (bf16 values held in float); the
// dims are the spans' sizes. For kFp8 the latent is act_quant'ed per 128 dims with `scales`
// (V3.2: ue8m0); kBf16 rounds to bf16.
void pack_latent_token(std::span<const float> latent, std::span<const float> rope,
                       LatentCacheFormat format, ScaleFormat scales, std::byte* out);

// Reads one token back as its key values: out [dims.key()] = [latent | rope].
void unpack_latent_token(const std::byte* token, LatentCacheFormat format, LatentDims dims,
                         std::span<float> out);

}  // namespace dsa

// Indexer scores with AVX512-BF16 (see indexer.h and indexer_scores_internal.h).
//
// vdpbf16ps does 32 bf16 multiply-adds into 16 fp32 lanes per instruction, twice the work of an
// fp32 FMA. fp8 e4m3 values are exact in bf16 (3-bit mantissa; exponents, subnormals included,
// are normal bf16 numbers) and the product of two bf16 values is exact in fp32, so the products
// are the reference's; only the summation order differs, as on the Highway path. Every bf16
// operand and partial sum here is zero or a normal number (products are multiples of 2^-18), so
// the instruction's denormal flushing never applies.
//
// Layout: lanes are heads. vdpbf16ps multiplies adjacent bf16 pairs, so a query row becomes a
// panel of dwords [64 dim pairs j][heads padded to 16] holding (q[h][2j], q[h][2j+1]); padding
// heads have weight 0. A key is converted once to 64 dwords (k[2j], k[2j+1]) and each dword is
// broadcast against the head vectors of a tile of keys: 16 accumulators stay in registers
// (4 keys x 4 head vectors; with fewer heads, more keys: 16 keys x 1 vector for up to 16 heads,
// 8 x 2 for up to 32). Each accumulator is a dependency chain of 64 vdpbf16ps, so a tile needs
// ~16 chains to hide the instruction's latency: 4 keys of 8 heads ran at a tenth of its peak.
// Every key's arithmetic is the same whatever its tile, so the scores do not depend on it.
// Compiled with target attributes on each function; the caller checks the CPU.

#include <algorithm>
#include <bit>

#include "core/aligned_buffer.h"
#include "ops/indexer/indexer_scores_internal.h"

// GCC 12 warns that _mm512_undefined_*() inside the intrinsics is used uninitialized
// (GCC bug 105593, fixed in GCC 13); the value is a don't-care operand.
#pragma GCC diagnostic push
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#define DSA_TARGET_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

namespace dsa::indexer_internal {
namespace {

constexpr int kPairs = kIndexerHeadDim / 2;  // bf16 pairs (dwords) per 128-dim vector
constexpr int kLanes = 16;                   // fp32 lanes (heads) per vector
constexpr int kAccumulators = 16;            // keys x head vectors per register tile
constexpr int kMaxHeadVecs = 4;              // head vectors per group with 4-key tiles

// 16 fp8 e4m3 codes -> their exact fp32 values: the 7 magnitude bits at fp32 bits 20..26 read as
// value * 2^-120 (fp8 subnormals land on fp32 subnormals, still exact), one multiply by 2^120
// rebiases the exponent, then the sign is or-ed in.
DSA_TARGET_AVX512BF16 inline __m512 fp8x16_to_fp32(const fp8_e4m3* codes) {
  const __m512i bits =
      _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes)));
  const __m512i magnitude = _mm512_slli_epi32(_mm512_and_si512(bits, _mm512_set1_epi32(0x7F)), 20);
  const __m512i sign = _mm512_slli_epi32(_mm512_and_si512(bits, _mm512_set1_epi32(0x80)), 24);
  const __m512 value = _mm512_mul_ps(_mm512_castsi512_ps(magnitude), _mm512_set1_ps(0x1p120f));
  return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(value), sign));
}

// kKeys keys of 128 fp8 codes -> [kKeys][64] dwords of bf16 pairs, in dimension order (exact:
// the fp32 values are representable in bf16, so round-to-nearest-even does not move them).
template <int kKeys>
DSA_TARGET_AVX512BF16 inline void keys_to_bf16(const fp8_e4m3* codes, uint32_t* out) {
  for (int i = 0; i < kKeys * kIndexerHeadDim; i += 2 * kLanes) {
    const __m512bh pairs = _mm512_cvtne2ps_pbh(fp8x16_to_fp32(codes + i + kLanes),  // upper half
                                               fp8x16_to_fp32(codes + i));          // lower half
    _mm512_store_si512(out + i / 2, reinterpret_cast<const __m512i&>(pairs));
  }
}

// head_sum[k] += ReLU(q[:, heads] . key_k) * w[heads] for kVecs vectors of heads (kFirst: the
// first group, which sets head_sum from zero, so that it is not live during the loop and the
// 16-key tile keeps every register for accumulators).
// q: panel columns of this head group, `q_stride` dwords per dim pair; keys: [kKeys][64] dwords.
template <int kKeys, int kVecs, bool kFirst>
DSA_TARGET_AVX512BF16 inline void accumulate_head_group(const uint32_t* q, int64_t q_stride,
                                                        const uint32_t* keys, const float* w,
                                                        __m512* head_sum) {
  __m512 acc[kKeys][kVecs];
  for (int k = 0; k < kKeys; ++k) {
    for (int v = 0; v < kVecs; ++v) acc[k][v] = _mm512_setzero_ps();
  }
  for (int j = 0; j < kPairs; ++j) {
    __m512bh qv[kVecs];
    for (int v = 0; v < kVecs; ++v) {
      const __m512i loaded = _mm512_load_si512(q + j * q_stride + v * kLanes);
      // A vector cast reinterprets the register's bits; a reference cast would be an
      // aliasing violation.
      qv[v] = (__m512bh)loaded;
    }
    for (int k = 0; k < kKeys; ++k) {
      const __m512i pair = _mm512_set1_epi32(int(keys[k * kPairs + j]));
      const __m512bh key_pair = (__m512bh)pair;
      for (int v = 0; v < kVecs; ++v) acc[k][v] = _mm512_dpbf16_ps(acc[k][v], qv[v], key_pair);
    }
  }
  for (int k = 0; k < kKeys; ++k) {
    for (int v = 0; v < kVecs; ++v) {
      const __m512 relu = _mm512_max_ps(acc[k][v], _mm512_setzero_ps());
      const __m512 sum = kFirst && v == 0 ? _mm512_setzero_ps() : head_sum[k];
      head_sum[k] = _mm512_fmadd_ps(relu, _mm512_load_ps(w + v * kLanes), sum);
    }
  }
}

// The rest of the head vectors after the first group, in groups of kVecs, then the remainder.
template <int kKeys, int kVecs>
DSA_TARGET_AVX512BF16 inline void accumulate_remaining_heads(const uint32_t* panel_q,
                                                             const float* panel_w,
                                                             int64_t heads_padded, int64_t v,
                                                             const uint32_t* keys,
                                                             __m512* head_sum) {
  const int64_t vecs = heads_padded / kLanes;
  for (; v + kVecs <= vecs; v += kVecs) {
    accumulate_head_group<kKeys, kVecs, false>(panel_q + v * kLanes, heads_padded, keys,
                                               panel_w + v * kLanes, head_sum);
  }
  const uint32_t* q_rest = panel_q + v * kLanes;
  const float* w_rest = panel_w + v * kLanes;
  if constexpr (kVecs > 3) {
    if (vecs - v == 3) {
      accumulate_head_group<kKeys, 3, false>(q_rest, heads_padded, keys, w_rest, head_sum);
      return;
    }
  }
  if constexpr (kVecs > 2) {
    if (vecs - v == 2) {
      accumulate_head_group<kKeys, 2, false>(q_rest, heads_padded, keys, w_rest, head_sum);
      return;
    }
  }
  if constexpr (kVecs > 1) {
    if (vecs - v == 1) {
      accumulate_head_group<kKeys, 1, false>(q_rest, heads_padded, keys, w_rest, head_sum);
    }
  }
}

// Scores of kKeys consecutive keys against one query panel, head vectors in groups of
// kAccumulators / kKeys (at most kMaxHeadVecs).
template <int kKeys>
DSA_TARGET_AVX512BF16 void score_keys(const uint32_t* panel_q, const float* panel_w,
                                      int64_t heads_padded, const fp8_e4m3* codes,
                                      const float* key_scales, float* out) {
  constexpr int kVecs = std::clamp(kAccumulators / kKeys, 1, kMaxHeadVecs);
  alignas(64) uint32_t keys[kKeys * kPairs];
  keys_to_bf16<kKeys>(codes, keys);
  __m512 head_sum[kKeys];
  const int64_t vecs = heads_padded / kLanes;
  // The first group (as many vectors as there are, up to kVecs) sets head_sum.
  const int64_t first = std::min<int64_t>(vecs, kVecs);
  if (first == kVecs) {
    accumulate_head_group<kKeys, kVecs, true>(panel_q, heads_padded, keys, panel_w, head_sum);
  } else if constexpr (kVecs > 1) {
    if (first == 1) {
      accumulate_head_group<kKeys, 1, true>(panel_q, heads_padded, keys, panel_w, head_sum);
    } else if (first == 2) {
      accumulate_head_group<kKeys, (kVecs > 2 ? 2 : 1), true>(panel_q, heads_padded, keys, panel_w,
                                                              head_sum);
    } else {
      accumulate_head_group<kKeys, (kVecs > 3 ? 3 : 1), true>(panel_q, heads_padded, keys, panel_w,
                                                              head_sum);
    }
  }
  accumulate_remaining_heads<kKeys, kVecs>(panel_q, panel_w, heads_padded, first, keys, head_sum);
  for (int k = 0; k < kKeys; ++k) out[k] = _mm512_reduce_add_ps(head_sum[k]) * key_scales[k];
}

uint32_t fp8_to_bf16_bits(fp8_e4m3 code) {  // exact: the low 16 fp32 bits are zero
  return std::bit_cast<uint32_t>(fp8_to_float(code)) >> 16;
}

// The thread's query panel: [64 dim pairs][heads_padded] bf16 pairs and [heads_padded] weights.
struct Bf16Panel {
  PanelCache cache;
  int64_t heads_padded = 0;
  AlignedBuffer q, w;

  void build(const IndexerScoresParams& p, int64_t row, int64_t padded) {
    if (heads_padded != padded) {
      q = AlignedBuffer(size_t(kPairs * padded) * sizeof(uint32_t));
      w = AlignedBuffer(size_t(padded) * sizeof(float));
      heads_padded = padded;
    }
    uint32_t* panel_q = q_data();
    float* panel_w = w_data();
    for (int64_t h = 0; h < p.heads; ++h) {
      const fp8_e4m3* codes = p.q_codes + (row * p.heads + h) * kIndexerHeadDim;
      for (int j = 0; j < kPairs; ++j) {
        panel_q[j * padded + h] =
            fp8_to_bf16_bits(codes[2 * j]) | fp8_to_bf16_bits(codes[2 * j + 1]) << 16;
      }
      panel_w[h] = p.head_weights[row * p.heads + h];
    }
    for (int64_t h = p.heads; h < padded; ++h) {  // padding heads: q = 0 and weight 0
      for (int j = 0; j < kPairs; ++j) panel_q[j * padded + h] = 0;
      panel_w[h] = 0.0f;
    }
  }
  uint32_t* q_data() { return reinterpret_cast<uint32_t*>(q.data()); }
  float* w_data() { return reinterpret_cast<float*>(w.data()); }
};

}  // namespace

DSA_TARGET_AVX512BF16 void score_items_avx512bf16(const IndexerScoresParams& p, int64_t begin,
                                                  int64_t end, uint64_t call_id) {
  const int64_t heads_padded = (p.heads + kLanes - 1) / kLanes * kLanes;
  thread_local Bf16Panel panel;
  for (int64_t item = begin; item < end; ++item) {
    const ScoreItem it = begin_score_item(p, item);
    if (it.valid_end == it.block_begin) continue;
    if (panel.cache.rebuild(call_id, it.row)) panel.build(p, it.row, heads_padded);
    const uint32_t* panel_q = panel.q_data();
    const float* panel_w = panel.w_data();
    float* scores = p.scores + it.row * p.keys;
    int64_t s = it.block_begin;
    // The widest tile whose accumulators fit, then narrower ones for the keys left over.
    const auto tiles = [&]<int kKeys>() {
      for (; s + kKeys <= it.valid_end; s += kKeys) {
        score_keys<kKeys>(panel_q, panel_w, heads_padded, p.key_codes + s * kIndexerHeadDim,
                          p.key_scales + s, scores + s);
      }
    };
    if (heads_padded <= kLanes) tiles.template operator()<16>();
    if (heads_padded <= 2 * kLanes) tiles.template operator()<8>();
    tiles.template operator()<4>();
    tiles.template operator()<1>();
  }
}

}  // namespace dsa::indexer_internal

#pragma GCC diagnostic pop

// MLA q·k scores with AVX512-BF16 (see mla_scores_avx512bf16.h). vdpbf16ps does 32 bf16
// multiply-adds per instruction into 16 fp32 lanes, twice an fp32 FMA; lanes run along the dot
// dimension as in DotBlock (mla_flash-inl.h), 4 query rows x 4 keys per register block, then one
// horizontal sum per score. vdpbf16ps reads bf16 denormals (magnitude below 2^-126) as zero and
// flushes denormal results; queries, latents and scores are many orders of magnitude above that.

#include "ops/attention/mla_scores_avx512bf16.h"

#include <algorithm>

// GCC 12 warns that _mm512_undefined_*() inside the intrinsics is used uninitialized
// (GCC bug 105593, fixed in GCC 13); the value is a don't-care operand.
#pragma GCC diagnostic push
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#define DSA_TARGET_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

namespace dsa::mla_internal {
namespace {

constexpr int kLanes = 16;  // dwords (bf16 pairs) per vector

template <int kRows, int kCols>
DSA_TARGET_AVX512BF16 inline void dot_block(const uint32_t* q, const uint32_t* k, int pairs,
                                            float scale, float* scores, int score_stride) {
  __m512 acc[kRows][kCols];
  for (int r = 0; r < kRows; ++r) {
    for (int c = 0; c < kCols; ++c) acc[r][c] = _mm512_setzero_ps();
  }
  for (int i = 0; i < pairs; i += kLanes) {
    __m512bh key[kCols];
    for (int c = 0; c < kCols; ++c) {
      const __m512i loaded = _mm512_loadu_si512(k + c * pairs + i);
      // A vector cast reinterprets the register's bits; a reference cast would be an
      // aliasing violation.
      key[c] = (__m512bh)loaded;
    }
    for (int r = 0; r < kRows; ++r) {
      const __m512i loaded = _mm512_loadu_si512(q + r * pairs + i);
      const __m512bh query = (__m512bh)loaded;
      for (int c = 0; c < kCols; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], query, key[c]);
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int c = 0; c < kCols; ++c) {
      scores[r * score_stride + c] = _mm512_reduce_add_ps(acc[r][c]) * scale;
    }
  }
}

template <int kRows>
DSA_TARGET_AVX512BF16 void score_rows(const uint32_t* q, const uint32_t* k, int count, int pairs,
                                      float scale, float* scores, int score_stride) {
  int c = 0;
  for (; c + 4 <= count; c += 4) {
    dot_block<kRows, 4>(q, k + c * pairs, pairs, scale, scores + c, score_stride);
  }
  for (; c < count; ++c) {
    dot_block<kRows, 1>(q, k + c * pairs, pairs, scale, scores + c, score_stride);
  }
}

}  // namespace

DSA_TARGET_AVX512BF16 void to_bf16_pairs_avx512bf16(const float* x, int64_t rows, int64_t x_stride,
                                                    int dim, uint32_t* out) {
  const int pairs = bf16_pair_count(dim);
  for (int64_t r = 0; r < rows; ++r) {
    for (int i = 0; i < 2 * pairs; i += 2 * kLanes) {
      // Masked loads read only [i, dim) and give zeros past it (the padding of the last vector);
      // i < dim always, so only the upper half can be empty.
      const int low = std::min(dim - i, kLanes), high = std::clamp(dim - i - kLanes, 0, kLanes);
      const float* row = x + r * x_stride + i;
      const __m512 low_values = _mm512_maskz_loadu_ps(__mmask16((1u << low) - 1), row);
      const __m512 high_values =
          high > 0 ? _mm512_maskz_loadu_ps(__mmask16((1u << high) - 1), row + kLanes)
                   : _mm512_setzero_ps();
      const __m512bh packed =  // exact: the values are bf16 already
          _mm512_cvtne2ps_pbh(high_values, low_values);
      _mm512_storeu_si512(out + r * pairs + i / 2, reinterpret_cast<const __m512i&>(packed));
    }
  }
}

DSA_TARGET_AVX512BF16 void score_chunk_avx512bf16(const uint32_t* q, int rows, const uint32_t* k,
                                                  int count, int pairs, float scale, float* scores,
                                                  int score_stride) {
  int r = 0;
  for (; r + 4 <= rows; r += 4) {
    score_rows<4>(q + r * pairs, k, count, pairs, scale, scores + r * score_stride, score_stride);
  }
  for (; r < rows; ++r) {
    score_rows<1>(q + r * pairs, k, count, pairs, scale, scores + r * score_stride, score_stride);
  }
}

}  // namespace dsa::mla_internal

#pragma GCC diagnostic pop

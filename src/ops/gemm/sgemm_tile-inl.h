// The pieces of a 12×32 register tile that the fp32 and the bf16 sgemm kernels share
// (sgemm_avx512.cc, sgemm_avx512_bf16.cc): the column mask of an edge tile, and writing the tile
// to C as alpha·acc + beta·C. Included only by those two files, after <immintrin.h>; always
// inlined, so the accumulators stay in registers.
#pragma once

#include <cstdint>

#include "ops/gemm/sgemm_internal.h"

namespace dsa::sgemm_internal {

// The first `cols` lanes of 16 (none for cols <= 0, all for cols >= 16).
__attribute__((always_inline, target("avx512f"))) inline __mmask16 column_mask(int64_t cols) {
  if (cols >= 16) return __mmask16(0xFFFF);
  if (cols <= 0) return __mmask16(0);
  return __mmask16((1u << cols) - 1u);
}

// c[r][j] = alpha·acc[r][j] + beta·c[r][j] for r < rows, j < cols, acc0 holding columns 0..15
// and acc1 16..31 (beta = 0: c is not read).
__attribute__((always_inline, target("avx512f"))) inline void store_tile(const __m512 (&acc0)[kMR],
                                                                         const __m512 (&acc1)[kMR],
                                                                         float* c, int64_t ldc,
                                                                         int64_t rows, int64_t cols,
                                                                         float alpha, float beta) {
  const __mmask16 mask0 = column_mask(cols), mask1 = column_mask(cols - 16);
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 12
  for (int r = 0; r < kMR; ++r) {
    if (r < rows) {
      float* row = c + r * ldc;
      __m512 v0 = _mm512_mul_ps(va, acc0[r]);
      __m512 v1 = _mm512_mul_ps(va, acc1[r]);
      if (beta != 0.0f) {
        v0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask0, row), v0);
        v1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask1, row + 16), v1);
      }
      _mm512_mask_storeu_ps(row, mask0, v0);
      _mm512_mask_storeu_ps(row + 16, mask1, v1);
    }
  }
}

}  // namespace dsa::sgemm_internal

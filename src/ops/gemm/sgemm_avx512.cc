// The AVX-512 sgemm (see sgemm.h): Goto/BLIS-style blocking around a 12×32 register tile.
//
// C is computed in blocks of kNC columns × kSgemmDepthBlock (kKC) depth × kMC rows. For each
// depth block, op(B)'s kKC×kNC block is packed into panels of kNR columns ([k][kNR], zero
// padded), op(A)'s kMC×kKC block into panels of kMR rows ([k][kMR], zero padded), and the
// micro-kernel multiplies one A panel by one B panel into 24 accumulators (12 rows × 2 vectors
// of 16 columns): per k, two loads of B and 12 broadcasts of A feed 24 FMAs. A B panel (32 KB)
// stays in L1 while the A panels of the block (≤ 270 KB) come from L2.
//
// Rounding: each C element is one FMA chain over its depth block in k order, then
// C = alpha·acc + beta·C (beta = 1 after the first block). Tiles at the edges run the same
// chain on zero-padded panels and store under a mask, so the result depends only on k.
// Compiled with target attributes on each function; sgemm.cc checks the CPU.

#include <algorithm>
#include <cstring>

#include "core/aligned_buffer.h"
#include "ops/gemm/sgemm.h"
#include "ops/gemm/sgemm_internal.h"

// GCC 12 warns that _mm512_undefined_*() inside the intrinsics is used uninitialized
// (GCC bug 105593, fixed in GCC 13); the value is a don't-care operand.
#pragma GCC diagnostic push
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "ops/gemm/sgemm_tile-inl.h"

#define DSA_TARGET_AVX512 __attribute__((target("avx512f")))

namespace dsa::sgemm_internal {
namespace {

// Packing space of the calling thread (the pool's threads call sgemm concurrently).
struct PackSpace {
  AlignedBuffer a{size_t(kMC * kKC) * sizeof(float)};
  AlignedBuffer b{size_t(kKC * kNC) * sizeof(float)};
};

PackSpace& pack_space() {
  thread_local PackSpace space;
  return space;
}

// out[j][i] = in[i][j] for a 16×16 block of floats in registers: pairs interleaved, then 4×4
// blocks within 128-bit lanes, then the lanes across registers.
DSA_TARGET_AVX512 void transpose16x16(const __m512 in[16], __m512 out[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(in[2 * i], in[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(in[2 * i], in[2 * i + 1]);
  }
  // u[4i + c], lane L: rows 4i..4i+3 of column 4L + c.
  for (int i = 0; i < 4; ++i) {
    u[4 * i + 0] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int c = 0; c < 4; ++c) {
    const __m512 even_lo = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);  // lanes 0, 2
    const __m512 odd_lo = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xDD);   // lanes 1, 3
    const __m512 even_hi = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
    const __m512 odd_hi = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xDD);
    out[c] = _mm512_shuffle_f32x4(even_lo, even_hi, 0x88);      // column c
    out[4 + c] = _mm512_shuffle_f32x4(odd_lo, odd_hi, 0x88);    // column 4 + c
    out[8 + c] = _mm512_shuffle_f32x4(even_lo, even_hi, 0xDD);  // column 8 + c
    out[12 + c] = _mm512_shuffle_f32x4(odd_lo, odd_hi, 0xDD);   // column 12 + c
  }
}

// Up to 16 rows (row i at src + i·stride, `count` of them, the rest zero) × 16 consecutive
// floats (`len` of them, the rest zero), transposed: out[p] holds element p of every row.
DSA_TARGET_AVX512 void load_transposed(const float* src, int64_t stride, int64_t count, int64_t len,
                                       __m512 out[16]) {
  const __mmask16 mask = column_mask(len);
  __m512 rows[16];
  for (int i = 0; i < 16; ++i) {
    rows[i] = i < count ? _mm512_maskz_loadu_ps(mask, src + i * stride) : _mm512_setzero_ps();
  }
  transpose16x16(rows, out);
}

}  // namespace

// op(A)[i0 + i][p0 + p] for i < mc, p < kc into panels of kMR rows: panel q holds rows
// q·kMR .. q·kMR + kMR - 1 as [p][kMR], rows past mc zero.
DSA_TARGET_AVX512 void pack_a(bool trans_a, const float* a, int64_t lda, int64_t i0, int64_t p0,
                              int64_t mc, int64_t kc, float* dst) {
  const __mmask16 panel_row = column_mask(kMR);
  for (int64_t ir = 0; ir < mc; ir += kMR) {
    float* panel = dst + ir * kc;
    const int64_t rows = std::min(kMR, mc - ir);
    if (trans_a) {  // op(A)[i][p] = a[p][i]: the kMR floats of a panel row are consecutive
      const __mmask16 present = column_mask(rows);
      for (int64_t p = 0; p < kc; ++p) {
        const __m512 v = _mm512_maskz_loadu_ps(present, a + (p0 + p) * lda + i0 + ir);
        _mm512_mask_storeu_ps(panel + p * kMR, panel_row, v);
      }
    } else {  // op(A)[i][p] = a[i][p]: 16 × 16 blocks transposed in registers
      const float* src = a + (i0 + ir) * lda + p0;
      for (int64_t p = 0; p < kc; p += 16) {
        const int64_t len = std::min<int64_t>(16, kc - p);
        __m512 columns[16];
        load_transposed(src + p, lda, rows, len, columns);
        for (int64_t q = 0; q < len; ++q) {
          _mm512_mask_storeu_ps(panel + (p + q) * kMR, panel_row, columns[q]);
        }
      }
    }
  }
}

// op(B)[p0 + p][j0 + j] for p < kc, j < nc into panels of kNR columns ([p][kNR], columns past
// nc zero).
DSA_TARGET_AVX512 void pack_b(bool trans_b, const float* b, int64_t ldb, int64_t p0, int64_t j0,
                              int64_t kc, int64_t nc, float* dst) {
  for (int64_t jr = 0; jr < nc; jr += kNR) {
    float* panel = dst + jr * kc;
    const int64_t cols = std::min(kNR, nc - jr);
    if (trans_b) {  // op(B)[p][j] = b[j][p]: 16 × 16 blocks transposed in registers
      for (int64_t half = 0; half < kNR; half += 16) {
        const int64_t count = std::clamp<int64_t>(cols - half, 0, 16);
        const float* src = b + (j0 + jr + half) * ldb + p0;
        for (int64_t p = 0; p < kc; p += 16) {
          const int64_t len = std::min<int64_t>(16, kc - p);
          __m512 columns[16];
          load_transposed(src + p, ldb, count, len, columns);
          for (int64_t q = 0; q < len; ++q) {
            _mm512_store_ps(panel + (p + q) * kNR + half, columns[q]);
          }
        }
      }
    } else {  // op(B)[p][j] = b[p][j]: kNR consecutive floats per p
      const __mmask16 mask0 = column_mask(cols), mask1 = column_mask(cols - 16);
      for (int64_t p = 0; p < kc; ++p) {
        const float* src = b + (p0 + p) * ldb + j0 + jr;
        _mm512_store_ps(panel + p * kNR, _mm512_maskz_loadu_ps(mask0, src));
        _mm512_store_ps(panel + p * kNR + 16, _mm512_maskz_loadu_ps(mask1, src + 16));
      }
    }
  }
}

namespace {

// c[r][j] = alpha·Σ_p ap[p][r]·bp[p][j] + beta·c[r][j] for r < rows, j < cols (beta = 0: c is
// not read).
DSA_TARGET_AVX512 void micro_kernel(int64_t kc, const float* __restrict ap,
                                    const float* __restrict bp, float* c, int64_t ldc, int64_t rows,
                                    int64_t cols, float alpha, float beta) {
  __m512 acc0[kMR], acc1[kMR];
#pragma GCC unroll 12
  for (int r = 0; r < kMR; ++r) {
    acc0[r] = _mm512_setzero_ps();
    acc1[r] = _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < kc; ++p) {
    const __m512 b0 = _mm512_load_ps(bp);
    const __m512 b1 = _mm512_load_ps(bp + 16);
#pragma GCC unroll 12
    for (int r = 0; r < kMR; ++r) {
      const __m512 a = _mm512_set1_ps(ap[r]);
      acc0[r] = _mm512_fmadd_ps(a, b0, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(a, b1, acc1[r]);
    }
    ap += kMR;
    bp += kNR;
  }
  store_tile(acc0, acc1, c, ldc, rows, cols, alpha, beta);
}

}  // namespace

void scale_c(int64_t m, int64_t n, float beta, float* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    float* row = c + i * ldc;
    for (int64_t j = 0; j < n; ++j) row[j] = beta == 0.0f ? 0.0f : beta * row[j];
  }
}

void sgemm_avx512(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                  int64_t ldc) {
  if (k <= 0) {
    scale_c(m, n, beta, c, ldc);
    return;
  }
  PackSpace& space = pack_space();
  float* a_pack = reinterpret_cast<float*>(space.a.data());
  float* b_pack = reinterpret_cast<float*>(space.b.data());
  for (int64_t jc = 0; jc < n; jc += kNC) {
    const int64_t nc = std::min(kNC, n - jc);
    for (int64_t pc = 0; pc < k; pc += kKC) {
      const int64_t kc = std::min(kKC, k - pc);
      pack_b(trans_b, b, ldb, pc, jc, kc, nc, b_pack);
      const float block_beta = pc == 0 ? beta : 1.0f;
      for (int64_t ic = 0; ic < m; ic += kMC) {
        const int64_t mc = std::min(kMC, m - ic);
        pack_a(trans_a, a, lda, ic, pc, mc, kc, a_pack);
        for (int64_t jr = 0; jr < nc; jr += kNR) {
          for (int64_t ir = 0; ir < mc; ir += kMR) {
            micro_kernel(kc, a_pack + ir * kc, b_pack + jr * kc, c + (ic + ir) * ldc + jc + jr, ldc,
                         std::min(kMR, mc - ir), std::min(kNR, nc - jr), alpha, block_beta);
          }
        }
      }
    }
  }
}

}  // namespace dsa::sgemm_internal

#pragma GCC diagnostic pop

// The bf16-compute sgemm (see sgemm.h, sgemm_bf16) on AVX512-BF16's vdpbf16ps: the blocking of
// sgemm_avx512.cc, with the packed panels rounded to bf16 and pairs of depth interleaved.
//
// Each depth block is packed as fp32 panels by the fp32 kernel's packing (which handles the
// transposes), then each panel is rounded to bf16 (vcvtne2ps2bf16: round to nearest even)
// with depths 2q and 2q + 1 side by side, the layout vdpbf16ps reads: a B panel is
// [q][kNR][2] and an A panel [q][kMR] 32-bit pairs. The micro-kernel keeps the 12×32 tile: per
// pair of depths, two loads of B and 12 broadcasts of an A pair feed 24 vdpbf16ps, each of
// which adds two exact products (a bf16 product fits an fp32) per lane. So one instruction does
// the work of two FMAs, at the price of operands rounded to 8 significant bits.
//
// An odd depth pads its last pair with zeros. Rounding: the fp32 accumulation of a pair's two
// products follows the instruction (denormals flushed); the blocks are added to C in order as
// in the fp32 kernel, so the result still depends on k alone, never on m, n or the tile.

#include <algorithm>

#include "core/aligned_buffer.h"
#include "ops/gemm/sgemm_internal.h"

// GCC 12's intrinsics headers warn about their own _mm512_undefined_*() (GCC bug 105593).
#pragma GCC diagnostic push
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "ops/gemm/sgemm_tile-inl.h"

#define DSA_TARGET_BF16 __attribute__((target("avx512f,avx512bw,avx512bf16")))

namespace dsa::sgemm_internal {
namespace {

constexpr int64_t kPairs = (kKC + 1) / 2;  // depth pairs of a whole block

// fp32 staging panels and their bf16 forms, per thread (the pool's threads call concurrently).
struct Bf16PackSpace {
  AlignedBuffer a32{size_t(kMC * kKC) * sizeof(float)};
  AlignedBuffer b32{size_t(kKC * kNC) * sizeof(float)};
  AlignedBuffer a16{size_t(kMC * kPairs) * sizeof(uint32_t)};
  AlignedBuffer b16{size_t(kPairs * kNC) * sizeof(uint32_t)};
};

Bf16PackSpace& pack_space() {
  thread_local Bf16PackSpace space;
  return space;
}

// Words 2j and 2j + 1 of the result: bf16(even[j]) and bf16(odd[j]), j < 16.
DSA_TARGET_BF16 __m512i interleave_bf16(__m512 even, __m512 odd) {
  // vcvtne2ps2bf16 puts its second operand in words 0..15 and its first in 16..31.
  const __m512i halves = __m512i(_mm512_cvtne2ps_pbh(odd, even));
  const __m512i order = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24,
                                         8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(order, halves);
}

// An fp32 panel [kc][width] (width = kMR or kNR) to bf16 pairs [(kc + 1) / 2][width], 16
// columns at a time; a missing odd depth is zero.
DSA_TARGET_BF16 void round_panel(const float* src, int64_t kc, int64_t width, uint32_t* dst) {
  for (int64_t c = 0; c < width; c += 16) {
    const __mmask16 mask = column_mask(width - c);
    for (int64_t q = 0; 2 * q < kc; ++q) {
      const __m512 even = _mm512_maskz_loadu_ps(mask, src + 2 * q * width + c);
      const __m512 odd = 2 * q + 1 < kc ? _mm512_maskz_loadu_ps(mask, src + (2 * q + 1) * width + c)
                                        : _mm512_setzero_ps();
      _mm512_mask_storeu_epi32(dst + q * width + c, mask, interleave_bf16(even, odd));
    }
  }
}

// c[r][j] = alpha·Σ_q ap[q][r]·bp[q][j] + beta·c[r][j] over pairs of depth (beta = 0: c is not
// read).
DSA_TARGET_BF16 void micro_kernel(int64_t pairs, const uint32_t* __restrict ap,
                                  const uint32_t* __restrict bp, float* c, int64_t ldc,
                                  int64_t rows, int64_t cols, float alpha, float beta) {
  __m512 acc0[kMR], acc1[kMR];
#pragma GCC unroll 12
  for (int r = 0; r < kMR; ++r) {
    acc0[r] = _mm512_setzero_ps();
    acc1[r] = _mm512_setzero_ps();
  }
  for (int64_t q = 0; q < pairs; ++q) {
    const __m512bh b0 = __m512bh(_mm512_load_si512(bp));
    const __m512bh b1 = __m512bh(_mm512_load_si512(bp + 16));
#pragma GCC unroll 12
    for (int r = 0; r < kMR; ++r) {
      const __m512bh a = __m512bh(_mm512_set1_epi32(int(ap[r])));
      acc0[r] = _mm512_dpbf16_ps(acc0[r], a, b0);
      acc1[r] = _mm512_dpbf16_ps(acc1[r], a, b1);
    }
    ap += kMR;
    bp += kNR;
  }
  store_tile(acc0, acc1, c, ldc, rows, cols, alpha, beta);
}

}  // namespace

void sgemm_avx512_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                       const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                       float* c, int64_t ldc) {
  if (k <= 0) {
    scale_c(m, n, beta, c, ldc);
    return;
  }
  Bf16PackSpace& space = pack_space();
  float* a32 = reinterpret_cast<float*>(space.a32.data());
  float* b32 = reinterpret_cast<float*>(space.b32.data());
  uint32_t* a16 = reinterpret_cast<uint32_t*>(space.a16.data());
  uint32_t* b16 = reinterpret_cast<uint32_t*>(space.b16.data());
  for (int64_t jc = 0; jc < n; jc += kNC) {
    const int64_t nc = std::min(kNC, n - jc);
    for (int64_t pc = 0; pc < k; pc += kKC) {
      const int64_t kc = std::min(kKC, k - pc);
      const int64_t pairs = (kc + 1) / 2;
      pack_b(trans_b, b, ldb, pc, jc, kc, nc, b32);
      for (int64_t jr = 0; jr < nc; jr += kNR)
        round_panel(b32 + jr * kc, kc, kNR, b16 + jr * pairs);
      const float block_beta = pc == 0 ? beta : 1.0f;
      for (int64_t ic = 0; ic < m; ic += kMC) {
        const int64_t mc = std::min(kMC, m - ic);
        pack_a(trans_a, a, lda, ic, pc, mc, kc, a32);
        for (int64_t ir = 0; ir < mc; ir += kMR) {
          round_panel(a32 + ir * kc, kc, kMR, a16 + ir * pairs);
        }
        for (int64_t jr = 0; jr < nc; jr += kNR) {
          for (int64_t ir = 0; ir < mc; ir += kMR) {
            micro_kernel(pairs, a16 + ir * pairs, b16 + jr * pairs, c + (ic + ir) * ldc + jc + jr,
                         ldc, std::min(kMR, mc - ir), std::min(kNR, nc - jr), alpha, block_beta);
          }
        }
      }
    }
  }
}

}  // namespace dsa::sgemm_internal

#pragma GCC diagnostic pop

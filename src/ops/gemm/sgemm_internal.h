// The AVX-512 kernels behind ops/gemm/sgemm.h (sgemm_avx512.cc, sgemm_avx512_bf16.cc) and the
// blocking and packing they share; the caller has checked the CPU.
#pragma once

#include <cstdint>

#include "ops/gemm/sgemm.h"

namespace dsa::sgemm_internal {

constexpr int64_t kMR = 12;                // rows of the register tile
constexpr int64_t kNR = 32;                // columns of the register tile (2 vectors)
constexpr int64_t kKC = kSgemmDepthBlock;  // depth of a block
constexpr int64_t kMC = 22 * kMR;          // 264 rows: the training ops' 256-row blocks in one
constexpr int64_t kNC = 2048;              // columns of a packed B block (2 MB)

// op(A)[i0 + i][p0 + p] for i < mc, p < kc into fp32 panels of kMR rows: panel q holds rows
// q·kMR .. q·kMR + kMR - 1 as [p][kMR], rows past mc zero. AVX-512F.
void pack_a(bool trans_a, const float* a, int64_t lda, int64_t i0, int64_t p0, int64_t mc,
            int64_t kc, float* dst);

// op(B)[p0 + p][j0 + j] for p < kc, j < nc into fp32 panels of kNR columns ([p][kNR], columns
// past nc zero). AVX-512F; dst 64-byte aligned.
void pack_b(bool trans_b, const float* b, int64_t ldb, int64_t p0, int64_t j0, int64_t kc,
            int64_t nc, float* dst);

// C = beta·C (0 where beta = 0) for an empty depth.
void scale_c(int64_t m, int64_t n, float beta, float* c, int64_t ldc);

void sgemm_avx512(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                  int64_t ldc);

// Needs AVX512-BF16 and AVX512-BW besides.
void sgemm_avx512_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                       const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                       float* c, int64_t ldc);

}  // namespace dsa::sgemm_internal

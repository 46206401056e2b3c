// The AVX-512 sgemm behind ops/gemm/sgemm.h; the caller has checked the CPU.
#pragma once

#include <cstdint>

namespace dsa::sgemm_internal {

void sgemm_avx512(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                  int64_t ldc);

}  // namespace dsa::sgemm_internal

#include "ops/gemm/sgemm.h"

#include <cblas.h>

#include <cstdlib>
#include <cstring>

#include "core/cpu_features.h"
#include "ops/gemm/sgemm_internal.h"

namespace dsa {
namespace {

// DSA_SGEMM=openblas selects OpenBLAS even where the AVX-512 kernel runs, to compare the two in
// one binary (docs/training-speed.md).
bool use_avx512() {
  static const bool use = [] {
    const char* forced = std::getenv("DSA_SGEMM");
    if (forced && std::strcmp(forced, "openblas") == 0) return false;
    return detect_cpu_features().avx512f;
  }();
  return use;
}

}  // namespace

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  if (use_avx512()) {
    sgemm_internal::sgemm_avx512(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, int(m), int(n), int(k), alpha, a, int(lda), b,
              int(ldb), beta, c, int(ldc));
}

void sgemm_reference(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                     const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                     int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double sum = 0.0;
      for (int64_t p = 0; p < k; ++p) {
        const float x = trans_a ? a[p * lda + i] : a[i * lda + p];
        const float y = trans_b ? b[j * ldb + p] : b[p * ldb + j];
        sum += double(x) * double(y);
      }
      const double old = beta == 0.0f ? 0.0 : double(beta) * double(c[i * ldc + j]);
      c[i * ldc + j] = float(double(alpha) * sum + old);
    }
  }
}

const char* sgemm_implementation() { return use_avx512() ? "avx512" : "openblas"; }

bool sgemm_calls_openblas() { return !use_avx512(); }

}  // namespace dsa

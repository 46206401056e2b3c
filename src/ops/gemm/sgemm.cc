#include "ops/gemm/sgemm.h"

#include <cblas.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/float_formats.h"
#include "core/printable.h"
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

bool use_avx512_bf16() {
  static const bool use = use_avx512() && detect_cpu_features().avx512bf16;
  return use;
}

// The rows × cols matrix at x (row stride ld) with every element rounded to bf16, packed.
std::vector<float> rounded_to_bf16(const float* x, int64_t rows, int64_t cols, int64_t ld) {
  std::vector<float> out(size_t(rows * cols));
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) out[size_t(i * cols + j)] = round_to_bf16(x[i * ld + j]);
  }
  return out;
}

using FloatProduct = void(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                          const float*, int64_t, float, float*, int64_t);

// `product` (an fp32 sgemm) on packed copies of op(A)'s and op(B)'s operands rounded to bf16.
void product_of_rounded(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                        const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                        float* c, int64_t ldc, FloatProduct* product) {
  const int64_t a_rows = trans_a ? k : m, a_cols = trans_a ? m : k;
  const int64_t b_rows = trans_b ? n : k, b_cols = trans_b ? k : n;
  const std::vector<float> a_bf16 = rounded_to_bf16(a, a_rows, a_cols, lda);
  const std::vector<float> b_bf16 = rounded_to_bf16(b, b_rows, b_cols, ldb);
  product(trans_a, trans_b, m, n, k, alpha, a_bf16.data(), a_cols, b_bf16.data(), b_cols, beta, c,
          ldc);
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

void sgemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  if (use_avx512_bf16()) {
    sgemm_internal::sgemm_avx512_bf16(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
                                      ldc);
    return;
  }
  product_of_rounded(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, sgemm);
}

void sgemm_bf16_reference(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                          const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                          float* c, int64_t ldc) {
  product_of_rounded(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
                     sgemm_reference);
}

const char* sgemm_bf16_implementation() { return use_avx512_bf16() ? "avx512-bf16" : "emulated"; }

const char* matmul_precision_name(MatmulPrecision precision) {
  return precision == MatmulPrecision::kBf16 ? "bf16" : "fp32";
}

MatmulPrecision parse_matmul_precision(const std::string& name, const std::string& flag) {
  if (name == "fp32") return MatmulPrecision::kFp32;
  if (name == "bf16") return MatmulPrecision::kBf16;
  fail("{}: expected fp32 or bf16, got \"{}\"", flag, printable(name));
}

void sgemm(MatmulPrecision precision, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
           float alpha, const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
           float* c, int64_t ldc) {
  if (precision == MatmulPrecision::kBf16) {
    sgemm_bf16(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  } else {
    sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
}

const char* sgemm_implementation() { return use_avx512() ? "avx512" : "openblas"; }

bool sgemm_calls_openblas() { return !use_avx512(); }

}  // namespace dsa

// Single-threaded fp32 matrix products (BLAS sgemm semantics, row-major) for the training ops,
// which spread fixed-shape blocks of them over the pool (ops/gemm/blas_blocks.h).
//
// Why not just OpenBLAS: with AVX-512 our own kernel (sgemm_avx512.cc) runs the training
// shapes at about 1.7x OpenBLAS's speed when OpenBLAS is held to its AVX2 kernels (this sandbox
// sets OPENBLAS_CORETYPE=Haswell in every process; docs/training-speed.md), and its rounding is
// a function of k alone: every C element is one chain of FMAs over k in order, in blocks of
// kSgemmDepthBlock, whatever m, n, the tile or the edge it lands in. So a row's result never
// depends on how many rows share the call. Without AVX-512 it calls OpenBLAS (single-threaded).
#pragma once

#include <cstdint>
#include <string>

namespace dsa {

// The depth (k) of one pass over C: every element sums its products in k order within a block
// and adds the blocks to C in order.
inline constexpr int64_t kSgemmDepthBlock = 256;

// C[m×n] = alpha · op(A)[m×k] · op(B)[k×n] + beta · C, op(X) = X or Xᵀ; lda/ldb/ldc are the row
// strides of A, B, C as stored. beta = 0 ignores C's contents (NaN there does not propagate).
// Runs on the calling thread only.
void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// The readable definition: a triple loop accumulating in double (for tests).
void sgemm_reference(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                     const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                     int64_t ldc);

// Which implementation sgemm() uses on this CPU: "avx512" or "openblas".
const char* sgemm_implementation();
bool sgemm_calls_openblas();

// bf16 compute: sgemm with the elements of op(A) and op(B) rounded to bf16 (nearest even)
// before they are multiplied; the products (exact in fp32) are accumulated in fp32, C stays
// fp32. With AVX512-BF16 it runs vdpbf16ps (two products per lane per instruction, so about
// twice the fp32 kernel's rate; sgemm_avx512_bf16.cc), else rounded copies through sgemm()
// (the same values, slower). The rounding of the sums depends on k alone, as in sgemm().
void sgemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                int64_t ldc);

// The readable definition: operands rounded to bf16, products accumulated in double.
void sgemm_bf16_reference(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                          const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                          float* c, int64_t ldc);

// "avx512-bf16", or "emulated" (rounded copies through sgemm()).
const char* sgemm_bf16_implementation();

// The precision of a training product: fp32 (sgemm) or bf16 compute (sgemm_bf16).
enum class MatmulPrecision { kFp32, kBf16 };

const char* matmul_precision_name(MatmulPrecision precision);  // "fp32" or "bf16"
// "fp32" or "bf16"; anything else throws dsa::Error naming `flag`.
MatmulPrecision parse_matmul_precision(const std::string& name, const std::string& flag);

// sgemm() or sgemm_bf16() by precision.
void sgemm(MatmulPrecision precision, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
           float alpha, const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
           float* c, int64_t ldc);

}  // namespace dsa

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

}  // namespace dsa

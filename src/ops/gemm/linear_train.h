// A bias-free linear layer for training in fp32 (docs/training-engine.md):
//   forward   y  = x · Wᵀ                 [M, N] = [M, K] · [N, K]ᵀ, y OVERWRITTEN
//   backward  dx += dy · W                [M, K] = [M, N] · [N, K]
//             dW += dyᵀ · x               [N, K] = [M, N]ᵀ · [M, K]
// Both gradients are ACCUMULATED, dx so that a tensor feeding several layers sums its gradients,
// dW so that callers can sum micro-batches; either may be null (skipped).
#pragma once

#include <cstdint>

#include "core/thread_pool.h"
#include "ops/gemm/sgemm.h"

namespace dsa {

template <typename Real>
struct LinearTrain {
  const Real* x = nullptr;       // [M, K]
  const Real* weight = nullptr;  // [N, K]
  Real* y = nullptr;             // [M, N] forward: overwritten
  const Real* dy = nullptr;      // [M, N] backward input
  Real* dx = nullptr;            // [M, K] backward: ACCUMULATED (+=); null = skip
  Real* dweight = nullptr;       // [N, K] backward: accumulated (+=); null = skip
  int64_t m = 0;                 // M rows (tokens); 0 is a no-op
  int64_t n = 0;                 // N output features
  int64_t k = 0;                 // K input features
  // The fast path's products: fp32, or bf16 compute (operands rounded to bf16, sums in fp32;
  // ops/gemm/sgemm.h). The references always compute in Real.
  MatmulPrecision precision = MatmulPrecision::kFp32;
};
using LinearTrainParams = LinearTrain<float>;

// Shapes (m >= 0, n and k > 0, each matrix within BLAS's int); throws dsa::Error naming the field.
template <typename Real>
void validate(const LinearTrain<Real>& params);
// validate() plus the pointers that pass reads and writes.
template <typename Real>
void validate_forward(const LinearTrain<Real>& params);
template <typename Real>
void validate_backward(const LinearTrain<Real>& params);

// Scalar references (Real = float or double): dot products summed in double.
template <typename Real>
void linear_train_forward_reference(const LinearTrain<Real>& params);
template <typename Real>
void linear_backward_reference(const LinearTrain<Real>& params);

// sgemm (ops/gemm/sgemm.h) in fixed 256-row blocks (the last one zero-padded), single-threaded
// calls spread over the pool (ops/gemm/blas_blocks.h), beta = 1 for the accumulations: every output
// element's rounding is independent of the row count and the thread count.
void linear_train_forward(const LinearTrainParams& params, ThreadPool& pool);
void linear_backward(const LinearTrainParams& params, ThreadPool& pool);

}  // namespace dsa

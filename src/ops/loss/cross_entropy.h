// The LM head fused with the cross-entropy loss (docs/training-engine.md, "Losses": lm), never
// holding the [T, vocab] logits at once:
//   logits[t]   = h[t] · Wᵀ
//   loss_sum    = Σ_{t: target[t] >= 0} −log softmax(logits[t])[target[t]]
//   dlogits[t]  = grad_scale · (softmax(logits[t]) − onehot(target[t])) for counted rows,
//                 0 for ignored (-1) rows
//   dh += dlogits · W;   dweight += dlogitsᵀ · h
// Forward and backward run in one call; the backward runs when dh or dweight is set, and each
// gradient is computed only where its pointer is set.
#pragma once

#include <cstdint>

#include "core/thread_pool.h"
#include "ops/gemm/sgemm.h"

namespace dsa {

template <typename Real>
struct LmHeadCrossEntropy {
  const Real* h = nullptr;           // [T, D] final-norm output
  const Real* weight = nullptr;      // [V, D] lm_head
  const int32_t* targets = nullptr;  // [T] next-token ids in [0, V), -1 = not counted
  Real grad_scale = 1;               // d(total loss)/d(loss_sum), e.g. 1 / counted positions
  Real* loss_sum = nullptr;          // [1] output (overwritten)
  Real* row_loss = nullptr;          // [T] optional output: each row's −log p (0 if not counted)
  Real* dh = nullptr;                // [T, D] ACCUMULATED (+=); null = skip
  Real* dweight = nullptr;           // [V, D] ACCUMULATED (+=); null = skip
  int64_t tokens = 0;                // T
  int64_t dim = 0;                   // D
  int64_t vocab = 0;                 // V
  int64_t chunk_rows = 64;           // rows of logits held at once (fast version), >= 1
  // The fast version's products: fp32, or bf16 compute (ops/gemm/sgemm.h); the reference
  // always computes in Real.
  MatmulPrecision precision = MatmulPrecision::kFp32;
};
using LmHeadCrossEntropyParams = LmHeadCrossEntropy<float>;

// Throws dsa::Error naming the bad field (a bad target names its row).
template <typename Real>
void validate(const LmHeadCrossEntropy<Real>& params);

// Scalar reference, one row at a time, sums in Real in index order; float and double.
template <typename Real>
void lm_head_cross_entropy_reference(const LmHeadCrossEntropy<Real>& params);

// Rows in chunks of chunk_rows: the chunk's logits by single-threaded sgemms over blocks of the
// vocabulary spread on the pool (ops/gemm/blas_blocks.h), a stable log-sum-exp per row on the
// pool's threads (max subtracted, exps in fp32, their sum in double), the chunk's dlogits in
// place of its logits, then dh and dweight by blocked sgemms with beta = 1, chunks in order.
// Memory: chunk_rows · V floats besides the outputs; each chunk reads and writes all of dweight, so
// larger chunks make fewer passes over it. Bit-identical run to run; the result depends on
// chunk_rows (the order dweight's sums are taken in) and on OpenBLAS's kernels, not on the pool's
// thread count.
void lm_head_cross_entropy(const LmHeadCrossEntropyParams& params, ThreadPool& pool);

// Plain logits, out [T, V] = h [T, D] · weight [V, D]ᵀ (evaluation): sgemms over blocks of the
// vocabulary on the pool.
void lm_head_logits(const float* h, const float* weight, int64_t tokens, int64_t dim, int64_t vocab,
                    float* out, ThreadPool& pool);

}  // namespace dsa

// Training ops of the lightning indexer (docs/training-engine.md, "Lightning indexer" and
// "Losses"), all fp32 in the fast versions:
//   * its scores, I[t, s] = Σ_h w[t, h] · ReLU(q[t, h] · k[s]) for s <= t, and their backward;
//   * the target distribution p taken from the main attention (summed over heads, L1-normalised);
//   * the KL loss KL(p_t ‖ softmax(I[t, K_t])) per row, with its closed-form gradient.
// Key sets: K_t = {0 .. t} when `indices` is null (dense warm-up), else the row's listed keys
// (`indices` [T, topk], -1 = empty slot; each listed key s must satisfy s <= t and appear once),
// exactly the keys the main attention (ops/attention/mha_train.h) attended to.
//
// The references are templates over float and double (finite-difference tests run them in fp64);
// the fast versions take the float params.
#pragma once

#include <cstdint>

#include "core/thread_pool.h"

namespace dsa {

// I[t, s] = Σ_h w[t, h] · ReLU(q[t, h] · k[s])  for s <= t;  -inf for s > t.  ReLU'(0) = 0.
template <typename Real>
struct IndexerScoresTrain {
  const Real* q = nullptr;        // [T, Hi, D] indexer queries after RoPE
  const Real* k = nullptr;        // [T, D]     indexer keys after LayerNorm and RoPE
  const Real* w = nullptr;        // [T, Hi]    head weights (scales already folded in)
  Real* scores = nullptr;         // [T, T]     forward output
  const Real* dscores = nullptr;  // [T, T]     backward input (entries s > t are ignored)
  Real* dq = nullptr;             // [T, Hi, D] backward: OVERWRITTEN
  Real* dk = nullptr;             // [T, D]     backward: OVERWRITTEN
  Real* dw = nullptr;             // [T, Hi]    backward: OVERWRITTEN
  int64_t tokens = 0;             // T
  int64_t heads = 0;              // Hi
  int64_t dim = 0;                // D
};
using IndexerScoresTrainParams = IndexerScoresTrain<float>;

// The target distribution: the main attention's probabilities summed over heads and divided by H,
//   p[t, s] = (1/H) Σ_h exp(scale · q[t, h] · k[s, h] − lse[t, h])  for s in K_t, 0 elsewhere.
// A head whose lse is +inf (a row with no keys) contributes 0.
template <typename Real>
struct AttentionTarget {
  const Real* q = nullptr;           // [T, H, Dqk] the attention's queries (after RoPE)
  const Real* k = nullptr;           // [T, H, Dqk] its keys, per head
  const Real* lse = nullptr;         // [T, H]      its natural-log log-sum-exp per row and head
  const int32_t* indices = nullptr;  // [T, topk]   null: K_t = {0 .. t}
  int64_t topk = 0;                  // 0 when indices is null
  Real* p = nullptr;                 // [T, T]      output, OVERWRITTEN (zeros outside K_t)
  int64_t tokens = 0;                // T
  int64_t heads = 0;                 // H
  int64_t qk_dim = 0;                // Dqk
  Real scale = 0;                    // the attention's softmax scale, > 0
};
using AttentionTargetParams = AttentionTarget<float>;

// Per row t over K_t: q_t = softmax(I[t, K_t]), p̂_t = p_t / Σ_{K_t} p_t (p is renormalised over
// K_t; p must be >= 0 there),
//   row_loss[t]   = KL(p̂_t ‖ q_t) = Σ_{s∈K_t} p̂ log(p̂ / q)   (0 · log 0 = 0),
//   dscores[t, s] = grad_scale · (q_t[s] − p̂_t[s]) on K_t, 0 elsewhere (the closed form).
// A row whose p sums to 0 over K_t (or whose K_t is empty) has loss 0 and dscores 0: its loss is
// the constant 0. Every score on K_t must be finite (I is finite for s <= t).
template <typename Real>
struct IndexerKlLoss {
  const Real* scores = nullptr;      // [T, T] indexer scores I (entries outside K_t are not read)
  const Real* p = nullptr;           // [T, T] target (entries outside K_t are not read)
  const int32_t* indices = nullptr;  // [T, topk] null: K_t = {0 .. t}
  int64_t topk = 0;                  // 0 when indices is null
  Real* row_loss = nullptr;          // [T] output
  Real* dscores = nullptr;           // [T, T] output, OVERWRITTEN (null = skip)
  Real grad_scale = 1;               // d(total loss) / d(Σ_t row_loss[t])
  int64_t tokens = 0;                // T
};
using IndexerKlLossParams = IndexerKlLoss<float>;

// Throw dsa::Error naming the bad field. The backward needs q, k, w, dscores, dq, dk and dw;
// the index checks cost O(T · topk).
template <typename Real>
void validate_forward(const IndexerScoresTrain<Real>& params);
template <typename Real>
void validate_backward(const IndexerScoresTrain<Real>& params);
template <typename Real>
void validate(const AttentionTarget<Real>& params);
template <typename Real>
void validate(const IndexerKlLoss<Real>& params);

// Scalar references (sums in Real, in index order), instantiated for float and double.
template <typename Real>
void indexer_scores_train_forward_reference(const IndexerScoresTrain<Real>& params);
template <typename Real>
void indexer_scores_backward_reference(const IndexerScoresTrain<Real>& params);
template <typename Real>
void attention_target_reference(const AttentionTarget<Real>& params);
template <typename Real>
void indexer_kl_loss_reference(const IndexerKlLoss<Real>& params);

// Fast versions. Scores and the dense target run their q·k products as OpenBLAS sgemms over
// blocks of query rows (the elementwise work on the pool's threads); the backward reduces dk
// block after block with beta = 1. Results are bit-identical run to run; they do not depend on
// the pool's thread count, only on OpenBLAS's kernels and thread count (as any sgemm).
void indexer_scores_train_forward(const IndexerScoresTrainParams& params, ThreadPool& pool);
void indexer_scores_backward(const IndexerScoresTrainParams& params, ThreadPool& pool);
void attention_target(const AttentionTargetParams& params, ThreadPool& pool);
void indexer_kl_loss(const IndexerKlLossParams& params, ThreadPool& pool);

}  // namespace dsa

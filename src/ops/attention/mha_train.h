// Causal multi-head attention for training, fp32 forward and backward: MLA "in MHA form"
// (docs/training-engine.md, "Attention"). One sequence of T tokens at positions 0 .. T-1; every
// head has its own q, k of width qk_dim and v of width v_dim (the caller expands MLA's shared
// k_pe into every head and sums its gradient over heads itself).
//
//   score[t, h, s] = scale · q[t, h] · k[s, h]          for s in K_t
//   lse[t, h]      = log Σ_{s in K_t} exp(score[t, h, s])
//   P[t, h, s]     = exp(score[t, h, s] - lse[t, h]);   out[t, h] = Σ_s P[t, h, s] v[s, h]
//
// K_t = {0 .. t} (dense causal), or the keys row t lists in `indices` (DeepSeek Sparse
// Attention). A row with no valid key gets out = 0, lse = +inf and no gradient (FlashMLA's rule).
//
// Backward, per head, from dout and the forward's out and lse:
//   dP = dout · vᵀ,  Δ[t] = dout[t] · out[t],  dS = P ⊙ (dP - Δ)
//   dq = scale dS · k,  dk = scale dSᵀ · q,  dv = Pᵀ · dout
// dq, dk and dv are gradients of activations and are OVERWRITTEN (not accumulated).
#pragma once

#include <cstdint>

#include "core/thread_pool.h"

namespace dsa {

template <typename Real>
struct MhaTrain {
  const Real* q = nullptr;  // [T, H, Dqk]
  const Real* k = nullptr;  // [T, H, Dqk]
  const Real* v = nullptr;  // [T, H, Dv]
  // Sparse attention (DSA): row t attends only to the keys it lists, each s <= t, distinct,
  // -1 = empty slot. null = dense causal (row t attends to keys 0..t).
  const int32_t* indices = nullptr;  // [T, topk]
  int64_t topk = 0;
  Real* out = nullptr;         // [T, H, Dv]  forward output
  Real* lse = nullptr;         // [T, H]      forward output: natural log Σ_s exp(scale q·k)
  const Real* dout = nullptr;  // [T, H, Dv]  backward input (backward also reads q, k, v, out, lse)
  Real* dq = nullptr;          // [T, H, Dqk] backward: OVERWRITTEN
  Real* dk = nullptr;          // [T, H, Dqk] backward: OVERWRITTEN
  Real* dv = nullptr;          // [T, H, Dv]  backward: OVERWRITTEN
  int64_t tokens = 0;          // T
  int64_t heads = 0;           // H
  int64_t qk_dim = 0;          // Dqk
  int64_t v_dim = 0;           // Dv
  Real scale = 0;              // softmax scale, > 0
};
using MhaTrainParams = MhaTrain<float>;

// Throw dsa::Error naming the bad field: shapes, q/k/v, and every index -1 or in [0, t] with no
// duplicates in a row (the message names the row and the slot). The _forward / _backward variants
// also check the pointers that pass reads and writes.
template <typename Real>
void validate(const MhaTrain<Real>& params);
template <typename Real>
void validate_forward(const MhaTrain<Real>& params);
template <typename Real>
void validate_backward(const MhaTrain<Real>& params);

// Scalar references (float and double), plain loops over the math above; the backward holds one
// [T, T] matrix of probabilities per head.
template <typename Real>
void mha_train_forward_reference(const MhaTrain<Real>& params);
template <typename Real>
void mha_backward_reference(const MhaTrain<Real>& params);

// Flash-attention style (mha_train_fast.cc): O(T·H·D) memory besides the inputs, SIMD inner
// loops over the pool's threads. Each output element is computed by one task in a fixed order,
// so the results are bit-identical run to run and do not depend on the thread count.
void mha_train_forward(const MhaTrainParams& params, ThreadPool& pool);
void mha_backward(const MhaTrainParams& params, ThreadPool& pool);

}  // namespace dsa

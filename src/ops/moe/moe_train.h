// The MoE router's training ops (docs/training-engine.md "FFN", "balance", "Router bias"), fp32:
//
//   gate:     s = sigmoid(logit) over the E experts of a token; the selection is select_experts
//             (moe.h: group-limited top-k on s + bias, ties to lower ids), a discrete choice
//             that passes no gradient;  g_i = s_i / Σ_{j selected} s_j · routed_scaling_factor
//             (norm_topk_prob), else s_i · routed_scaling_factor.
//   balance:  DeepSeek-V3's sequence-wise loss over one sequence of T tokens,
//             s' = s / Σ_e s_e (all E experts), f_e = E/(k·T) · #{t : e in expert_ids[t]} (a
//             constant), P_e = (1/T) Σ_t s'[t, e],  loss = alpha · Σ_e f_e · P_e.
//   bias:     the aux-loss-free update, bias_e += rate · sign(mean(load) − load_e).
//
// The references are templates over the scalar type (float and double) so that finite-difference
// tests can run them in fp64. The selection always runs on the logits converted to float (it is
// discrete, and this keeps the choice identical to inference's select_experts); only the
// continuous part (sigmoid, weights, gradients) runs in Real.
#pragma once

#include <cstdint>

#include "core/thread_pool.h"
#include "ops/moe/moe.h"

namespace dsa {

template <typename Real>
struct MoeGateTrain {
  const Real* logits = nullptr;    // [T, E] router logits x · gate.weightᵀ (the caller runs it)
  const float* bias = nullptr;     // [E] e_score_correction_bias, or null (no bias)
  MoeGateConfig config;            // E = num_experts, k = experts_per_token
  int64_t tokens = 0;              // T
  int32_t* expert_ids = nullptr;   // [T, k] forward output, best (biased) score first
  Real* expert_weights = nullptr;  // [T, k] forward output g
  const Real* dweights = nullptr;  // [T, k] backward input dL/dg
  Real* dlogits = nullptr;         // [T, E] backward output, ACCUMULATED (+=)
};
using MoeGateTrainParams = MoeGateTrain<float>;

template <typename Real>
struct MoeBalanceLoss {
  const Real* logits = nullptr;         // [T, E] router logits of one sequence
  const int32_t* expert_ids = nullptr;  // [T, k] the selection of the forward (distinct per row)
  int64_t tokens = 0;                   // T; T = 0 gives loss 0
  int64_t experts = 0;                  // E
  int64_t k = 0;                        // experts per token
  Real alpha = 0;                       // the loss weight, >= 0
  Real grad_scale = 1;                  // multiplies the gradient (e.g. 1 / sequences in batch)
  Real* loss = nullptr;                 // [1] output (written, not scaled by grad_scale)
  Real* dlogits = nullptr;              // [T, E] ACCUMULATED += grad_scale · dloss/dlogits;
                                        // null = loss only
};
using MoeBalanceLossParams = MoeBalanceLoss<float>;

// Throw dsa::Error naming the bad field. The backward and the balance loss also check every
// expert id (in [0, E), distinct within a row), since they read ids a caller kept.
template <typename Real>
void validate_forward(const MoeGateTrain<Real>& params);
template <typename Real>
void validate_backward(const MoeGateTrain<Real>& params);
template <typename Real>
void validate(const MoeBalanceLoss<Real>& params);

// Writes expert_ids and expert_weights. For float they are exactly select_experts' output.
template <typename Real>
void moe_gate_train_forward_reference(const MoeGateTrain<Real>& params);
// Reads logits, expert_ids and dweights; adds into dlogits (only the selected experts' columns).
template <typename Real>
void moe_gate_backward_reference(const MoeGateTrain<Real>& params);
template <typename Real>
void moe_balance_loss_reference(const MoeBalanceLoss<Real>& params);

// Threads over tokens. The gate ops do the reference's per-token arithmetic, so they are
// bit-identical to it. The balance loss vectorises the sigmoid (Highway, runtime dispatch) and
// sums per token, then over tokens in token order: its results do not depend on the thread count.
void moe_gate_train_forward(const MoeGateTrainParams& params, ThreadPool& pool);
void moe_gate_backward(const MoeGateTrainParams& params, ThreadPool& pool);
void moe_balance_loss(const MoeBalanceLossParams& params, ThreadPool& pool);

// load [E] += the number of (token, slot) entries routed to each expert; ids in [0, E).
void count_expert_load(const int32_t* expert_ids, int64_t tokens, int64_t k, int64_t experts,
                       int64_t* load);
// bias_e += rate · sign(mean(load) − load_e), sign(0) = 0; the sign is decided in integers, so
// an expert exactly at the mean is left unchanged. rate >= 0 (DeepSeek-V3 used 0.001).
void update_router_bias(const int64_t* load, int64_t experts, float rate, float* bias);

}  // namespace dsa

// DeepSeek-V3 MoE (dsa-reference.md §6.3, §6.4): a sigmoid gate with group-limited selection,
// SwiGLU experts, an fp32 combine in ascending expert order with the shared expert added last.
//
// Gate, per token:  s = sigmoid(x · Wgᵀ) (fp32),  b = s + bias (bias only steers selection)
//   group score = sum of the top 2 of b in the group (max of b when there is no bias),
//   keep the topk_groups best groups, pick the experts_per_token best b among their experts,
//   weight = s[e] (unbiased), renormalized to sum 1 (norm_topk_prob), × routed_scaling_factor.
//   Ties (groups or experts) go to the lower index. Experts are listed best first.
// Expert:  w2( bf16( silu(w1 x) * (w3 x) ) ), each linear as REF's (bf16 outputs).
// Combine: y = bf16( Σ_{e ascending} expert_e(x) * weight_e + shared(x) ), the sum in fp32.
#pragma once

#include <cstdint>
#include <functional>

#include "core/thread_pool.h"
#include "ops/gemm/gemm.h"

namespace dsa {

struct MoeGateConfig {
  int64_t num_experts = 256;      // n_routed_experts
  int64_t num_groups = 8;         // n_group
  int64_t topk_groups = 4;        // topk_group
  int64_t experts_per_token = 8;  // num_experts_per_tok
  float routed_scaling_factor = 2.5f;
  bool norm_topk_prob = true;
};

struct MoeGateParams {
  const float* x = nullptr;         // [T, D] bf16 values
  const bf16* weight = nullptr;     // [E, D] gate weight (REF multiplies it in fp32)
  const float* bias = nullptr;      // [E] e_score_correction_bias, or null (group score = max)
  int32_t* expert_ids = nullptr;    // [T, experts_per_token], best (biased) score first
  float* expert_weights = nullptr;  // [T, experts_per_token] fp32
  int64_t num_tokens = 0;
  int64_t dim = 0;
  MoeGateConfig config;
};

// w1, w3: [inter, D]; w2: [D, inter].
struct SwigluExpertWeights {
  LinearWeight w1;
  LinearWeight w2;
  LinearWeight w3;
};

struct MoeParams {
  // x, gate weight, bias and config; its expert_ids / expert_weights are unused (moe routes
  // internally).
  MoeGateParams gate;
  const SwigluExpertWeights* experts = nullptr;  // [E] routed experts
  const SwigluExpertWeights* shared = nullptr;   // the shared expert, or null
  float* y = nullptr;                            // [T, D] bf16 values
};

// The selection from one token's gate logits (x · Wgᵀ, [E] fp32); both gate versions use it.
void select_experts(const float* logits, const float* bias, const MoeGateConfig& config,
                    int32_t* expert_ids, float* expert_weights);

void moe_gate_ref(const MoeGateParams& params);
void moe_gate(const MoeGateParams& params, ThreadPool& pool);

// y [T, D] = expert(x [T, D]) with bf16 values, as REF's Expert / MLP.
void swiglu_expert_ref(const float* x, int64_t tokens, const SwigluExpertWeights& weights,
                       float* y);
void swiglu_expert(const float* x, int64_t tokens, const SwigluExpertWeights& weights, float* y,
                   ThreadPool& pool);

void moe_ref(const MoeParams& params);
void moe(const MoeParams& params, ThreadPool& pool);

// The combine both MoE versions share: tokens routed to each expert (ascending expert id) are run
// as one batch through `run_expert`, accumulated in fp32 with their gate weights, then the shared
// expert, then the bf16 rounding of y.
using ExpertRunner = std::function<void(const float* x, int64_t tokens,
                                        const SwigluExpertWeights& weights, float* y)>;
void moe_combine(const MoeParams& params, const int32_t* expert_ids, const float* expert_weights,
                 const ExpertRunner& run_expert);

// Throws dsa::Error naming the bad field.
void validate(const MoeGateParams& params);
void validate(const MoeParams& params);

}  // namespace dsa

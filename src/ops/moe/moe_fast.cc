// Fast MoE: the gate logits and the expert GEMMs run on the fast GEMM (threads, SIMD, OpenBLAS
// for large token batches); selection and the combine order are the reference's (moe_ref.cc).
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/float_formats.h"
#include "ops/moe/moe.h"

namespace dsa {

void moe_gate(const MoeGateParams& p, ThreadPool& pool) {
  validate(p);
  if (p.num_tokens == 0) return;
  const int64_t E = p.config.num_experts, K = p.config.experts_per_token;
  std::vector<float> logits(size_t(p.num_tokens * E));
  GemmParams linear =
      linear_params(p.x, {p.weight, DType::BF16, nullptr, E, p.dim}, logits.data(), p.num_tokens);
  linear.round_output_to_bf16 = false;  // fp32 logits, as F.linear(x.float(), W.float())
  gemm(linear, pool);
  pool.parallel_for(p.num_tokens, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      select_experts(logits.data() + t * E, p.bias, p.config, p.expert_ids + t * K,
                     p.expert_weights + t * K);
    }
  });
}

void swiglu_expert(const float* x, int64_t tokens, const SwigluExpertWeights& w, float* y,
                   ThreadPool& pool) {
  const int64_t inter = w.w1.out_features;
  std::vector<float> gate(size_t(tokens * inter)), up(size_t(tokens * inter));
  gemm(linear_params(x, w.w1, gate.data(), tokens), pool);
  gemm(linear_params(x, w.w3, up.data(), tokens), pool);
  pool.parallel_for(int64_t(gate.size()), 1024, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      gate[i] = round_to_bf16(gate[i] / (1.0f + std::exp(-gate[i])) * up[i]);
    }
  });
  gemm(linear_params(gate.data(), w.w2, y, tokens), pool);
}

void moe(const MoeParams& p, ThreadPool& pool) {
  validate(p);
  const int64_t slots = p.gate.num_tokens * p.gate.config.experts_per_token;
  std::vector<int32_t> ids(static_cast<size_t>(slots));
  std::vector<float> weights(static_cast<size_t>(slots));
  MoeGateParams gate = p.gate;
  gate.expert_ids = ids.data();
  gate.expert_weights = weights.data();
  moe_gate(gate, pool);
  moe_combine(p, ids.data(), weights.data(),
              [&](const float* x, int64_t tokens, const SwigluExpertWeights& w, float* y) {
                swiglu_expert(x, tokens, w, y, pool);
              });
}

}  // namespace dsa

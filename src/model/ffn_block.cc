// The FFN half of a decoder layer: REF's MLP for the first first_k_dense_replace layers, the MoE
// (sigmoid gate, routed SwiGLU experts, shared expert) after them (dsa-reference.md §6.2-§6.4).
#include "model/forward_internal.h"
#include "model/moe_gate_config.h"
#include "ops/moe/moe.h"

namespace dsa::forward_internal {

void ffn_block(const Step& s, int64_t layer, const float* x, float* out) {
  const ModelConfig& c = s.config;
  const FfnWeights& w = s.weights.layers[size_t(layer)].ffn;
  if (!w.is_moe) {
    swiglu_expert(x, s.tokens, w.dense, out, s.pool);
    s.emit("ffn", out, {s.tokens, c.hidden_size});
    return;
  }
  const MoeGateParams gate{.x = x,
                           .weight = w.gate_weight,
                           .bias = w.gate_bias.empty() ? nullptr : w.gate_bias.data(),
                           .num_tokens = s.tokens,
                           .dim = c.hidden_size,
                           .config = moe_gate_config(c)};
  if (s.dump) {  // the routing moe() does internally, computed again for the dump
    const int64_t k = c.num_experts_per_tok;
    std::vector<int32_t> ids(size_t(s.tokens * k));
    std::vector<float> weights(ids.size());
    MoeGateParams routed = gate;
    routed.expert_ids = ids.data();
    routed.expert_weights = weights.data();
    moe_gate(routed, s.pool);
    s.emit("moe.expert_ids", ids.data(), {s.tokens, k});
    s.emit("moe.expert_weights", weights.data(), {s.tokens, k});
  }
  moe({.gate = gate,
       .experts = w.experts.data(),
       .shared = w.shared ? &*w.shared : nullptr,
       .y = out},
      s.pool);
  s.emit("ffn", out, {s.tokens, c.hidden_size});
}

}  // namespace dsa::forward_internal

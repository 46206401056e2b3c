// The router settings of a config, as the MoE ops take them; shared by the inference forward
// (ffn_block.cc) and the training graph (train_ffn.cc).
#pragma once

#include "model/config.h"
#include "ops/moe/moe.h"

namespace dsa {

inline MoeGateConfig moe_gate_config(const ModelConfig& c) {
  return {.num_experts = c.n_routed_experts,
          .num_groups = c.n_group,
          .topk_groups = c.topk_group,
          .experts_per_token = c.num_experts_per_tok,
          .routed_scaling_factor = float(c.routed_scaling_factor),
          .norm_topk_prob = c.norm_topk_prob};
}

}  // namespace dsa

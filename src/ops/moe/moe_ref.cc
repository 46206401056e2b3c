// MoE gate, SwiGLU expert and combine in REF's order of operations (§6.3, §6.4).
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "core/float_formats.h"
#include "ops/moe/moe.h"

namespace dsa {
namespace {

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
float silu(float x) { return x / (1.0f + std::exp(-x)); }

// Indices of the `count` largest values, largest first; ties to the lower index.
std::vector<int32_t> top_indices(const std::vector<float>& values, int64_t count) {
  std::vector<int32_t> order(values.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return values[a] > values[b]; });
  order.resize(size_t(count));
  return order;
}

void check_linear(const LinearWeight& w, int64_t out, int64_t in, const char* what) {
  if (w.out_features != out || w.in_features != in) {
    fail("moe: {} is [{}, {}], expected [{}, {}]", what, w.out_features, w.in_features, out, in);
  }
}

void check_expert(const SwigluExpertWeights& e, int64_t dim, const char* what) {
  const int64_t inter = e.w1.out_features;
  check_linear(e.w1, inter, dim, what);
  check_linear(e.w3, inter, dim, what);
  check_linear(e.w2, dim, inter, what);
}

}  // namespace

void validate(const MoeGateParams& p) {
  const MoeGateConfig& c = p.config;
  if (c.num_groups <= 0 || c.num_experts % c.num_groups != 0) {
    fail("moe gate: {} experts do not split into {} groups", c.num_experts, c.num_groups);
  }
  const int64_t group_size = c.num_experts / c.num_groups;
  if (c.topk_groups <= 0 || c.topk_groups > c.num_groups) {
    fail("moe gate: topk_groups {} must be in [1, {}]", c.topk_groups, c.num_groups);
  }
  if (c.experts_per_token <= 0 || c.experts_per_token > c.topk_groups * group_size) {
    fail("moe gate: experts_per_token {} must be in [1, {}] (experts in the kept groups)",
         c.experts_per_token, c.topk_groups * group_size);
  }
  if (p.bias && group_size < 2) fail("moe gate: the top-2 group score needs 2 experts per group");
  if (p.num_tokens < 0 || p.dim <= 0) {
    fail("moe gate: bad shape tokens={} dim={}", p.num_tokens, p.dim);
  }
  if (p.num_tokens > 0 && (!p.x || !p.weight)) fail("moe gate: null tensor");
}

void validate(const MoeParams& p) {
  validate(p.gate);
  if (!p.experts || (p.gate.num_tokens > 0 && !p.y)) fail("moe: null tensor");
  for (int64_t e = 0; e < p.gate.config.num_experts; ++e) {
    check_expert(p.experts[e], p.gate.dim, "a routed expert weight");
  }
  if (p.shared) check_expert(*p.shared, p.gate.dim, "a shared expert weight");
}

void select_experts(const float* logits, const float* bias, const MoeGateConfig& c,
                    int32_t* expert_ids, float* expert_weights) {
  const int64_t group_size = c.num_experts / c.num_groups;
  std::vector<float> scores(size_t(c.num_experts)), biased(size_t(c.num_experts));
  for (int64_t e = 0; e < c.num_experts; ++e) {
    scores[e] = sigmoid(logits[e]);
    biased[e] = bias ? scores[e] + bias[e] : scores[e];
  }
  if (c.num_groups > 1) {
    std::vector<float> group_scores(size_t(c.num_groups));
    for (int64_t g = 0; g < c.num_groups; ++g) {
      const std::vector<float> members(biased.begin() + g * group_size,
                                       biased.begin() + (g + 1) * group_size);
      const std::vector<int32_t> best = top_indices(members, bias ? 2 : 1);
      group_scores[g] = bias ? members[best[0]] + members[best[1]] : members[best[0]];
    }
    std::vector<bool> kept(size_t(c.num_groups), false);
    for (int32_t g : top_indices(group_scores, c.topk_groups)) kept[g] = true;
    for (int64_t e = 0; e < c.num_experts; ++e) {
      if (!kept[e / group_size]) biased[e] = -std::numeric_limits<float>::infinity();
    }
  }
  const std::vector<int32_t> chosen = top_indices(biased, c.experts_per_token);
  float sum = 0.0f;
  for (int64_t i = 0; i < c.experts_per_token; ++i) sum += scores[chosen[i]];
  for (int64_t i = 0; i < c.experts_per_token; ++i) {
    expert_ids[i] = chosen[i];
    float weight = scores[chosen[i]];
    if (c.norm_topk_prob) weight /= sum;
    expert_weights[i] = weight * c.routed_scaling_factor;
  }
}

void moe_gate_ref(const MoeGateParams& p) {
  validate(p);
  const int64_t E = p.config.num_experts;
  std::vector<float> logits(static_cast<size_t>(E));
  const LinearWeight gate{p.weight, DType::BF16, nullptr, E, p.dim};
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    GemmParams linear = linear_params(p.x + t * p.dim, gate, logits.data(), 1);
    linear.round_output_to_bf16 = false;  // F.linear(x.float(), W.float()): fp32 logits
    gemm_ref(linear);
    select_experts(logits.data(), p.bias, p.config, p.expert_ids + t * p.config.experts_per_token,
                   p.expert_weights + t * p.config.experts_per_token);
  }
}

void swiglu_expert_ref(const float* x, int64_t tokens, const SwigluExpertWeights& w, float* y) {
  const int64_t inter = w.w1.out_features;
  std::vector<float> gate(size_t(tokens * inter)), up(size_t(tokens * inter));
  gemm_ref(linear_params(x, w.w1, gate.data(), tokens));
  gemm_ref(linear_params(x, w.w3, up.data(), tokens));
  for (size_t i = 0; i < gate.size(); ++i) gate[i] = round_to_bf16(silu(gate[i]) * up[i]);
  gemm_ref(linear_params(gate.data(), w.w2, y, tokens));
}

void moe_combine(const MoeParams& p, const int32_t* ids, const float* weights,
                 const ExpertRunner& run_expert) {
  const int64_t T = p.gate.num_tokens, D = p.gate.dim, K = p.gate.config.experts_per_token;
  std::vector<float> acc(size_t(T * D), 0.0f), x_batch, y_batch;
  std::vector<int64_t> tokens;
  std::vector<float> token_weights;
  for (int64_t e = 0; e < p.gate.config.num_experts; ++e) {
    tokens.clear();
    token_weights.clear();
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t i = 0; i < K; ++i) {
        if (ids[t * K + i] == e) {
          tokens.push_back(t);
          token_weights.push_back(weights[t * K + i]);
        }
      }
    }
    if (tokens.empty()) continue;
    const int64_t n = int64_t(tokens.size());
    x_batch.resize(size_t(n * D));
    y_batch.resize(size_t(n * D));
    for (int64_t i = 0; i < n; ++i) {
      std::copy(p.gate.x + tokens[i] * D, p.gate.x + (tokens[i] + 1) * D, x_batch.begin() + i * D);
    }
    run_expert(x_batch.data(), n, p.experts[e], y_batch.data());
    for (int64_t i = 0; i < n; ++i) {  // bf16 expert output * fp32 weight, added in fp32
      float* row = acc.data() + tokens[i] * D;
      for (int64_t d = 0; d < D; ++d) row[d] += y_batch[i * D + d] * token_weights[i];
    }
  }
  if (p.shared) {
    y_batch.resize(size_t(T * D));
    run_expert(p.gate.x, T, *p.shared, y_batch.data());
    for (int64_t i = 0; i < T * D; ++i) acc[i] += y_batch[i];
  }
  for (int64_t i = 0; i < T * D; ++i) p.y[i] = round_to_bf16(acc[i]);
}

void moe_ref(const MoeParams& p) {
  validate(p);
  const int64_t slots = p.gate.num_tokens * p.gate.config.experts_per_token;
  std::vector<int32_t> ids(static_cast<size_t>(slots));
  std::vector<float> weights(static_cast<size_t>(slots));
  MoeGateParams gate = p.gate;
  gate.expert_ids = ids.data();
  gate.expert_weights = weights.data();
  moe_gate_ref(gate);
  moe_combine(p, ids.data(), weights.data(), swiglu_expert_ref);
}

}  // namespace dsa

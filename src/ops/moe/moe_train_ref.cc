// Scalar references of the router's training ops (moe_train.h), plus the expert-load count and
// the bias update, which are integer bookkeeping with one version only.
#include <cmath>
#include <type_traits>
#include <vector>

#include "core/error.h"
#include "ops/moe/moe_train.h"

namespace dsa {
namespace {

template <typename Real>
Real sigmoid(Real x) {
  return Real(1) / (Real(1) + std::exp(-x));
}

// The same rules as validate(MoeGateParams) in moe_ref.cc, on the config alone.
void check_gate_config(const MoeGateConfig& c, bool has_bias, const char* op) {
  if (c.num_experts <= 0 || c.num_groups <= 0 || c.num_experts % c.num_groups != 0) {
    fail("{}: {} experts do not split into {} groups", op, c.num_experts, c.num_groups);
  }
  const int64_t group_size = c.num_experts / c.num_groups;
  if (c.topk_groups <= 0 || c.topk_groups > c.num_groups) {
    fail("{}: topk_groups {} must be in [1, {}]", op, c.topk_groups, c.num_groups);
  }
  if (c.experts_per_token <= 0 || c.experts_per_token > c.topk_groups * group_size) {
    fail("{}: experts_per_token {} must be in [1, {}] (experts in the kept groups)", op,
         c.experts_per_token, c.topk_groups * group_size);
  }
  if (has_bias && group_size < 2) fail("{}: the top-2 group score needs 2 experts per group", op);
}

// Every id in [0, experts) and distinct within its row of k (k is small: a pairwise check).
void check_expert_ids(const int32_t* ids, int64_t tokens, int64_t k, int64_t experts,
                      const char* op) {
  for (int64_t t = 0; t < tokens; ++t) {
    const int32_t* row = ids + t * k;
    for (int64_t i = 0; i < k; ++i) {
      if (row[i] < 0 || row[i] >= experts) {
        fail("{}: expert_ids[{}, {}] = {} is outside [0, {})", op, t, i, row[i], experts);
      }
      for (int64_t j = 0; j < i; ++j) {
        if (row[j] == row[i]) {
          fail("{}: expert_ids[{}] lists expert {} twice (slots {} and {})", op, t, row[i], j, i);
        }
      }
    }
  }
}

}  // namespace

template <typename Real>
void validate_forward(const MoeGateTrain<Real>& p) {
  check_gate_config(p.config, p.bias != nullptr, "moe gate train");
  if (p.tokens < 0) fail("moe gate train: tokens must be >= 0, got {}", p.tokens);
  if (p.tokens > 0 && (!p.logits || !p.expert_ids || !p.expert_weights)) {
    fail("moe gate train: logits, expert_ids and expert_weights must be set");
  }
}

template <typename Real>
void validate_backward(const MoeGateTrain<Real>& p) {
  check_gate_config(p.config, p.bias != nullptr, "moe gate backward");
  if (p.tokens < 0) fail("moe gate backward: tokens must be >= 0, got {}", p.tokens);
  if (p.tokens == 0) return;
  if (!p.logits || !p.expert_ids || !p.dweights || !p.dlogits) {
    fail("moe gate backward: logits, expert_ids, dweights and dlogits must be set");
  }
  check_expert_ids(p.expert_ids, p.tokens, p.config.experts_per_token, p.config.num_experts,
                   "moe gate backward");
}

template <typename Real>
void validate(const MoeBalanceLoss<Real>& p) {
  if (p.experts <= 0) fail("moe balance loss: experts must be > 0, got {}", p.experts);
  if (p.k <= 0 || p.k > p.experts) {
    fail("moe balance loss: k {} must be in [1, {}] (experts)", p.k, p.experts);
  }
  if (p.tokens < 0) fail("moe balance loss: tokens must be >= 0, got {}", p.tokens);
  if (!(p.alpha >= 0)) fail("moe balance loss: alpha must be >= 0, got {}", double(p.alpha));
  if (!std::isfinite(double(p.grad_scale))) {
    fail("moe balance loss: grad_scale must be finite, got {}", double(p.grad_scale));
  }
  if (!p.loss) fail("moe balance loss: loss must be set");
  if (p.tokens > 0 && (!p.logits || !p.expert_ids)) {
    fail("moe balance loss: logits and expert_ids must be set");
  }
  if (p.tokens > 0) check_expert_ids(p.expert_ids, p.tokens, p.k, p.experts, "moe balance loss");
}

template <typename Real>
void moe_gate_train_forward_reference(const MoeGateTrain<Real>& p) {
  validate_forward(p);
  const int64_t E = p.config.num_experts, K = p.config.experts_per_token;
  const Real factor = Real(p.config.routed_scaling_factor);
  std::vector<float> logits(size_t(E), 0.0f), weights(size_t(K), 0.0f);
  for (int64_t t = 0; t < p.tokens; ++t) {
    const Real* row = p.logits + t * E;
    int32_t* ids = p.expert_ids + t * K;
    Real* g = p.expert_weights + t * K;
    for (int64_t e = 0; e < E; ++e) logits[e] = float(row[e]);
    select_experts(logits.data(), p.bias, p.config, ids, weights.data());
    if constexpr (std::is_same_v<Real, float>) {
      for (int64_t i = 0; i < K; ++i) g[i] = weights[i];
    } else {  // the same formula in Real, summed in the same (best first) order
      Real sum = 0;
      for (int64_t i = 0; i < K; ++i) sum += sigmoid(row[ids[i]]);
      for (int64_t i = 0; i < K; ++i) {
        Real weight = sigmoid(row[ids[i]]);
        if (p.config.norm_topk_prob) weight /= sum;
        g[i] = weight * factor;
      }
    }
  }
}

// With Z = Σ_sel s and r the scaling factor:  g_i = r s_i / Z, so
//   dL/ds_j = (r / Z) (dg_j − Σ_i dg_i s_i / Z)   (norm_topk_prob),   else  dL/ds_j = r dg_j,
// and dL/dlogit_j = dL/ds_j · s_j (1 − s_j).
template <typename Real>
void moe_gate_backward_reference(const MoeGateTrain<Real>& p) {
  validate_backward(p);
  const int64_t E = p.config.num_experts, K = p.config.experts_per_token;
  const Real factor = Real(p.config.routed_scaling_factor);
  std::vector<Real> s(static_cast<size_t>(K));
  for (int64_t t = 0; t < p.tokens; ++t) {
    const Real* row = p.logits + t * E;
    const int32_t* ids = p.expert_ids + t * K;
    const Real* dg = p.dweights + t * K;
    Real* dl = p.dlogits + t * E;
    Real sum = 0, weighted = 0;
    for (int64_t i = 0; i < K; ++i) {
      s[i] = sigmoid(row[ids[i]]);
      sum += s[i];
      weighted += dg[i] * s[i];
    }
    for (int64_t i = 0; i < K; ++i) {
      const Real ds =
          p.config.norm_topk_prob ? factor / sum * (dg[i] - weighted / sum) : factor * dg[i];
      dl[ids[i]] += ds * (s[i] * (Real(1) - s[i]));
    }
  }
}

// loss = alpha Σ_e f_e P_e, with ds'_e/ds_j = (δ_ej − s'_e) / Z_t, so
//   dloss/dlogit[t, j] = alpha / T · (f_j − Σ_e f_e s'[t, e]) / Z_t · s_j (1 − s_j).
template <typename Real>
void moe_balance_loss_reference(const MoeBalanceLoss<Real>& p) {
  validate(p);
  const int64_t T = p.tokens, E = p.experts, K = p.k;
  if (T == 0) {
    *p.loss = 0;
    return;
  }
  std::vector<int64_t> count(size_t(E), 0);
  count_expert_load(p.expert_ids, T, K, E, count.data());
  std::vector<Real> f(static_cast<size_t>(E)), P(size_t(E), Real(0)), s(size_t(T * E), Real(0)),
      z(static_cast<size_t>(T));
  for (int64_t e = 0; e < E; ++e) f[e] = Real(E) / Real(K * T) * Real(count[e]);
  for (int64_t t = 0; t < T; ++t) {
    Real sum = 0;
    for (int64_t e = 0; e < E; ++e) {
      s[t * E + e] = sigmoid(p.logits[t * E + e]);
      sum += s[t * E + e];
    }
    z[t] = sum;
    for (int64_t e = 0; e < E; ++e) P[e] += s[t * E + e] / sum;
  }
  Real loss = 0;
  for (int64_t e = 0; e < E; ++e) loss += f[e] * (P[e] / Real(T));
  *p.loss = p.alpha * loss;
  if (!p.dlogits) return;
  const Real scale = p.grad_scale * p.alpha / Real(T);
  for (int64_t t = 0; t < T; ++t) {
    const Real* st = s.data() + t * E;
    Real mean_f = 0;  // Σ_e f_e s'_e
    for (int64_t e = 0; e < E; ++e) mean_f += f[e] * (st[e] / z[t]);
    for (int64_t e = 0; e < E; ++e) {
      p.dlogits[t * E + e] += scale * (f[e] - mean_f) / z[t] * (st[e] * (Real(1) - st[e]));
    }
  }
}

void count_expert_load(const int32_t* ids, int64_t tokens, int64_t k, int64_t experts,
                       int64_t* load) {
  if (tokens < 0 || k <= 0 || experts <= 0) {
    fail("count_expert_load: need tokens >= 0, k > 0, experts > 0, got {}, {}, {}", tokens, k,
         experts);
  }
  if (!load || (tokens > 0 && !ids)) fail("count_expert_load: expert_ids and load must be set");
  for (int64_t i = 0; i < tokens * k; ++i) {
    if (ids[i] < 0 || ids[i] >= experts) {
      fail("count_expert_load: expert_ids[{}, {}] = {} is outside [0, {})", i / k, i % k, ids[i],
           experts);
    }
    ++load[ids[i]];
  }
}

void update_router_bias(const int64_t* load, int64_t experts, float rate, float* bias) {
  if (experts <= 0) fail("update_router_bias: experts must be > 0, got {}", experts);
  if (!(rate >= 0) || !std::isfinite(rate)) {
    fail("update_router_bias: rate must be finite and >= 0, got {}", rate);
  }
  if (!load || !bias) fail("update_router_bias: load and bias must be set");
  int64_t total = 0;
  for (int64_t e = 0; e < experts; ++e) {
    if (load[e] < 0) fail("update_router_bias: load[{}] = {} is negative", e, load[e]);
    total += load[e];
  }
  // sign(mean − load_e) = sign(total − E · load_e), exact in integers.
  for (int64_t e = 0; e < experts; ++e) {
    const int64_t diff = total - experts * load[e];
    if (diff > 0) bias[e] += rate;
    if (diff < 0) bias[e] -= rate;
  }
}

template void validate_forward(const MoeGateTrain<float>&);
template void validate_backward(const MoeGateTrain<float>&);
template void validate(const MoeBalanceLoss<float>&);
template void moe_gate_train_forward_reference(const MoeGateTrain<float>&);
template void moe_gate_backward_reference(const MoeGateTrain<float>&);
template void moe_balance_loss_reference(const MoeBalanceLoss<float>&);
template void validate_forward(const MoeGateTrain<double>&);
template void validate_backward(const MoeGateTrain<double>&);
template void validate(const MoeBalanceLoss<double>&);
template void moe_gate_train_forward_reference(const MoeGateTrain<double>&);
template void moe_gate_backward_reference(const MoeGateTrain<double>&);
template void moe_balance_loss_reference(const MoeBalanceLoss<double>&);

}  // namespace dsa

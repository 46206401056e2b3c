// Fast router training ops (moe_train.h): threads over tokens. The gate's per-token work is k
// scattered sigmoids (nothing to vectorise), so each thread runs the reference on its tokens;
// the balance loss touches all E logits of a token and vectorises the sigmoid with Highway.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/moe/moe_train_fast.cc"
#include <cmath>
#include <vector>

#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "ops/moe/moe_train.h"

// After highway.h, whose per-target toggle must come first.
#include "hwy/contrib/math/math-inl.h"

HWY_BEFORE_NAMESPACE();
namespace dsa {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Tokens [begin, end) of the balance loss. coef [E] = alpha f_e / T, so that the token's share of
// the loss is Σ_e coef_e s'_e and its gradient grad_scale (coef_j − Σ_e coef_e s'_e) / Z ·
// s_j (1 − s_j). s is scratch for one row: [E].
void BalanceLossRows(const float* logits, const float* coef, int64_t experts, float grad_scale,
                     float* dlogits, float* token_loss, int64_t begin, int64_t end, float* s) {
  const hn::ScalableTag<float> df;
  const int64_t n = int64_t(hn::Lanes(df));
  const int64_t vector_end = experts - experts % n;
  const auto one = hn::Set(df, 1.0f);
  // exp(88) < FLT_MAX; hn::Exp is valid up to 104 only. Beyond it σ is ~0 either way.
  const auto exp_limit = hn::Set(df, 88.0f);
  for (int64_t t = begin; t < end; ++t) {
    const float* row = logits + t * experts;
    auto sum = hn::Zero(df), weighted = hn::Zero(df);
    for (int64_t e = 0; e < vector_end; e += n) {
      const auto neg = hn::Min(hn::Neg(hn::LoadU(df, row + e)), exp_limit);
      const auto sig = hn::Div(one, hn::Add(one, hn::Exp(df, neg)));
      hn::StoreU(sig, df, s + e);
      sum = hn::Add(sum, sig);
      weighted = hn::MulAdd(hn::LoadU(df, coef + e), sig, weighted);
    }
    float tail_sum = 0.0f, tail_weighted = 0.0f;
    for (int64_t e = vector_end; e < experts; ++e) {
      s[e] = 1.0f / (1.0f + std::exp(-row[e]));
      tail_sum += s[e];
      tail_weighted += coef[e] * s[e];
    }
    const float z = hn::GetLane(hn::SumOfLanes(df, sum)) + tail_sum;
    const float mean = (hn::GetLane(hn::SumOfLanes(df, weighted)) + tail_weighted) / z;
    token_loss[t] = mean;
    if (!dlogits) continue;
    float* dl = dlogits + t * experts;
    const float w = grad_scale / z;
    const auto w_v = hn::Set(df, w), mean_v = hn::Set(df, mean);
    for (int64_t e = 0; e < vector_end; e += n) {
      const auto sig = hn::LoadU(df, s + e);
      const auto ds = hn::Mul(w_v, hn::Sub(hn::LoadU(df, coef + e), mean_v));
      const auto grad = hn::Mul(ds, hn::Mul(sig, hn::Sub(one, sig)));
      hn::StoreU(hn::Add(hn::LoadU(df, dl + e), grad), df, dl + e);
    }
    for (int64_t e = vector_end; e < experts; ++e) {
      dl[e] += w * (coef[e] - mean) * (s[e] * (1.0f - s[e]));
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace dsa
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace dsa {

HWY_EXPORT(BalanceLossRows);

namespace {

// The params of tokens [begin, end). The reference run on a range validates it again: O(k²) per
// token for the id check, small next to the selection.
MoeGateTrainParams token_range(const MoeGateTrainParams& p, int64_t begin, int64_t end) {
  const int64_t E = p.config.num_experts, K = p.config.experts_per_token;
  MoeGateTrainParams range = p;
  range.tokens = end - begin;
  range.logits = p.logits + begin * E;
  range.expert_ids = p.expert_ids + begin * K;
  if (p.expert_weights) range.expert_weights = p.expert_weights + begin * K;
  if (p.dweights) range.dweights = p.dweights + begin * K;
  if (p.dlogits) range.dlogits = p.dlogits + begin * E;
  return range;
}

}  // namespace

void moe_gate_train_forward(const MoeGateTrainParams& p, ThreadPool& pool) {
  validate_forward(p);
  pool.parallel_for(p.tokens, 8, [&](int64_t begin, int64_t end) {
    moe_gate_train_forward_reference(token_range(p, begin, end));
  });
}

void moe_gate_backward(const MoeGateTrainParams& p, ThreadPool& pool) {
  validate_backward(p);
  pool.parallel_for(p.tokens, 64, [&](int64_t begin, int64_t end) {
    moe_gate_backward_reference(token_range(p, begin, end));
  });
}

void moe_balance_loss(const MoeBalanceLossParams& p, ThreadPool& pool) {
  validate(p);
  const int64_t T = p.tokens, E = p.experts;
  if (T == 0) {
    *p.loss = 0.0f;
    return;
  }
  std::vector<int64_t> count(size_t(E), 0);
  count_expert_load(p.expert_ids, T, p.k, E, count.data());
  std::vector<float> coef(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) {  // alpha f_e / T = alpha E count_e / (k T²)
    coef[e] = float(double(p.alpha) * double(E) * double(count[e]) /
                    (double(p.k) * double(T) * double(T)));
  }
  std::vector<float> token_loss(static_cast<size_t>(T));
  pool.parallel_for(T, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(static_cast<size_t>(E));
    HWY_DYNAMIC_DISPATCH(BalanceLossRows)
    (p.logits, coef.data(), E, p.grad_scale, p.dlogits, token_loss.data(), begin, end,
     scratch.data());
  });
  double loss = 0.0;  // in token order: independent of the thread count
  for (const float v : token_loss) loss += v;
  *p.loss = float(loss);
}

}  // namespace dsa
#endif  // HWY_ONCE

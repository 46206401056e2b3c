// Scalar reference of the fused LM head + cross-entropy (cross_entropy.h), and its checks.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "ops/loss/cross_entropy.h"

namespace dsa {

template <typename Real>
void validate(const LmHeadCrossEntropy<Real>& p) {
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();  // BLAS dimensions are int
  if (p.tokens < 0 || p.dim <= 0 || p.vocab <= 0 || p.dim > kIntMax || p.vocab > kIntMax) {
    fail(
        "lm_head_cross_entropy: need tokens >= 0 and 0 < dim, vocab <= {}, got tokens {} dim {} "
        "vocab {}",
        kIntMax, p.tokens, p.dim, p.vocab);
  }
  if (p.chunk_rows < 1 || p.chunk_rows > kIntMax) {
    fail("lm_head_cross_entropy: chunk_rows must be in [1, {}], got {}", kIntMax, p.chunk_rows);
  }
  if (!std::isfinite(double(p.grad_scale))) {
    fail("lm_head_cross_entropy: grad_scale must be finite, got {}", double(p.grad_scale));
  }
  if (!p.loss_sum) fail("lm_head_cross_entropy: loss_sum must be set");
  if (p.tokens == 0) return;
  if (!p.h || !p.weight || !p.targets)
    fail("lm_head_cross_entropy: h, weight and targets must be set");
  for (int64_t t = 0; t < p.tokens; ++t) {
    const int32_t target = p.targets[t];
    if (target != -1 && (target < 0 || target >= p.vocab)) {
      fail(
          "lm_head_cross_entropy: targets[{}] = {}, expected -1 (not counted) or a token id in "
          "[0, {})",
          t, target, p.vocab);
    }
  }
}

template <typename Real>
void lm_head_cross_entropy_reference(const LmHeadCrossEntropy<Real>& p) {
  validate(p);
  const int64_t D = p.dim, V = p.vocab;
  std::vector<Real> logits(static_cast<size_t>(V));
  Real loss_sum = 0;
  if (p.row_loss) std::fill(p.row_loss, p.row_loss + p.tokens, Real(0));
  for (int64_t t = 0; t < p.tokens; ++t) {
    const int32_t target = p.targets[t];
    if (target < 0) continue;  // not counted: no loss, dlogits 0
    const Real* h = p.h + t * D;
    for (int64_t v = 0; v < V; ++v) {
      Real sum = 0;
      for (int64_t d = 0; d < D; ++d) sum += h[d] * p.weight[v * D + d];
      logits[v] = sum;
    }
    const Real max_logit = *std::max_element(logits.begin(), logits.end());
    Real exp_sum = 0;
    for (int64_t v = 0; v < V; ++v) exp_sum += std::exp(logits[v] - max_logit);
    const Real log_normalizer = max_logit + std::log(exp_sum);
    loss_sum += log_normalizer - logits[target];
    if (p.row_loss) p.row_loss[t] = log_normalizer - logits[target];
    if (!p.dh && !p.dweight) continue;
    for (int64_t v = 0; v < V; ++v) {  // logits become dlogits
      logits[v] = p.grad_scale * (std::exp(logits[v] - log_normalizer) - Real(v == target));
    }
    for (int64_t d = 0; d < D; ++d) {
      if (p.dh) {
        Real sum = 0;
        for (int64_t v = 0; v < V; ++v) sum += logits[v] * p.weight[v * D + d];
        p.dh[t * D + d] += sum;
      }
      if (p.dweight) {
        for (int64_t v = 0; v < V; ++v) p.dweight[v * D + d] += logits[v] * h[d];
      }
    }
  }
  *p.loss_sum = loss_sum;
}

template void validate(const LmHeadCrossEntropy<float>&);
template void validate(const LmHeadCrossEntropy<double>&);
template void lm_head_cross_entropy_reference(const LmHeadCrossEntropy<float>&);
template void lm_head_cross_entropy_reference(const LmHeadCrossEntropy<double>&);

}  // namespace dsa

// Scalar references of the indexer's training ops (indexer_train.h): loops that read like the
// formulas, sums in Real in index order. Also the parameter checks shared with the fast versions.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "ops/indexer/indexer_train.h"

namespace dsa {

namespace {

void check_sizes(const char* op, int64_t tokens, int64_t heads, int64_t dim, const char* dim_name) {
  if (tokens < 0 || heads <= 0 || dim <= 0) {
    fail("{}: need tokens >= 0, heads > 0 and {} > 0, got tokens {} heads {} {} {}", op, tokens,
         dim_name, tokens, heads, dim_name, dim);
  }
}

// K_t for every row: null indices with topk 0 (dense), or [T, topk] entries in {-1} ∪ [0, t],
// each key listed at most once per row (a repeated key would be counted twice).
void check_key_indices(const char* op, const int32_t* indices, int64_t topk, int64_t tokens) {
  if (!indices) {
    if (topk != 0) fail("{}: topk is {} but indices is null (dense needs topk 0)", op, topk);
    return;
  }
  if (topk <= 0) fail("{}: indices is set, so topk must be > 0, got {}", op, topk);
  std::vector<int64_t> seen_in_row(size_t(tokens), -1);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t j = 0; j < topk; ++j) {
      const int32_t s = indices[t * topk + j];
      if (s == -1) continue;
      if (s < 0 || s > t) {
        fail("{}: indices[{}, {}] = {}, expected -1 or a causal key in [0, {}]", op, t, j, s, t);
      }
      if (seen_in_row[size_t(s)] == t) fail("{}: indices row {} lists key {} twice", op, t, s);
      seen_in_row[size_t(s)] = t;
    }
  }
}

template <typename Real>
Real dot(const Real* a, const Real* b, int64_t n) {
  Real sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// The keys of row t: {0 .. t} or the listed ones (empty slots dropped), in slot order.
std::vector<int64_t> row_keys(const int32_t* indices, int64_t topk, int64_t t) {
  std::vector<int64_t> keys;
  if (!indices) {
    for (int64_t s = 0; s <= t; ++s) keys.push_back(s);
  } else {
    for (int64_t j = 0; j < topk; ++j) {
      if (indices[t * topk + j] >= 0) keys.push_back(indices[t * topk + j]);
    }
  }
  return keys;
}

}  // namespace

template <typename Real>
void validate_forward(const IndexerScoresTrain<Real>& p) {
  check_sizes("indexer_scores_train_forward", p.tokens, p.heads, p.dim, "dim");
  if (p.tokens == 0) return;
  if (!p.q || !p.k || !p.w || !p.scores) {
    fail("indexer_scores_train_forward: q, k, w and scores must be set");
  }
}

template <typename Real>
void validate_backward(const IndexerScoresTrain<Real>& p) {
  check_sizes("indexer_scores_backward", p.tokens, p.heads, p.dim, "dim");
  if (p.tokens == 0) return;
  if (!p.q || !p.k || !p.w || !p.dscores) {
    fail("indexer_scores_backward: q, k, w and dscores must be set");
  }
  if (!p.dq || !p.dk || !p.dw) fail("indexer_scores_backward: dq, dk and dw must be set");
}

template <typename Real>
void validate(const AttentionTarget<Real>& p) {
  check_sizes("attention_target", p.tokens, p.heads, p.qk_dim, "qk_dim");
  if (!(p.scale > 0) || !std::isfinite(double(p.scale))) {
    fail("attention_target: scale must be finite and > 0, got {}", double(p.scale));
  }
  if (p.tokens == 0) return;
  if (!p.q || !p.k || !p.lse || !p.p) fail("attention_target: q, k, lse and p must be set");
  check_key_indices("attention_target", p.indices, p.topk, p.tokens);
}

template <typename Real>
void validate(const IndexerKlLoss<Real>& p) {
  if (p.tokens < 0) fail("indexer_kl_loss: need tokens >= 0, got {}", p.tokens);
  if (!std::isfinite(double(p.grad_scale))) {
    fail("indexer_kl_loss: grad_scale must be finite, got {}", double(p.grad_scale));
  }
  if (p.tokens == 0) return;
  if (!p.scores || !p.p || !p.row_loss) fail("indexer_kl_loss: scores, p and row_loss must be set");
  check_key_indices("indexer_kl_loss", p.indices, p.topk, p.tokens);
}

template <typename Real>
void indexer_scores_train_forward_reference(const IndexerScoresTrain<Real>& p) {
  validate_forward(p);
  const int64_t T = p.tokens, H = p.heads, D = p.dim;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t s = 0; s < T; ++s) {
      if (s > t) {
        p.scores[t * T + s] = -std::numeric_limits<Real>::infinity();
        continue;
      }
      Real sum = 0;
      for (int64_t h = 0; h < H; ++h) {
        const Real qk = dot(p.q + (t * H + h) * D, p.k + s * D, D);
        sum += p.w[t * H + h] * std::max(qk, Real(0));
      }
      p.scores[t * T + s] = sum;
    }
  }
}

template <typename Real>
void indexer_scores_backward_reference(const IndexerScoresTrain<Real>& p) {
  validate_backward(p);
  const int64_t T = p.tokens, H = p.heads, D = p.dim;
  std::fill(p.dq, p.dq + T * H * D, Real(0));
  std::fill(p.dk, p.dk + T * D, Real(0));
  std::fill(p.dw, p.dw + T * H, Real(0));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t s = 0; s <= t; ++s) {
      const Real g = p.dscores[t * T + s];
      for (int64_t h = 0; h < H; ++h) {
        const Real* q = p.q + (t * H + h) * D;
        const Real qk = dot(q, p.k + s * D, D);
        p.dw[t * H + h] += g * std::max(qk, Real(0));
        if (qk > 0) {  // ReLU'(0) = 0
          const Real c = g * p.w[t * H + h];
          for (int64_t d = 0; d < D; ++d) {
            p.dq[(t * H + h) * D + d] += c * p.k[s * D + d];
            p.dk[s * D + d] += c * q[d];
          }
        }
      }
    }
  }
}

template <typename Real>
void attention_target_reference(const AttentionTarget<Real>& p) {
  validate(p);
  const int64_t T = p.tokens, H = p.heads, D = p.qk_dim;
  std::fill(p.p, p.p + T * T, Real(0));
  for (int64_t t = 0; t < T; ++t) {
    for (const int64_t s : row_keys(p.indices, p.topk, t)) {
      Real sum = 0;
      for (int64_t h = 0; h < H; ++h) {
        const Real lse = p.lse[t * H + h];
        if (lse == std::numeric_limits<Real>::infinity()) continue;  // a head with no keys
        const Real score = p.scale * dot(p.q + (t * H + h) * D, p.k + (s * H + h) * D, D);
        sum += std::exp(score - lse);
      }
      p.p[t * T + s] = sum / Real(H);
    }
  }
}

template <typename Real>
void indexer_kl_loss_reference(const IndexerKlLoss<Real>& p) {
  validate(p);
  const int64_t T = p.tokens;
  if (p.dscores) std::fill(p.dscores, p.dscores + T * T, Real(0));
  for (int64_t t = 0; t < T; ++t) {
    const std::vector<int64_t> keys = row_keys(p.indices, p.topk, t);
    const Real* scores = p.scores + t * T;
    const Real* target = p.p + t * T;
    Real target_sum = 0;
    Real max_score = -std::numeric_limits<Real>::infinity();
    for (const int64_t s : keys) {
      if (!(target[s] >= 0)) fail("indexer_kl_loss: p[{}, {}] = {} is not >= 0", t, s, target[s]);
      if (!std::isfinite(double(scores[s]))) {
        fail("indexer_kl_loss: scores[{}, {}] = {} is not finite", t, s, scores[s]);
      }
      target_sum += target[s];
      max_score = std::max(max_score, scores[s]);
    }
    p.row_loss[t] = 0;
    if (!(target_sum > 0)) continue;  // no target mass: the loss is the constant 0
    Real exp_sum = 0;
    for (const int64_t s : keys) exp_sum += std::exp(scores[s] - max_score);
    const Real log_normalizer = max_score + std::log(exp_sum);
    Real loss = 0;
    for (const int64_t s : keys) {
      const Real target_s = target[s] / target_sum;
      const Real log_q = scores[s] - log_normalizer;
      if (target_s > 0) loss += target_s * (std::log(target_s) - log_q);
      if (p.dscores) p.dscores[t * T + s] = p.grad_scale * (std::exp(log_q) - target_s);
    }
    p.row_loss[t] = loss;
  }
}

template void validate_forward(const IndexerScoresTrain<float>&);
template void validate_backward(const IndexerScoresTrain<float>&);
template void validate(const AttentionTarget<float>&);
template void validate(const IndexerKlLoss<float>&);
template void indexer_scores_train_forward_reference(const IndexerScoresTrain<float>&);
template void indexer_scores_backward_reference(const IndexerScoresTrain<float>&);
template void attention_target_reference(const AttentionTarget<float>&);
template void indexer_kl_loss_reference(const IndexerKlLoss<float>&);
template void validate_forward(const IndexerScoresTrain<double>&);
template void validate_backward(const IndexerScoresTrain<double>&);
template void validate(const AttentionTarget<double>&);
template void validate(const IndexerKlLoss<double>&);
template void indexer_scores_train_forward_reference(const IndexerScoresTrain<double>&);
template void indexer_scores_backward_reference(const IndexerScoresTrain<double>&);
template void attention_target_reference(const AttentionTarget<double>&);
template void indexer_kl_loss_reference(const IndexerKlLoss<double>&);

}  // namespace dsa

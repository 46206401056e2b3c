// Fast fused LM head + cross-entropy (cross_entropy.h): chunks of rows, sgemms for the products.
// The sgemms run on the calling thread with OpenBLAS's own threads (as gemm_fast.cc does); the
// pool's threads do the per-row log-sum-exp between them.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "ops/loss/cross_entropy.h"

namespace dsa {

namespace {

// One counted row: its logits [V] become dlogits (when `backward`), returns its loss. The sum of
// exps is taken in double: with V up to 129280 terms an fp32 running sum could lose ~V · 2^-24
// relative (1e-2), while the O(V) double adds cost nothing next to the row's O(V · D) sgemm.
double cross_entropy_row(float* logits, int64_t vocab, int32_t target, float grad_scale,
                         bool backward) {
  const float max_logit = *std::max_element(logits, logits + vocab);
  double exp_sum = 0.0;
  for (int64_t v = 0; v < vocab; ++v) exp_sum += std::exp(logits[v] - max_logit);
  const double log_normalizer = double(max_logit) + std::log(exp_sum);
  const double loss = log_normalizer - double(logits[target]);
  if (backward) {
    const float shift = float(log_normalizer);
    for (int64_t v = 0; v < vocab; ++v) logits[v] = grad_scale * std::exp(logits[v] - shift);
    logits[target] -= grad_scale;
  }
  return loss;
}

}  // namespace

void lm_head_cross_entropy(const LmHeadCrossEntropyParams& p, ThreadPool& pool) {
  validate(p);
  const int64_t T = p.tokens, D = p.dim, V = p.vocab;
  const bool backward = p.dh || p.dweight;
  const int64_t chunk = std::min(p.chunk_rows, std::max<int64_t>(T, 1));
  std::vector<float> logits(size_t(chunk * V));  // [chunk, V]: logits, then dlogits
  std::vector<double> row_loss(static_cast<size_t>(chunk));
  double loss_sum = 0.0;
  if (p.row_loss) std::fill(p.row_loss, p.row_loss + T, 0.0f);
  for (int64_t t0 = 0; t0 < T; t0 += chunk) {
    const int64_t rows = std::min(chunk, T - t0);
    const int32_t* targets = p.targets + t0;
    if (std::all_of(targets, targets + rows, [](int32_t id) { return id < 0; })) continue;
    const float* h = p.h + t0 * D;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(V), int(D), 1.0f, h, int(D),
                p.weight, int(D), 0.0f, logits.data(), int(V));
    pool.parallel_for(rows, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        float* row = logits.data() + r * V;
        row_loss[size_t(r)] = 0.0;
        if (targets[r] < 0) {
          if (backward) std::fill(row, row + V, 0.0f);  // an ignored row passes no gradient
          continue;
        }
        row_loss[size_t(r)] = cross_entropy_row(row, V, targets[r], p.grad_scale, backward);
      }
    });
    for (int64_t r = 0; r < rows; ++r) loss_sum += row_loss[size_t(r)];  // rows in order
    if (p.row_loss) {
      for (int64_t r = 0; r < rows; ++r) p.row_loss[t0 + r] = float(row_loss[size_t(r)]);
    }
    if (p.dh) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(D), int(V), 1.0f,
                  logits.data(), int(V), p.weight, int(D), 1.0f, p.dh + t0 * D, int(D));
    }
    if (p.dweight) {
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(V), int(D), int(rows), 1.0f,
                  logits.data(), int(V), h, int(D), 1.0f, p.dweight, int(D));
    }
  }
  *p.loss_sum = float(loss_sum);
}

void lm_head_logits(const float* h, const float* weight, int64_t tokens, int64_t dim, int64_t vocab,
                    float* out, ThreadPool& pool) {
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();  // BLAS dimensions are int
  if (tokens < 0 || dim <= 0 || vocab <= 0 || tokens > kIntMax || dim > kIntMax ||
      vocab > kIntMax) {
    fail(
        "lm_head_logits: need 0 <= tokens and 0 < dim, vocab, all <= {}, got tokens {} dim {} "
        "vocab {}",
        kIntMax, tokens, dim, vocab);
  }
  if (tokens == 0) return;
  if (!h || !weight || !out) fail("lm_head_logits: h, weight and out must be set");
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(tokens), int(vocab), int(dim), 1.0f, h,
              int(dim), weight, int(dim), 0.0f, out, int(vocab));
}

}  // namespace dsa

// Fast indexer training ops (indexer_train.h), fp32.
//
// Scores: query rows go in blocks; per block one sgemm gives every q[t, h] · k[s] of the block
// against keys s < t1 (the block's end; the causal waste is the upper triangle of the diagonal
// block), and the pool's threads apply ReLU and the head weights row by row. The backward
// recomputes the products and overwrites them in place with the sgemm operand
//   M[t, h, s] = dscores[t, s] · w[t, h] · 1[q · k > 0]
// (dw falls out of the same pass), then dq_block = M · K and dk += Mᵀ · Q_block (beta = 1, blocks
// in order: a fixed reduction order). Each sgemm is split into fixed blocks that the pool's
// threads take, every block one single-threaded sgemm (OpenBLAS's own threads would compete with
// the pool's for the cores, see linear_train_fast.cc); the blocks depend on the shapes only, so
// results do not depend on the thread count.
//
// Target: dense rows take per-head sgemms of a block of rows (q and k rows strided by H · Dqk);
// sparse rows gather their listed keys (Highway dot products). Exps are Highway's (1 ulp).
// KL loss: one row per task, sums in double.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/indexer/indexer_train_fast.cc"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "ops/gemm/blas_blocks.h"
#include "ops/indexer/indexer_train.h"
// After foreach_target.h: it is a per-target header.
#include "hwy/contrib/math/math-inl.h"

HWY_BEFORE_NAMESPACE();
namespace dsa {
namespace HWY_NAMESPACE {

namespace hn = hwy::HWY_NAMESPACE;

// out[s] += Σ_h w[h] · ReLU(products[h · stride + s]) for s < n, heads in order.
void WeightedReluSum(const float* HWY_RESTRICT products, int64_t stride,
                     const float* HWY_RESTRICT w, int64_t heads, int64_t n,
                     float* HWY_RESTRICT out) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = int64_t(hn::Lanes(d));
  const auto zero = hn::Zero(d);
  for (int64_t h = 0; h < heads; ++h) {
    const float* a = products + h * stride;
    const auto weight = hn::Set(d, w[h]);
    int64_t s = 0;
    for (; s + lanes <= n; s += lanes) {
      const auto relu = hn::Max(hn::LoadU(d, a + s), zero);
      hn::StoreU(hn::MulAdd(weight, relu, hn::LoadU(d, out + s)), d, out + s);
    }
    for (; s < n; ++s) out[s] += w[h] * std::max(a[s], 0.0f);
  }
}

// One query row of the backward. For each head, over keys s < n (= t + 1):
//   dw[h] = Σ_s g[s] · ReLU(a[s]),   a[s] <- g[s] · w[h] · 1[a[s] > 0],
// and a[s] <- 0 for s in [n, width) (keys past the diagonal get no gradient).
void ReluBackwardRow(float* HWY_RESTRICT products, int64_t stride, const float* HWY_RESTRICT g,
                     const float* HWY_RESTRICT w, int64_t heads, int64_t n, int64_t width,
                     float* HWY_RESTRICT dw) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = int64_t(hn::Lanes(d));
  const auto zero = hn::Zero(d);
  for (int64_t h = 0; h < heads; ++h) {
    float* a = products + h * stride;
    const auto weight = hn::Set(d, w[h]);
    auto acc = hn::Zero(d);
    float tail = 0.0f;
    int64_t s = 0;
    for (; s + lanes <= n; s += lanes) {
      const auto qk = hn::LoadU(d, a + s);
      const auto grad = hn::LoadU(d, g + s);
      acc = hn::MulAdd(grad, hn::Max(qk, zero), acc);
      hn::StoreU(hn::IfThenElseZero(hn::Gt(qk, zero), hn::Mul(grad, weight)), d, a + s);
    }
    for (; s < n; ++s) {
      tail += g[s] * std::max(a[s], 0.0f);
      a[s] = a[s] > 0.0f ? g[s] * w[h] : 0.0f;
    }
    std::fill(a + n, a + width, 0.0f);
    dw[h] = hn::GetLane(hn::SumOfLanes(d, acc)) + tail;
  }
}

// out[s] += exp(x[s] − shift) for s < n. The tail goes through a padded vector so that every
// element takes the same exp.
void AccumulateExp(const float* HWY_RESTRICT x, float shift, int64_t n, float* HWY_RESTRICT out) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = int64_t(hn::Lanes(d));
  const auto shift_v = hn::Set(d, shift);
  int64_t s = 0;
  for (; s + lanes <= n; s += lanes) {
    const auto e = hn::Exp(d, hn::Sub(hn::LoadU(d, x + s), shift_v));
    hn::StoreU(hn::Add(hn::LoadU(d, out + s), e), d, out + s);
  }
  if (s < n) {
    HWY_ALIGN float buffer[hn::MaxLanes(d)] = {};
    std::copy(x + s, x + n, buffer);
    hn::Store(hn::Exp(d, hn::Sub(hn::Load(d, buffer), shift_v)), d, buffer);
    for (int64_t i = s; i < n; ++i) out[i] += buffer[i - s];
  }
}

// out[h · n + j] = scale · (q[h] · k[list[j], h]) for every head h < heads and j < n: q is one
// query row [H, dim], k is [T, H, dim]. One listed key's heads are contiguous, so each gathered
// key row is read once for all heads.
void GatheredHeadDots(const float* HWY_RESTRICT q, const float* HWY_RESTRICT k, int64_t heads,
                      int64_t dim, const int64_t* HWY_RESTRICT list, int64_t n, float scale,
                      float* HWY_RESTRICT out) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = int64_t(hn::Lanes(d));
  for (int64_t j = 0; j < n; ++j) {
    const float* key = k + list[j] * heads * dim;
    for (int64_t h = 0; h < heads; ++h) {
      const float* qh = q + h * dim;
      const float* kh = key + h * dim;
      auto acc0 = hn::Zero(d), acc1 = hn::Zero(d);
      int64_t i = 0;
      for (; i + 2 * lanes <= dim; i += 2 * lanes) {
        acc0 = hn::MulAdd(hn::LoadU(d, qh + i), hn::LoadU(d, kh + i), acc0);
        acc1 = hn::MulAdd(hn::LoadU(d, qh + i + lanes), hn::LoadU(d, kh + i + lanes), acc1);
      }
      for (; i + lanes <= dim; i += lanes) {
        acc0 = hn::MulAdd(hn::LoadU(d, qh + i), hn::LoadU(d, kh + i), acc0);
      }
      float tail = 0.0f;
      for (; i < dim; ++i) tail += qh[i] * kh[i];
      out[h * n + j] = scale * (hn::GetLane(hn::SumOfLanes(d, hn::Add(acc0, acc1))) + tail);
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace dsa
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace dsa {

HWY_EXPORT(WeightedReluSum);
HWY_EXPORT(ReluBackwardRow);
HWY_EXPORT(AccumulateExp);
HWY_EXPORT(GatheredHeadDots);

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

constexpr int64_t kSgemmRows = 256;  // rows of an sgemm's output per block
constexpr int64_t kSgemmCols = 64;   // output columns per block where rows are a reduction

// Products held per block of query rows: [rows · heads, keys] floats, at most this many
// (16 MiB), and at most kMaxBlockRows rows so the causal waste of a block stays small.
constexpr int64_t kBlockFloats = int64_t(1) << 22;
constexpr int64_t kMaxBlockRows = 64;

int64_t block_rows(int64_t tokens, int64_t heads) {
  return std::clamp<int64_t>(kBlockFloats / std::max<int64_t>(1, heads * tokens), 1, kMaxBlockRows);
}

// products[(t − t0) · H + h][s] = q[t, h] · k[s] for t in [t0, t1), s < t1; row stride t1.
void block_products(const IndexerScoresTrainParams& p, int64_t t0, int64_t t1, float* products,
                    ThreadPool& pool) {
  const int D = int(p.dim);
  const float* q = p.q + t0 * p.heads * p.dim;
  for_blocks(pool, (t1 - t0) * p.heads, kSgemmRows, [&](int64_t r0, int64_t r1) {
    sgemm(false, true, int(r1 - r0), int(t1), D, 1.0f, q + r0 * D, D, p.k, D, 0.0f,
          products + r0 * t1, int(t1));
  });
}

// The keys of row t in slot order: {0 .. t} or the listed ones without empty slots.
void row_keys(const int32_t* indices, int64_t topk, int64_t t, std::vector<int64_t>& keys) {
  keys.clear();
  if (!indices) {
    for (int64_t s = 0; s <= t; ++s) keys.push_back(s);
    return;
  }
  for (int64_t j = 0; j < topk; ++j) {
    if (indices[t * topk + j] >= 0) keys.push_back(indices[t * topk + j]);
  }
}

void attention_target_dense(const AttentionTargetParams& p, ThreadPool& pool) {
  const int64_t T = p.tokens, H = p.heads, D = p.qk_dim;
  const int64_t rows = block_rows(T, H);
  std::vector<float> scores(size_t(rows * H * T));  // [H, rows, t1] per block
  const SingleThreadedBlas single;
  for (int64_t t0 = 0; t0 < T; t0 += rows) {
    const int64_t t1 = std::min(T, t0 + rows), block = t1 - t0;
    for_blocks(pool, H, 1, [&](int64_t h, int64_t) {
      sgemm(false, true, int(block), int(t1), int(D), p.scale, p.q + (t0 * H + h) * D, int(H * D),
            p.k + h * D, int(H * D), 0.0f, scores.data() + h * block * t1, int(t1));
    });
    pool.parallel_for(block, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t t = t0 + r;
        float* out = p.p + t * T;
        std::fill(out, out + T, 0.0f);
        for (int64_t h = 0; h < H; ++h) {
          const float lse = p.lse[t * H + h];
          if (lse == kInf) continue;  // a head with no keys
          HWY_DYNAMIC_DISPATCH(AccumulateExp)
          (scores.data() + (h * block + r) * t1, lse, t + 1, out);
        }
        for (int64_t s = 0; s <= t; ++s) out[s] /= float(H);
      }
    });
  }
}

void attention_target_sparse(const AttentionTargetParams& p, ThreadPool& pool) {
  const int64_t T = p.tokens, H = p.heads, D = p.qk_dim;
  pool.parallel_for(T, 4, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> keys;
    std::vector<float> dots(size_t(H * p.topk)), sums(size_t(p.topk));  // [H, n], [n]
    for (int64_t t = begin; t < end; ++t) {
      row_keys(p.indices, p.topk, t, keys);
      const int64_t n = int64_t(keys.size());
      HWY_DYNAMIC_DISPATCH(GatheredHeadDots)
      (p.q + t * H * D, p.k, H, D, keys.data(), n, p.scale, dots.data());
      std::fill(sums.begin(), sums.end(), 0.0f);
      for (int64_t h = 0; h < H; ++h) {
        const float lse = p.lse[t * H + h];
        if (lse == kInf) continue;  // a head with no keys
        HWY_DYNAMIC_DISPATCH(AccumulateExp)(dots.data() + h * n, lse, n, sums.data());
      }
      float* out = p.p + t * T;
      std::fill(out, out + T, 0.0f);
      for (int64_t j = 0; j < n; ++j) out[keys[size_t(j)]] = sums[size_t(j)] / float(H);
    }
  });
}

// One row of the KL loss (indexer_train.h); `keys` is scratch.
void kl_loss_row(const IndexerKlLossParams& p, int64_t t, std::vector<int64_t>& keys) {
  const int64_t T = p.tokens;
  row_keys(p.indices, p.topk, t, keys);
  const float* scores = p.scores + t * T;
  const float* target = p.p + t * T;
  float* dscores = p.dscores ? p.dscores + t * T : nullptr;
  if (dscores) std::fill(dscores, dscores + T, 0.0f);
  double target_sum = 0.0;
  float max_score = -kInf;
  for (const int64_t s : keys) {
    if (!(target[s] >= 0.0f)) fail("indexer_kl_loss: p[{}, {}] = {} is not >= 0", t, s, target[s]);
    if (!std::isfinite(scores[s])) {
      fail("indexer_kl_loss: scores[{}, {}] = {} is not finite", t, s, scores[s]);
    }
    target_sum += target[s];
    max_score = std::max(max_score, scores[s]);
  }
  p.row_loss[t] = 0.0f;
  if (!(target_sum > 0.0)) return;  // no target mass: the loss is the constant 0
  double exp_sum = 0.0;
  for (const int64_t s : keys) exp_sum += std::exp(scores[s] - max_score);
  const float log_normalizer = max_score + float(std::log(exp_sum));
  const float inv_target_sum = float(1.0 / target_sum);
  double loss = 0.0;
  for (const int64_t s : keys) {
    const float target_s = target[s] * inv_target_sum;
    const float log_q = scores[s] - log_normalizer;
    if (target_s > 0.0f) loss += double(target_s) * (std::log(target_s) - log_q);
    if (dscores) dscores[s] = p.grad_scale * (std::exp(log_q) - target_s);
  }
  p.row_loss[t] = float(loss);
}

}  // namespace

void indexer_scores_train_forward(const IndexerScoresTrainParams& p, ThreadPool& pool) {
  validate_forward(p);
  const int64_t T = p.tokens, H = p.heads;
  if (T == 0) return;
  const int64_t rows = block_rows(T, H);
  std::vector<float> products(size_t(rows * H * T));
  const SingleThreadedBlas single;
  for (int64_t t0 = 0; t0 < T; t0 += rows) {
    const int64_t t1 = std::min(T, t0 + rows);
    block_products(p, t0, t1, products.data(), pool);
    pool.parallel_for(t1 - t0, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t t = t0 + r;
        float* out = p.scores + t * T;
        std::fill(out, out + t + 1, 0.0f);
        HWY_DYNAMIC_DISPATCH(WeightedReluSum)
        (products.data() + r * H * t1, t1, p.w + t * H, H, t + 1, out);
        std::fill(out + t + 1, out + T, -kInf);
      }
    });
  }
}

void indexer_scores_backward(const IndexerScoresTrainParams& p, ThreadPool& pool) {
  validate_backward(p);
  const int64_t T = p.tokens, H = p.heads, D = p.dim;
  if (T == 0) return;
  std::fill(p.dk, p.dk + T * D, 0.0f);
  const int64_t rows = block_rows(T, H);
  std::vector<float> products(size_t(rows * H * T));
  const SingleThreadedBlas single;
  for (int64_t t0 = 0; t0 < T; t0 += rows) {
    const int64_t t1 = std::min(T, t0 + rows), m = (t1 - t0) * H;
    block_products(p, t0, t1, products.data(), pool);
    pool.parallel_for(t1 - t0, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t t = t0 + r;
        HWY_DYNAMIC_DISPATCH(ReluBackwardRow)
        (products.data() + r * H * t1, t1, p.dscores + t * T, p.w + t * H, H, t + 1, t1,
         p.dw + t * H);
      }
    });
    // dq[t, h] = Σ_s M[t, h, s] k[s];  dk[s] += Σ_{t, h in block} M[t, h, s] q[t, h].
    // dq by row blocks of M; dk by column blocks, each summing over all m rows of M in one call.
    for_blocks(pool, m, kSgemmRows, [&](int64_t r0, int64_t r1) {
      sgemm(false, false, int(r1 - r0), int(D), int(t1), 1.0f, products.data() + r0 * t1, int(t1),
            p.k, int(D), 0.0f, p.dq + (t0 * H + r0) * D, int(D));
    });
    for_blocks(pool, D, kSgemmCols, [&](int64_t c0, int64_t c1) {
      sgemm(true, false, int(t1), int(c1 - c0), int(m), 1.0f, products.data(), int(t1),
            p.q + t0 * H * D + c0, int(D), 1.0f, p.dk + c0, int(D));
    });
  }
}

void attention_target(const AttentionTargetParams& p, ThreadPool& pool) {
  validate(p);
  if (p.tokens == 0) return;
  if (p.indices) {
    attention_target_sparse(p, pool);
  } else {
    attention_target_dense(p, pool);
  }
}

void indexer_kl_loss(const IndexerKlLossParams& p, ThreadPool& pool) {
  validate(p);
  pool.parallel_for(p.tokens, 4, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> keys;
    for (int64_t t = begin; t < end; ++t) kl_loss_row(p, t, keys);
  });
}

}  // namespace dsa
#endif  // HWY_ONCE

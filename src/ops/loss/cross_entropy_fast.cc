// Fast fused LM head + cross-entropy (cross_entropy.h): chunks of rows, sgemms for the products,
// a SIMD log-sum-exp per row.
//
// Each chunk's three products are split into fixed blocks (vocabulary rows for the logits and
// dweight, hidden columns for dh) that the pool's threads take, each block one single-threaded
// sgemm: OpenBLAS's own threads would compete with the pool's for the same cores (see
// linear_train_fast.cc). Blocks depend only on the shapes, so results do not depend on the
// thread count.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/loss/cross_entropy_fast.cc"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
// clang-format off: per-target headers go after foreach_target.h and highway.h.
#include "hwy/contrib/math/math-inl.h"
// clang-format on
#include "core/error.h"
#include "ops/gemm/blas_blocks.h"
#include "ops/loss/cross_entropy.h"

HWY_BEFORE_NAMESPACE();
namespace dsa {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// Calls body(pointer to N floats) for the full vectors of row[0, n), then once for the tail
// copied into a buffer padded with `pad`; writes the tail back when `store`. Every element takes
// the same vector path wherever it sits.
template <class Body>
HWY_INLINE void ForEachVector(float* row, int64_t n, float pad, bool store, const Body& body) {
  const DF d;
  const int64_t lanes = int64_t(hn::Lanes(d));
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) body(row + i);
  if (i == n) return;
  constexpr size_t kMax = HWY_MAX_BYTES / sizeof(float);
  HWY_ALIGN float tail[kMax];
  std::fill(tail, tail + kMax, pad);
  std::copy(row + i, row + n, tail);
  body(tail);
  if (store) std::copy(tail, tail + (n - i), row + i);
}

// One counted row: its logits [V] become dlogits (when `backward`); returns its loss. The exps
// are fp32 (Highway's Exp, within 1 ulp) and their sum is taken in double, per lane: with V up to
// 129280 terms an fp32 sum could lose ~V · 2^-24 relative (1e-2). The lane sums are added in a
// fixed order, so the result depends on the SIMD target only.
double CrossEntropyRow(float* logits, int64_t vocab, int32_t target, float grad_scale,
                       bool backward) {
  const DF d;
  const float lowest = -std::numeric_limits<float>::infinity();
  VF max_v = hn::Set(d, lowest);
  ForEachVector(logits, vocab, lowest, false,
                [&](const float* p) { max_v = hn::Max(max_v, hn::LoadU(d, p)); });
  const float max_logit = hn::GetLane(hn::MaxOfLanes(d, max_v));
  // Padded lanes sit 200 below the max: exp(-200) is 0 in fp32.
  const float pad = max_logit - 200.0f;
  const VF shift_max = hn::Set(d, max_logit);
  constexpr size_t kMax = HWY_MAX_BYTES / sizeof(float);
  const size_t lanes = hn::Lanes(d);
  HWY_ALIGN float e[kMax];
  double lane_sums[kMax] = {};
  ForEachVector(logits, vocab, pad, false, [&](const float* p) {
    hn::Store(hn::Exp(d, hn::Sub(hn::LoadU(d, p), shift_max)), d, e);
    for (size_t j = 0; j < lanes; ++j) lane_sums[j] += double(e[j]);
  });
  double exp_sum = 0.0;
  for (size_t j = 0; j < lanes; ++j) exp_sum += lane_sums[j];
  const double log_normalizer = double(max_logit) + std::log(exp_sum);
  const double loss = log_normalizer - double(logits[target]);
  if (backward) {
    const VF shift = hn::Set(d, float(log_normalizer)), scale = hn::Set(d, grad_scale);
    ForEachVector(logits, vocab, pad, true, [&](float* p) {
      hn::StoreU(hn::Mul(scale, hn::Exp(d, hn::Sub(hn::LoadU(d, p), shift))), d, p);
    });
    logits[target] -= grad_scale;
  }
  return loss;
}

}  // namespace HWY_NAMESPACE
}  // namespace dsa
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace dsa {

HWY_EXPORT(CrossEntropyRow);

namespace {

// Vocabulary rows (logits columns, dweight rows) per sgemm block: about 32 blocks, 256 to 4096
// rows (each call repacks the chunk's h or dlogits, so a 129280-word vocabulary in 256-row
// blocks would repack them 505 times per chunk).
int64_t vocab_block(int64_t vocab) {
  return std::clamp<int64_t>((vocab / 32 + 255) / 256 * 256, 256, 4096);
}
// Hidden columns of dh per sgemm block (each sums over the whole vocabulary): 256 where there
// are more than 256 (measured at D = 512: 256-column calls run 15% faster than 128-column ones).
int64_t dim_block(int64_t dim) { return dim > 256 ? 256 : 128; }

}  // namespace

void lm_head_cross_entropy(const LmHeadCrossEntropyParams& p, ThreadPool& pool) {
  validate(p);
  const int64_t T = p.tokens, D = p.dim, V = p.vocab;
  const int d = int(D), vocab = int(V);
  const bool backward = p.dh || p.dweight;
  const int64_t chunk = std::min(p.chunk_rows, std::max<int64_t>(T, 1));
  std::vector<float> logits(size_t(chunk * V));  // [chunk, V]: logits, then dlogits
  std::vector<double> row_loss(static_cast<size_t>(chunk));
  double loss_sum = 0.0;
  if (p.row_loss) std::fill(p.row_loss, p.row_loss + T, 0.0f);
  const int64_t vb = vocab_block(V);
  const SingleThreadedBlas single;
  for (int64_t t0 = 0; t0 < T; t0 += chunk) {
    const int64_t rows = std::min(chunk, T - t0);
    const int r = int(rows);
    const int32_t* targets = p.targets + t0;
    if (std::all_of(targets, targets + rows, [](int32_t id) { return id < 0; })) continue;
    const float* h = p.h + t0 * D;
    // logits[:, v0:v1] = h · W[v0:v1]ᵀ
    for_blocks(pool, V, vb, [&](int64_t v0, int64_t v1) {
      sgemm(p.precision, false, true, r, int(v1 - v0), d, 1.0f, h, d, p.weight + v0 * D, d, 0.0f,
            logits.data() + v0, vocab);
    });
    pool.parallel_for(rows, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        float* row = logits.data() + i * V;
        row_loss[size_t(i)] = 0.0;
        if (targets[i] < 0) {
          if (backward) std::fill(row, row + V, 0.0f);  // an ignored row passes no gradient
          continue;
        }
        row_loss[size_t(i)] =
            HWY_DYNAMIC_DISPATCH(CrossEntropyRow)(row, V, targets[i], p.grad_scale, backward);
      }
    });
    for (int64_t i = 0; i < rows; ++i) loss_sum += row_loss[size_t(i)];  // rows in order
    if (p.row_loss) {
      for (int64_t i = 0; i < rows; ++i) p.row_loss[t0 + i] = float(row_loss[size_t(i)]);
    }
    if (p.dh) {
      // dh[:, c0:c1] += dlogits · W[:, c0:c1], each block summing over the whole vocabulary.
      for_blocks(pool, D, dim_block(D), [&](int64_t c0, int64_t c1) {
        sgemm(p.precision, false, false, r, int(c1 - c0), vocab, 1.0f, logits.data(), vocab,
              p.weight + c0, d, 1.0f, p.dh + t0 * D + c0, d);
      });
    }
    if (p.dweight) {
      // dweight[v0:v1] += dlogits[:, v0:v1]ᵀ · h
      for_blocks(pool, V, vb, [&](int64_t v0, int64_t v1) {
        sgemm(p.precision, true, false, int(v1 - v0), d, r, 1.0f, logits.data() + v0, vocab, h, d,
              1.0f, p.dweight + v0 * D, d);
      });
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
  // Blocks of vocabulary columns on the pool; each column's sums depend only on dim.
  for_blocks(pool, vocab, 2048, [&](int64_t v0, int64_t v1) {
    sgemm(false, true, tokens, v1 - v0, dim, 1.0f, h, dim, weight + v0 * dim, dim, 0.0f, out + v0,
          vocab);
  });
}

}  // namespace dsa
#endif  // HWY_ONCE

// SIMD fp32 RMSNorm and LayerNorm for training (see norms_train.h). Rows are independent. The
// backward walks x and dy once: each fixed chunk of kNormTokenChunk tokens sums its dw (and db)
// terms into a partial row of its own, and the partials are then added up chunk by chunk in
// order, so no result depends on the thread count or on scheduling.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/norms/norms_train_fast.cc"
#include <algorithm>
#include <cmath>
#include <vector>

#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "ops/norms/norms_train.h"

#ifndef DSA_OPS_NORMS_TRAIN_FAST_ONCE_
#define DSA_OPS_NORMS_TRAIN_FAST_ONCE_
namespace dsa {
// Tokens per partial dw / db row. Fixed, not derived from the thread count, so that the order of
// the sums is too.
constexpr int64_t kNormTokenChunk = 16;
// Columns per task of the reduction of the partials: a multiple of every lane count, so which
// columns run in vector lanes and which in the scalar tail does not depend on the split.
constexpr int64_t kNormColumnBlock = 256;
}  // namespace dsa
#endif

HWY_BEFORE_NAMESPACE();
namespace dsa {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void RmsNormTrainForwardRows(const RmsNormTrainParams& p, int64_t begin, int64_t end) {
  const hn::ScalableTag<float> d;
  const int64_t n = int64_t(hn::Lanes(d));
  const int64_t dim = p.dim;
  const int64_t vector_end = dim - dim % n;
  for (int64_t t = begin; t < end; ++t) {
    const float* x = p.x + t * dim;
    float* y = p.y + t * dim;
    auto squares = hn::Zero(d);
    for (int64_t i = 0; i < vector_end; i += n) {
      const auto v = hn::LoadU(d, x + i);
      squares = hn::MulAdd(v, v, squares);
    }
    float tail = 0.0f;
    for (int64_t i = vector_end; i < dim; ++i) tail += x[i] * x[i];
    const float total = hn::GetLane(hn::SumOfLanes(d, squares)) + tail;
    const float rstd = 1.0f / std::sqrt(total / float(dim) + p.eps);
    p.rstd[t] = rstd;
    const auto r = hn::Set(d, rstd);
    for (int64_t i = 0; i < vector_end; i += n) {
      hn::StoreU(hn::Mul(hn::LoadU(d, p.weight + i), hn::Mul(hn::LoadU(d, x + i), r)), d, y + i);
    }
    for (int64_t i = vector_end; i < dim; ++i) y[i] = p.weight[i] * (x[i] * rstd);
  }
}

// Rows [begin, end); with `partial_w` ([D], zeroed), also partial_w += Σ_t dy ⊙ x̂ over them.
void RmsNormBackwardRows(const RmsNormTrainParams& p, int64_t begin, int64_t end,
                         float* partial_w) {
  const hn::ScalableTag<float> d;
  const int64_t n = int64_t(hn::Lanes(d));
  const int64_t dim = p.dim;
  const int64_t vector_end = dim - dim % n;
  for (int64_t t = begin; t < end; ++t) {
    const float* x = p.x + t * dim;
    const float* dy = p.dy + t * dim;
    const float rstd = p.rstd[t];
    const auto r = hn::Set(d, rstd);
    auto dot = hn::Zero(d);  // Σ g ⊙ x̂
    for (int64_t i = 0; i < vector_end; i += n) {
      const auto dyv = hn::LoadU(d, dy + i);
      const auto xhat = hn::Mul(hn::LoadU(d, x + i), r);
      dot = hn::MulAdd(hn::Mul(hn::LoadU(d, p.weight + i), dyv), xhat, dot);
      if (partial_w) {
        hn::StoreU(hn::MulAdd(dyv, xhat, hn::LoadU(d, partial_w + i)), d, partial_w + i);
      }
    }
    float tail = 0.0f;
    for (int64_t i = vector_end; i < dim; ++i) {
      const float xhat = x[i] * rstd;
      tail += (p.weight[i] * dy[i]) * xhat;
      if (partial_w) partial_w[i] += dy[i] * xhat;
    }
    const float mean_dot = (hn::GetLane(hn::SumOfLanes(d, dot)) + tail) / float(dim);
    const auto m = hn::Set(d, mean_dot);
    float* dx = p.dx + t * dim;  // may be dy: row t of dy is not read after this
    for (int64_t i = 0; i < vector_end; i += n) {
      const auto g = hn::Mul(hn::LoadU(d, p.weight + i), hn::LoadU(d, dy + i));
      const auto xhat = hn::Mul(hn::LoadU(d, x + i), r);
      hn::StoreU(hn::Mul(r, hn::NegMulAdd(xhat, m, g)), d, dx + i);
    }
    for (int64_t i = vector_end; i < dim; ++i) {
      dx[i] = rstd * (p.weight[i] * dy[i] - (x[i] * rstd) * mean_dot);
    }
  }
}

// dst[c0, c1) += Σ_c partials[c, c0 : c1) for c = 0 .. chunks−1 in order; partials is
// [chunks, dim].
void AddChunkPartials(const float* partials, int64_t chunks, int64_t dim, int64_t c0, int64_t c1,
                      float* dst) {
  const hn::ScalableTag<float> d;
  const int64_t n = int64_t(hn::Lanes(d));
  int64_t i = c0;
  for (; i + n <= c1; i += n) {
    auto sum = hn::Zero(d);
    for (int64_t c = 0; c < chunks; ++c) sum = hn::Add(sum, hn::LoadU(d, partials + c * dim + i));
    hn::StoreU(hn::Add(hn::LoadU(d, dst + i), sum), d, dst + i);
  }
  for (; i < c1; ++i) {
    float sum = 0.0f;
    for (int64_t c = 0; c < chunks; ++c) sum += partials[c * dim + i];
    dst[i] += sum;
  }
}

void LayerNormTrainForwardRows(const LayerNormTrainParams& p, int64_t begin, int64_t end) {
  const hn::ScalableTag<float> d;
  const int64_t n = int64_t(hn::Lanes(d));
  const int64_t dim = p.dim;
  const int64_t vector_end = dim - dim % n;
  for (int64_t t = begin; t < end; ++t) {
    const float* x = p.x + t * dim;
    auto sum = hn::Zero(d);
    for (int64_t i = 0; i < vector_end; i += n) sum = hn::Add(sum, hn::LoadU(d, x + i));
    float tail = 0.0f;
    for (int64_t i = vector_end; i < dim; ++i) tail += x[i];
    const float mean = (hn::GetLane(hn::SumOfLanes(d, sum)) + tail) / float(dim);
    const auto m = hn::Set(d, mean);
    auto squares = hn::Zero(d);
    for (int64_t i = 0; i < vector_end; i += n) {
      const auto centered = hn::Sub(hn::LoadU(d, x + i), m);
      squares = hn::MulAdd(centered, centered, squares);
    }
    float tail_squares = 0.0f;
    for (int64_t i = vector_end; i < dim; ++i) tail_squares += (x[i] - mean) * (x[i] - mean);
    const float variance = (hn::GetLane(hn::SumOfLanes(d, squares)) + tail_squares) / float(dim);
    const float rstd = 1.0f / std::sqrt(variance + p.eps);
    p.mean[t] = mean;
    p.rstd[t] = rstd;
    const auto r = hn::Set(d, rstd);
    float* y = p.y + t * dim;
    for (int64_t i = 0; i < vector_end; i += n) {
      const auto xhat = hn::Mul(hn::Sub(hn::LoadU(d, x + i), m), r);
      hn::StoreU(hn::MulAdd(hn::LoadU(d, p.weight + i), xhat, hn::LoadU(d, p.bias + i)), d, y + i);
    }
    for (int64_t i = vector_end; i < dim; ++i) {
      y[i] = p.weight[i] * ((x[i] - mean) * rstd) + p.bias[i];
    }
  }
}

// Rows [begin, end); with `partial_w` / `partial_b` ([D], zeroed), also their Σ_t dy ⊙ x̂ and
// Σ_t dy over them.
void LayerNormBackwardRows(const LayerNormTrainParams& p, int64_t begin, int64_t end,
                           float* partial_w, float* partial_b) {
  const hn::ScalableTag<float> d;
  const int64_t n = int64_t(hn::Lanes(d));
  const int64_t dim = p.dim;
  const int64_t vector_end = dim - dim % n;
  for (int64_t t = begin; t < end; ++t) {
    const float* x = p.x + t * dim;
    const float* dy = p.dy + t * dim;
    const float mean = p.mean[t];
    const float rstd = p.rstd[t];
    const auto m = hn::Set(d, mean);
    const auto r = hn::Set(d, rstd);
    auto sum_g = hn::Zero(d);
    auto sum_gxhat = hn::Zero(d);
    for (int64_t i = 0; i < vector_end; i += n) {
      const auto dyv = hn::LoadU(d, dy + i);
      const auto g = hn::Mul(hn::LoadU(d, p.weight + i), dyv);
      const auto xhat = hn::Mul(hn::Sub(hn::LoadU(d, x + i), m), r);
      sum_g = hn::Add(sum_g, g);
      sum_gxhat = hn::MulAdd(g, xhat, sum_gxhat);
      if (partial_w) {
        hn::StoreU(hn::MulAdd(dyv, xhat, hn::LoadU(d, partial_w + i)), d, partial_w + i);
      }
      if (partial_b) hn::StoreU(hn::Add(dyv, hn::LoadU(d, partial_b + i)), d, partial_b + i);
    }
    float tail_g = 0.0f, tail_gxhat = 0.0f;
    for (int64_t i = vector_end; i < dim; ++i) {
      const float g = p.weight[i] * dy[i];
      const float xhat = (x[i] - mean) * rstd;
      tail_g += g;
      tail_gxhat += g * xhat;
      if (partial_w) partial_w[i] += dy[i] * xhat;
      if (partial_b) partial_b[i] += dy[i];
    }
    const float mean_g = (hn::GetLane(hn::SumOfLanes(d, sum_g)) + tail_g) / float(dim);
    const float mean_gxhat = (hn::GetLane(hn::SumOfLanes(d, sum_gxhat)) + tail_gxhat) / float(dim);
    const auto mg = hn::Set(d, mean_g);
    const auto mgx = hn::Set(d, mean_gxhat);
    float* dx = p.dx + t * dim;  // may be dy: row t of dy is not read after this
    for (int64_t i = 0; i < vector_end; i += n) {
      const auto g = hn::Mul(hn::LoadU(d, p.weight + i), hn::LoadU(d, dy + i));
      const auto xhat = hn::Mul(hn::Sub(hn::LoadU(d, x + i), m), r);
      hn::StoreU(hn::Mul(r, hn::NegMulAdd(xhat, mgx, hn::Sub(g, mg))), d, dx + i);
    }
    for (int64_t i = vector_end; i < dim; ++i) {
      const float xhat = (x[i] - mean) * rstd;
      dx[i] = rstd * (p.weight[i] * dy[i] - mean_g - xhat * mean_gxhat);
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace dsa
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace dsa {

HWY_EXPORT(RmsNormTrainForwardRows);
HWY_EXPORT(RmsNormBackwardRows);
HWY_EXPORT(LayerNormTrainForwardRows);
HWY_EXPORT(LayerNormBackwardRows);
HWY_EXPORT(AddChunkPartials);

namespace {

// Rows per task: about 16K elements, so that small rows do not cost one task each.
int64_t row_grain(int64_t dim) { return std::max<int64_t>(1, 16384 / dim); }

// Per-chunk partial sums of the parameter gradients: `count` partials of [chunks, D] each.
class ChunkPartials {
 public:
  ChunkPartials(int64_t tokens, int64_t dim, int count)
      : chunks_((tokens + kNormTokenChunk - 1) / kNormTokenChunk),
        dim_(dim),
        values_(size_t(count * chunks_ * dim), 0.0f) {}

  int64_t chunks() const { return chunks_; }
  // Partial `which` of chunk c: [D].
  float* row(int which, int64_t c) { return values_.data() + (which * chunks_ + c) * dim_; }

  // dst += the sum over chunks (in order) of partial `which`.
  void add_to(int which, float* dst, ThreadPool& pool) {
    const int64_t blocks = (dim_ + kNormColumnBlock - 1) / kNormColumnBlock;
    pool.parallel_for(blocks, 1, [&](int64_t begin, int64_t end) {
      HWY_DYNAMIC_DISPATCH(AddChunkPartials)
      (row(which, 0), chunks_, dim_, begin * kNormColumnBlock,
       std::min(dim_, end * kNormColumnBlock), dst);
    });
  }

 private:
  int64_t chunks_;
  int64_t dim_;
  std::vector<float> values_;
};

}  // namespace

void rms_norm_train_forward(const RmsNormTrainParams& params, ThreadPool& pool) {
  validate_forward(params);
  pool.parallel_for(params.tokens, row_grain(params.dim), [&](int64_t begin, int64_t end) {
    HWY_DYNAMIC_DISPATCH(RmsNormTrainForwardRows)(params, begin, end);
  });
}

void rms_norm_backward(const RmsNormTrainParams& params, ThreadPool& pool) {
  validate_backward(params);
  if (params.tokens == 0) return;
  const bool dweight = params.dweight != nullptr;
  ChunkPartials partials(params.tokens, params.dim, dweight ? 1 : 0);
  pool.parallel_for(partials.chunks(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      HWY_DYNAMIC_DISPATCH(RmsNormBackwardRows)
      (params, c * kNormTokenChunk, std::min(params.tokens, (c + 1) * kNormTokenChunk),
       dweight ? partials.row(0, c) : nullptr);
    }
  });
  if (dweight) partials.add_to(0, params.dweight, pool);
}

void layer_norm_train_forward(const LayerNormTrainParams& params, ThreadPool& pool) {
  validate_forward(params);
  pool.parallel_for(params.tokens, row_grain(params.dim), [&](int64_t begin, int64_t end) {
    HWY_DYNAMIC_DISPATCH(LayerNormTrainForwardRows)(params, begin, end);
  });
}

void layer_norm_backward(const LayerNormTrainParams& params, ThreadPool& pool) {
  validate_backward(params);
  if (params.tokens == 0) return;
  const bool dweight = params.dweight != nullptr, dbias = params.dbias != nullptr;
  const int w = 0, b = dweight ? 1 : 0;  // which partial holds what
  ChunkPartials partials(params.tokens, params.dim, int(dweight) + int(dbias));
  pool.parallel_for(partials.chunks(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      HWY_DYNAMIC_DISPATCH(LayerNormBackwardRows)
      (params, c * kNormTokenChunk, std::min(params.tokens, (c + 1) * kNormTokenChunk),
       dweight ? partials.row(w, c) : nullptr, dbias ? partials.row(b, c) : nullptr);
    }
  });
  if (dweight) partials.add_to(w, params.dweight, pool);
  if (dbias) partials.add_to(b, params.dbias, pool);
}

}  // namespace dsa
#endif  // HWY_ONCE

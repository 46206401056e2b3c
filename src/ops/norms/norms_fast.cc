// SIMD RMSNorm and LayerNorm: one row per task, fp32 statistics in vector lanes (see norms.h).

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/norms/norms_fast.cc"
#include <cmath>
#include <vector>

#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "ops/norms/norms.h"
#include "ops/simd/bf16_simd-inl.h"

HWY_BEFORE_NAMESPACE();
namespace dsa {
namespace HWY_NAMESPACE {

// Rows [begin, end). `h` is scratch for one row of fp32 sums: [D].
void RmsNormRows(const RmsNormParams& p, int64_t begin, int64_t end, float* h) {
  const hn::ScalableTag<float> df;
  const int64_t n = int64_t(hn::Lanes(df));
  const int64_t dim = p.dim;
  const int64_t vector_end = dim - dim % n;
  for (int64_t t = begin; t < end; ++t) {
    const int64_t row = t * dim;
    auto sum_squares = hn::Zero(df);
    for (int64_t i = 0; i < vector_end; i += n) {
      auto v = LoadBf16(df, p.x + row + i);
      if (p.residual) v = hn::Add(v, LoadBf16(df, p.residual + row + i));
      hn::StoreU(v, df, h + i);
      sum_squares = hn::MulAdd(v, v, sum_squares);
    }
    float tail_squares = 0.0f;
    for (int64_t i = vector_end; i < dim; ++i) {
      h[i] = bf16_to_float(p.x[row + i]);
      if (p.residual) h[i] += bf16_to_float(p.residual[row + i]);
      tail_squares += h[i] * h[i];
    }
    const float total = hn::GetLane(hn::SumOfLanes(df, sum_squares)) + tail_squares;
    const float rms_inv = 1.0f / std::sqrt(total / float(dim) + p.eps);
    const auto scale = hn::Set(df, rms_inv);
    for (int64_t i = 0; i < vector_end; i += n) {
      const auto v = hn::LoadU(df, h + i);
      StoreBf16(df, hn::Mul(hn::LoadU(df, p.weight + i), hn::Mul(v, scale)), p.out + row + i);
      if (p.residual) StoreBf16(df, v, p.residual_out + row + i);
    }
    for (int64_t i = vector_end; i < dim; ++i) {
      p.out[row + i] = float_to_bf16(p.weight[i] * (h[i] * rms_inv));
      if (p.residual) p.residual_out[row + i] = float_to_bf16(h[i]);
    }
  }
}

void LayerNormRows(const LayerNormParams& p, int64_t begin, int64_t end, float* x) {
  const hn::ScalableTag<float> df;
  const int64_t n = int64_t(hn::Lanes(df));
  const int64_t dim = p.dim;
  const int64_t vector_end = dim - dim % n;
  for (int64_t t = begin; t < end; ++t) {
    const int64_t row = t * dim;
    auto sum = hn::Zero(df);
    for (int64_t i = 0; i < vector_end; i += n) {
      const auto v = LoadBf16(df, p.x + row + i);
      hn::StoreU(v, df, x + i);
      sum = hn::Add(sum, v);
    }
    float tail_sum = 0.0f;
    for (int64_t i = vector_end; i < dim; ++i) {
      x[i] = bf16_to_float(p.x[row + i]);
      tail_sum += x[i];
    }
    const float mean = (hn::GetLane(hn::SumOfLanes(df, sum)) + tail_sum) / float(dim);
    const auto mean_v = hn::Set(df, mean);
    auto sum_squares = hn::Zero(df);
    for (int64_t i = 0; i < vector_end; i += n) {
      const auto centered = hn::Sub(hn::LoadU(df, x + i), mean_v);
      sum_squares = hn::MulAdd(centered, centered, sum_squares);
    }
    float tail_squares = 0.0f;
    for (int64_t i = vector_end; i < dim; ++i) tail_squares += (x[i] - mean) * (x[i] - mean);
    const float variance =
        (hn::GetLane(hn::SumOfLanes(df, sum_squares)) + tail_squares) / float(dim);
    const float rstd = 1.0f / std::sqrt(variance + p.eps);
    const auto rstd_v = hn::Set(df, rstd);
    for (int64_t i = 0; i < vector_end; i += n) {
      const auto normalized = hn::Mul(hn::Sub(hn::LoadU(df, x + i), mean_v), rstd_v);
      const auto y = hn::MulAdd(normalized, hn::LoadU(df, p.weight + i), hn::LoadU(df, p.bias + i));
      StoreBf16(df, y, p.out + row + i);
    }
    for (int64_t i = vector_end; i < dim; ++i) {
      p.out[row + i] = float_to_bf16((x[i] - mean) * rstd * p.weight[i] + p.bias[i]);
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace dsa
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace dsa {

HWY_EXPORT(RmsNormRows);
HWY_EXPORT(LayerNormRows);

void rms_norm(const RmsNormParams& params, ThreadPool& pool) {
  validate(params);
  pool.parallel_for(params.tokens, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(size_t(params.dim));
    HWY_DYNAMIC_DISPATCH(RmsNormRows)(params, begin, end, scratch.data());
  });
}

void layer_norm(const LayerNormParams& params, ThreadPool& pool) {
  validate(params);
  pool.parallel_for(params.tokens, 4, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(size_t(params.dim));
    HWY_DYNAMIC_DISPATCH(LayerNormRows)(params, begin, end, scratch.data());
  });
}

}  // namespace dsa
#endif  // HWY_ONCE

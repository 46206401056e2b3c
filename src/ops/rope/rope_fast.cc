// SIMD RoPE: fp32 rotation on Highway vectors, bf16 rounding on store (see rope.h).

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/rope/rope_fast.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "ops/rope/rope.h"
#include "ops/simd/bf16_simd-inl.h"

HWY_BEFORE_NAMESPACE();
namespace dsa {
namespace HWY_NAMESPACE {

// Halves layout: a = x[0 : pairs], b = x[pairs : 2 pairs], element-wise with cos/sin.
void RotateHalves(bf16* x, const float* cos, const float* sin, int pairs) {
  const hn::ScalableTag<float> df;
  const int n = int(hn::Lanes(df));
  int i = 0;
  for (; i + n <= pairs; i += n) {
    const auto a = LoadBf16(df, x + i);
    const auto b = LoadBf16(df, x + pairs + i);
    const auto c = hn::LoadU(df, cos + i);
    const auto s = hn::LoadU(df, sin + i);
    StoreBf16(df, hn::Sub(hn::Mul(a, c), hn::Mul(b, s)), x + i);
    StoreBf16(df, hn::Add(hn::Mul(a, s), hn::Mul(b, c)), x + pairs + i);
  }
  for (; i < pairs; ++i) {
    const float a = bf16_to_float(x[i]);
    const float b = bf16_to_float(x[pairs + i]);
    x[i] = float_to_bf16(a * cos[i] - b * sin[i]);
    x[pairs + i] = float_to_bf16(a * sin[i] + b * cos[i]);
  }
}

// Interleaved layout: out = x * cos_dup + swap_pairs(x) * sin_signed, where cos_dup[2i] =
// cos_dup[2i+1] = cos[i] and sin_signed = (-sin[i], +sin[i]). Each lane computes the same two
// products and one add as the scalar formula.
void RotateInterleaved(bf16* x, const float* cos_dup, const float* sin_signed, int width) {
  const hn::ScalableTag<float> df;
  const int n = int(hn::Lanes(df));
  int i = 0;
  if (n >= 2) {
    for (; i + n <= width; i += n) {
      const auto v = LoadBf16(df, x + i);
      const auto swapped = hn::Reverse2(df, v);
      const auto rotated = hn::Add(hn::Mul(v, hn::LoadU(df, cos_dup + i)),
                                   hn::Mul(swapped, hn::LoadU(df, sin_signed + i)));
      StoreBf16(df, rotated, x + i);
    }
  }
  for (; i < width; i += 2) {
    const float a = bf16_to_float(x[i]);
    const float b = bf16_to_float(x[i + 1]);
    x[i] = float_to_bf16(a * cos_dup[i] + b * sin_signed[i]);
    x[i + 1] = float_to_bf16(b * cos_dup[i + 1] + a * sin_signed[i + 1]);
  }
}

void ApplyRopeRows(const RopeParams& params, int64_t begin, int64_t end) {
  const int pairs = params.table->pairs();
  float cos_dup[kMaxRopeDim];
  float sin_signed[kMaxRopeDim];
  int64_t prepared_token = -1;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t t = r / params.heads;
    const float* cos = params.table->cos(params.start_pos + t);
    const float* sin = params.table->sin(params.start_pos + t);
    bf16* x = params.x + r * params.row + params.offset;
    if (params.layout == RopeLayout::kHalves) {
      RotateHalves(x, cos, sin, pairs);
      continue;
    }
    if (t != prepared_token) {
      for (int i = 0; i < pairs; ++i) {
        cos_dup[2 * i] = cos_dup[2 * i + 1] = cos[i];
        sin_signed[2 * i] = -sin[i];
        sin_signed[2 * i + 1] = sin[i];
      }
      prepared_token = t;
    }
    RotateInterleaved(x, cos_dup, sin_signed, 2 * pairs);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace dsa
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace dsa {

HWY_EXPORT(ApplyRopeRows);

void apply_rope(const RopeParams& params, ThreadPool& pool) {
  validate(params);
  const int64_t rows = params.tokens * params.heads;
  pool.parallel_for(rows, 64, [&](int64_t begin, int64_t end) {
    HWY_DYNAMIC_DISPATCH(ApplyRopeRows)(params, begin, end);
  });
}

}  // namespace dsa
#endif  // HWY_ONCE

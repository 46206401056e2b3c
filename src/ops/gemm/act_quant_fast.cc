// act_quant of activation rows with SIMD (runtime dispatch), for the FP8 GEMMs. Bit-identical to
// act_quant_padded_row (gemm_ref.cc), which composes the scalar act_quant_row and fp8 rounding:
// the scale of a 128-group is computed by the same scalar function, x / s by the same division,
// and the rounding to e4m3 is done on the float's bits (normal codes: keep 3 mantissa bits,
// ties to even) or by adding 2^14 (subnormal codes: at 2^14 one float ulp is 2^-9, the e4m3
// subnormal step, so the addition rounds to it, ties to even, as float_to_fp8 does).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/gemm/act_quant_fast.cc"
#include <algorithm>
#include <cmath>

#include "core/float_formats.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "ops/gemm/gemm.h"

HWY_BEFORE_NAMESPACE();
namespace dsa::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// The scalar composition, for the lanes a group has past its last whole vector.
float QuantizedValue(float x, float scale) {
  return fp8_to_float(float_to_fp8(std::clamp(x / scale, -kFp8E4M3Max, kFp8E4M3Max)));
}

// fp8 e4m3 rounding of lanes already clamped to ±448 (NaN lanes stay NaN, as float_to_fp8 maps
// them to a NaN code).
HWY_INLINE VF RoundToFp8(DF d, VF v) {
  const hn::RebindToUnsigned<DF> du;
  const auto bits = hn::BitCast(du, v);
  const auto sign = hn::And(bits, hn::Set(du, 0x80000000u));
  const VF magnitude = hn::Abs(v);
  const auto mbits = hn::BitCast(du, magnitude);
  const auto lsb = hn::And(hn::ShiftRight<20>(mbits), hn::Set(du, 1u));
  const auto normal_bits =
      hn::And(hn::Add(hn::Add(mbits, hn::Set(du, 0x7FFFFu)), lsb), hn::Set(du, 0xFFF00000u));
  const VF magic = hn::Set(d, 0x1p14f);
  const VF subnormal = hn::Sub(hn::Add(magnitude, magic), magic);
  const VF rounded = hn::IfThenElse(hn::Lt(magnitude, hn::Set(d, 0x1p-6f)), subnormal,
                                    hn::BitCast(d, normal_bits));
  const VF with_sign = hn::BitCast(d, hn::Or(hn::BitCast(du, rounded), sign));
  return hn::IfThenElse(hn::IsNaN(v), v, with_sign);
}

void ActQuantRow(const float* x, int64_t k, ScaleFormat format, float* codes, float* scales) {
  const DF d;
  const int64_t lanes = int64_t(hn::Lanes(d));
  const VF limit = hn::Set(d, kFp8E4M3Max);
  for (int64_t g0 = 0, group = 0; g0 < k; g0 += kFp8BlockSize, ++group) {
    const int64_t g1 = std::min(k, g0 + kFp8BlockSize);
    // amax ignores NaN lanes, as std::max(amax, fabs(x)) does (the zero padding adds nothing).
    VF amax_lanes = hn::Zero(d);
    int64_t i = g0;
    for (; i + lanes <= g1; i += lanes) {
      const VF a = hn::Abs(hn::LoadU(d, x + i));
      amax_lanes = hn::IfThenElse(hn::Gt(a, amax_lanes), a, amax_lanes);
    }
    float amax = hn::GetLane(hn::MaxOfLanes(d, amax_lanes));
    for (; i < g1; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float scale = act_quant_scale(amax, format);
    scales[group] = scale;
    const VF s = hn::Set(d, scale);
    for (i = g0; i + lanes <= g1; i += lanes) {
      const VF q = hn::Div(hn::LoadU(d, x + i), s);
      const VF clamped = hn::IfThenElse(hn::IsNaN(q), q, hn::Clamp(q, hn::Neg(limit), limit));
      hn::StoreU(RoundToFp8(d, clamped), d, codes + i);
    }
    for (; i < g1; ++i) codes[i] = QuantizedValue(x[i], scale);
  }
}

}  // namespace dsa::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace dsa {

HWY_EXPORT(ActQuantRow);

void act_quant_rows(const float* x, int64_t m, int64_t k, ScaleFormat format, float* codes,
                    float* scales, ThreadPool& pool) {
  const int64_t blocks = weight_scale_cols(k);
  const auto quantize = [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      HWY_DYNAMIC_DISPATCH(ActQuantRow)(x + r * k, k, format, codes + r * k, scales + r * blocks);
    }
  };
  // One row (decode) is a few hundred nanoseconds: less than handing it to a worker.
  if (m == 1) {
    quantize(0, 1);
  } else {
    pool.parallel_for(m, 1, quantize);
  }
}

}  // namespace dsa
#endif  // HWY_ONCE

// Highway loads that widen bf16 and fp8 e4m3 to f32 lanes (the GEMM and MLA kernels share them).
// Per-target include guard: foreach_target.h includes this once per SIMD target.
#if defined(DSA_OPS_GEMM_WIDEN_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef DSA_OPS_GEMM_WIDEN_INL_H_
#undef DSA_OPS_GEMM_WIDEN_INL_H_
#else
#define DSA_OPS_GEMM_WIDEN_INL_H_
#endif

#include <cstdint>

#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace dsa::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// Lanes(DF) bf16 values from `p` as floats (bf16 is the upper half of an f32).
HWY_INLINE VF LoadBf16(DF d, const uint16_t* p) {
  const hn::RebindToUnsigned<DF> du32;
  const hn::Rebind<uint16_t, DF> du16;
  return hn::BitCast(d, hn::ShiftLeft<16>(hn::PromoteTo(du32, hn::LoadU(du16, p))));
}

// Lanes(DF) e4m3fn codes from `p` as floats. The code's exponent and mantissa bits placed at the
// top of an f32 exponent field give 2^(e-127) * (1.m) for normal codes and m * 2^-149 for
// subnormal ones; multiplying by 2^120 turns both into the e4m3 value exactly (bias 7). NaN codes
// (never written by act_quant or weight quantization) read as ±480.
HWY_INLINE VF LoadFp8(DF d, const uint8_t* p) {
  const hn::RebindToUnsigned<DF> du32;
  const hn::Rebind<uint8_t, DF> du8;
  const auto code = hn::PromoteTo(du32, hn::LoadU(du8, p));
  const auto magnitude = hn::ShiftLeft<20>(hn::And(code, hn::Set(du32, 0x7Fu)));
  const auto sign = hn::ShiftLeft<24>(hn::And(code, hn::Set(du32, 0x80u)));
  const VF value = hn::Mul(hn::BitCast(d, magnitude), hn::Set(d, 0x1p120f));
  return hn::BitCast(d, hn::Or(hn::BitCast(du32, value), sign));
}

// Rounds each lane to the nearest bf16 value (ties to even), as float_to_bf16 (finite inputs).
HWY_INLINE VF RoundToBf16(DF d, VF v) {
  const hn::RebindToUnsigned<DF> du32;
  const auto bits = hn::BitCast(du32, v);
  const auto lsb = hn::And(hn::ShiftRight<16>(bits), hn::Set(du32, 1u));
  const auto rounded = hn::Add(hn::Add(bits, hn::Set(du32, 0x7FFFu)), lsb);
  return hn::BitCast(d, hn::And(rounded, hn::Set(du32, 0xFFFF0000u)));
}

}  // namespace dsa::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // DSA_OPS_GEMM_WIDEN_INL_H_

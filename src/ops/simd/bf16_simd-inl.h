// bf16 <-> fp32 vector conversions shared by the Highway kernels of src/ops (per-target header:
// include it after hwy/highway.h in a file that uses foreach_target.h).
//
// Highway 1.0.3's DemoteTo(bf16) truncates; a bf16 tensor in DeepSeek's reference is rounded to
// nearest even, so StoreBf16 rounds exactly like dsa::float_to_bf16 (NaN becomes 0x7FC0).

// Per-target include guard (Highway's toggle pattern).
#if defined(DSA_OPS_BF16_SIMD_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef DSA_OPS_BF16_SIMD_INL_H_
#undef DSA_OPS_BF16_SIMD_INL_H_
#else
#define DSA_OPS_BF16_SIMD_INL_H_
#endif

#include "core/float_formats.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace dsa {
namespace HWY_NAMESPACE {

namespace hn = hwy::HWY_NAMESPACE;

// Lanes(df) bf16 values from `p`, widened to fp32 (exact).
template <class DF>
HWY_INLINE hn::Vec<DF> LoadBf16(DF df, const bf16* p) {
  const hn::Rebind<uint16_t, DF> du16;
  const hn::Rebind<uint32_t, DF> du32;
  const auto bits = hn::PromoteTo(du32, hn::LoadU(du16, reinterpret_cast<const uint16_t*>(p)));
  return hn::BitCast(df, hn::ShiftLeft<16>(bits));
}

// Rounds Lanes(df) floats to bf16 (nearest even) and stores them at `p`.
template <class DF>
HWY_INLINE void StoreBf16(DF df, hn::Vec<DF> v, bf16* p) {
  const hn::Rebind<uint16_t, DF> du16;
  const hn::Rebind<uint32_t, DF> du32;
  const hn::Rebind<int32_t, DF> di32;
  const auto bits = hn::BitCast(du32, v);
  const auto lsb = hn::And(hn::ShiftRight<16>(bits), hn::Set(du32, 1u));
  auto rounded = hn::ShiftRight<16>(hn::Add(bits, hn::Add(hn::Set(du32, 0x7FFFu), lsb)));
  rounded = hn::IfThenElse(hn::RebindMask(du32, hn::IsNaN(v)), hn::Set(du32, 0x7FC0u), rounded);
  hn::StoreU(hn::DemoteTo(du16, hn::BitCast(di32, rounded)), du16, reinterpret_cast<uint16_t*>(p));
}

}  // namespace HWY_NAMESPACE
}  // namespace dsa
HWY_AFTER_NAMESPACE();

#endif  // DSA_OPS_BF16_SIMD_INL_H_

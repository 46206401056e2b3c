// SIMD Hadamard-128: fp32 butterfly on Highway vectors, scale and bf16 rounding on store.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/indexer/hadamard_fast.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "ops/indexer/hadamard.h"
#include "ops/simd/bf16_simd-inl.h"

HWY_BEFORE_NAMESPACE();
namespace dsa {
namespace HWY_NAMESPACE {

// Butterfly stage with stride s: (a, b) at (i, i + s) becomes (a + b, a - b).
// Strides below the vector width pair lanes of one vector: partner = lane ^ s, and
// MulAdd(sign, v, partner) gives a + b on the low lane and -b + a = a - b on the high one.
void HadamardRows(const bf16* x, bf16* out, int64_t begin, int64_t end) {
  const hn::ScalableTag<float> df;
  constexpr int kMaxLanes = int(hn::MaxLanes(df));
  constexpr int kMaxInVectorStages = 5;  // lanes <= 32
  static_assert(kMaxLanes <= (1 << kMaxInVectorStages) && kHadamardDim % kMaxLanes == 0);
  const int n = int(hn::Lanes(df));

  // Lane permutation and signs of each in-vector stage.
  HWY_ALIGN int32_t partner_lane[kMaxInVectorStages][kMaxLanes];
  HWY_ALIGN float sign[kMaxInVectorStages][kMaxLanes];
  int stages = 0;
  for (int s = 1; s < n; s *= 2, ++stages) {
    for (int lane = 0; lane < n; ++lane) {
      partner_lane[stages][lane] = lane ^ s;
      sign[stages][lane] = (lane & s) ? -1.0f : 1.0f;
    }
  }

  HWY_ALIGN float buffer[kHadamardDim];
  for (int64_t r = begin; r < end; ++r) {
    const bf16* row = x + r * kHadamardDim;
    for (int i = 0; i < kHadamardDim; i += n) {
      auto v = LoadBf16(df, row + i);
      for (int stage = 0; stage < stages; ++stage) {
        const auto partner = hn::TableLookupLanes(v, hn::SetTableIndices(df, partner_lane[stage]));
        v = hn::MulAdd(hn::Load(df, sign[stage]), v, partner);
      }
      hn::Store(v, df, buffer + i);
    }
    for (int s = n; s < kHadamardDim; s *= 2) {
      for (int block = 0; block < kHadamardDim; block += 2 * s) {
        for (int i = block; i < block + s; i += n) {
          const auto a = hn::Load(df, buffer + i);
          const auto b = hn::Load(df, buffer + i + s);
          hn::Store(hn::Add(a, b), df, buffer + i);
          hn::Store(hn::Sub(a, b), df, buffer + i + s);
        }
      }
    }
    const auto scale = hn::Set(df, kHadamardScale);
    for (int i = 0; i < kHadamardDim; i += n) {
      StoreBf16(df, hn::Mul(hn::Load(df, buffer + i), scale), out + r * kHadamardDim + i);
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace dsa
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace dsa {

HWY_EXPORT(HadamardRows);

void hadamard_128(const HadamardParams& params, ThreadPool& pool) {
  validate(params);
  pool.parallel_for(params.rows, 64, [&](int64_t begin, int64_t end) {
    HWY_DYNAMIC_DISPATCH(HadamardRows)(params.x, params.out, begin, end);
  });
}

}  // namespace dsa
#endif  // HWY_ONCE

// SIMD indexer scores (see indexer.h): fp32 FMA on Highway vectors, or the AVX512-BF16 kernel
// (indexer_scores_avx512bf16.cc) when the CPU has it.
//
// Per query row the fp8 query codes become an fp32 panel q[d][h] (heads padded to whole vectors,
// padding has weight 0). Keys are converted 1-4 at a time to fp32 and each key value is
// broadcast against 4 vectors of heads, so a tile keeps kKeys x 4 accumulators in registers.
// Work items are (query row, block of 256 keys) pairs spread over the pool.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/indexer/indexer_fast.cc"
#include <algorithm>

#include "core/cpu_features.h"
#include "hwy/aligned_allocator.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "ops/indexer/indexer.h"
#include "ops/indexer/indexer_scores_internal.h"

HWY_BEFORE_NAMESPACE();
namespace dsa {
namespace HWY_NAMESPACE {

namespace hn = hwy::HWY_NAMESPACE;

constexpr int kHeadVecs = 4;  // head vectors per register tile

// Lanes(df) fp8 e4m3 codes -> their exact fp32 values. The 7 magnitude bits placed at fp32 bits
// 20..26 read as value * 2^-120 (fp8 subnormals land on fp32 subnormals, still exact), so one
// multiply by 2^120 rebiases the exponent; the sign bit is or-ed in afterwards.
template <class DF>
HWY_INLINE hn::Vec<DF> Fp8ToFloat(DF df, const fp8_e4m3* codes) {
  const hn::Rebind<uint8_t, DF> du8;
  const hn::RebindToUnsigned<DF> du32;
  const auto bits = hn::PromoteTo(du32, hn::LoadU(du8, reinterpret_cast<const uint8_t*>(codes)));
  const auto magnitude = hn::ShiftLeft<20>(hn::And(bits, hn::Set(du32, 0x7Fu)));
  const auto sign = hn::ShiftLeft<24>(hn::And(bits, hn::Set(du32, 0x80u)));
  const auto value = hn::Mul(hn::BitCast(df, magnitude), hn::Set(df, 0x1p120f));
  return hn::Or(value, hn::BitCast(df, sign));
}

// head_sum[k] += ReLU(q[:, heads] . key_k) * w[heads] for kVecs vectors of heads.
// q: panel columns of this head group, row stride `q_stride`; keys: [kKeys][128] fp32.
template <int kKeys, int kVecs, class DF>
HWY_INLINE void AccumulateHeadGroup(DF df, const float* HWY_RESTRICT q, int64_t q_stride,
                                    const float* HWY_RESTRICT keys, const float* HWY_RESTRICT w,
                                    hn::Vec<DF>* head_sum) {
  const size_t n = hn::Lanes(df);
  hn::Vec<DF> acc[kKeys][kVecs];
  for (int k = 0; k < kKeys; ++k) {
    for (int v = 0; v < kVecs; ++v) acc[k][v] = hn::Zero(df);
  }
  for (int d = 0; d < kIndexerHeadDim; ++d) {
    hn::Vec<DF> qv[kVecs];
    for (int v = 0; v < kVecs; ++v) qv[v] = hn::Load(df, q + d * q_stride + v * n);
    for (int k = 0; k < kKeys; ++k) {
      const auto key_value = hn::Set(df, keys[k * kIndexerHeadDim + d]);
      for (int v = 0; v < kVecs; ++v) acc[k][v] = hn::MulAdd(qv[v], key_value, acc[k][v]);
    }
  }
  for (int k = 0; k < kKeys; ++k) {
    for (int v = 0; v < kVecs; ++v) {
      const auto relu = hn::Max(acc[k][v], hn::Zero(df));
      head_sum[k] = hn::MulAdd(relu, hn::Load(df, w + v * n), head_sum[k]);
    }
  }
}

// Scores of kKeys consecutive keys against one query panel.
template <int kKeys, class DF>
HWY_INLINE void ScoreKeys(DF df, const float* panel_q, const float* panel_w, int64_t heads_padded,
                          const fp8_e4m3* codes, const float* key_scales, float* out) {
  const size_t n = hn::Lanes(df);
  HWY_ALIGN float keys[kKeys * kIndexerHeadDim];
  for (int i = 0; i < kKeys * kIndexerHeadDim; i += int(n)) {
    hn::Store(Fp8ToFloat(df, codes + i), df, keys + i);
  }
  hn::Vec<DF> head_sum[kKeys];
  for (int k = 0; k < kKeys; ++k) head_sum[k] = hn::Zero(df);
  const int64_t vecs = heads_padded / int64_t(n);
  int64_t v = 0;
  for (; v + kHeadVecs <= vecs; v += kHeadVecs) {
    AccumulateHeadGroup<kKeys, kHeadVecs>(df, panel_q + v * n, heads_padded, keys, panel_w + v * n,
                                          head_sum);
  }
  const float* q_rest = panel_q + v * n;
  const float* w_rest = panel_w + v * n;
  switch (vecs - v) {
    case 3:
      AccumulateHeadGroup<kKeys, 3>(df, q_rest, heads_padded, keys, w_rest, head_sum);
      break;
    case 2:
      AccumulateHeadGroup<kKeys, 2>(df, q_rest, heads_padded, keys, w_rest, head_sum);
      break;
    case 1:
      AccumulateHeadGroup<kKeys, 1>(df, q_rest, heads_padded, keys, w_rest, head_sum);
      break;
    default:
      break;
  }
  for (int k = 0; k < kKeys; ++k) {
    out[k] = hn::GetLane(hn::SumOfLanes(df, head_sum[k])) * key_scales[k];
  }
}

// The thread's query panel: q[d][h] in fp32 (heads padded to whole vectors) and weights[h].
struct Fp32Panel {
  indexer_internal::PanelCache cache;
  int64_t heads_padded = 0;
  hwy::AlignedFreeUniquePtr<float[]> q, w;

  void build(const IndexerScoresParams& p, int64_t row, int64_t padded) {
    if (heads_padded != padded) {
      q = hwy::AllocateAligned<float>(size_t(kIndexerHeadDim * padded));
      w = hwy::AllocateAligned<float>(size_t(padded));
      heads_padded = padded;
    }
    std::fill(q.get(), q.get() + kIndexerHeadDim * padded, 0.0f);  // padding heads: q = 0
    std::fill(w.get(), w.get() + padded, 0.0f);                    // and weight 0
    for (int64_t h = 0; h < p.heads; ++h) {
      const fp8_e4m3* codes = p.q_codes + (row * p.heads + h) * kIndexerHeadDim;
      for (int d = 0; d < kIndexerHeadDim; ++d) q[d * padded + h] = fp8_to_float(codes[d]);
      w[h] = p.head_weights[row * p.heads + h];
    }
  }
};

// Work items [begin, end) (indexer_scores_internal.h) of the call `call_id`.
void ScoreItems(const IndexerScoresParams& p, int64_t begin, int64_t end, uint64_t call_id) {
  const hn::ScalableTag<float> df;
  const int64_t n = int64_t(hn::Lanes(df));
  constexpr int kKeyTile = hn::MaxLanes(df) >= 16 ? 4 : 2;  // accumulators fit the registers
  const int64_t heads_padded = (p.heads + n - 1) / n * n;
  // One per thread and SIMD target (each target has its own lane count).
  thread_local Fp32Panel panel;
  for (int64_t item = begin; item < end; ++item) {
    const indexer_internal::ScoreItem it = indexer_internal::begin_score_item(p, item);
    if (it.valid_end == it.block_begin) continue;
    const int64_t t = it.row;
    if (panel.cache.rebuild(call_id, t)) panel.build(p, t, heads_padded);
    const float* panel_q = panel.q.get();
    const float* panel_w = panel.w.get();
    float* scores = p.scores + t * p.keys;
    int64_t s = it.block_begin;
    for (; s + kKeyTile <= it.valid_end; s += kKeyTile) {
      ScoreKeys<kKeyTile>(df, panel_q, panel_w, heads_padded, p.key_codes + s * kIndexerHeadDim,
                          p.key_scales + s, scores + s);
    }
    for (; s < it.valid_end; ++s) {
      ScoreKeys<1>(df, panel_q, panel_w, heads_padded, p.key_codes + s * kIndexerHeadDim,
                   p.key_scales + s, scores + s);
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace dsa
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace dsa {

HWY_EXPORT(ScoreItems);

void indexer_scores(const IndexerScoresParams& params, ThreadPool& pool) {
  validate(params);
  static const bool cpu_has_avx512bf16 = detect_cpu_features().avx512bf16;
  const bool use_avx512bf16 = params.allow_avx512bf16 && cpu_has_avx512bf16;
  const int64_t items = params.tokens * indexer_internal::key_blocks(params);
  const uint64_t call_id = indexer_internal::next_scores_call();
  pool.parallel_for(items, 1, [&](int64_t begin, int64_t end) {
    if (use_avx512bf16) {
      indexer_internal::score_items_avx512bf16(params, begin, end, call_id);
    } else {
      HWY_DYNAMIC_DISPATCH(ScoreItems)(params, begin, end, call_id);
    }
  });
}

}  // namespace dsa
#endif  // HWY_ONCE

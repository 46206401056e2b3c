// Fast MLA attention: Highway SIMD (runtime dispatch) + ThreadPool, fp32 online softmax
// (mla_flash-inl.h). Absorbed mode splits the heads of a query between threads; each thread
// dequantizes the keys it needs chunk by chunk into fp32 and keeps its heads' running outputs.
// On CPUs with AVX512-BF16 the q·k scores use vdpbf16ps (mla_scores_avx512bf16.cc) on bf16 copies
// of the queries and of each chunk's keys; p·v stays fp32 (p is not a bf16 value).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/mla_fast.cc"
#include <algorithm>
#include <cstring>
#include <vector>

#include "core/aligned_buffer.h"
#include "core/cpu_features.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "ops/gemm_widen-inl.h"
#include "ops/mla.h"
#include "ops/mla_flash-inl.h"
#include "ops/mla_scores_avx512bf16.h"

HWY_BEFORE_NAMESPACE();
namespace dsa::HWY_NAMESPACE {

// Writes the 576 fp32 key values of one cache token (REF's bf16 values, as unpack_latent_token).
void DequantizeKey(const std::byte* token, LatentCacheFormat format, float* out) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const uint16_t* rope;
  if (format == LatentCacheFormat::kFp8) {
    const uint8_t* codes = reinterpret_cast<const uint8_t*>(token);
    float scales[kLatentScaleCount];
    std::memcpy(scales, token + kMlaLatentDim, sizeof(scales));
    for (size_t i = 0; i < size_t(kMlaLatentDim); i += N) {
      const VF scale = hn::Set(d, scales[i / kFp8BlockSize]);
      hn::StoreU(RoundToBf16(d, hn::Mul(LoadFp8(d, codes + i), scale)), d, out + i);
    }
    rope = reinterpret_cast<const uint16_t*>(token + kMlaLatentDim + sizeof(scales));
  } else {
    const uint16_t* values = reinterpret_cast<const uint16_t*>(token);
    for (size_t i = 0; i < size_t(kMlaLatentDim); i += N) {
      hn::StoreU(LoadBf16(d, values + i), d, out + i);
    }
    rope = values + kMlaLatentDim;
  }
  for (size_t i = 0; i < size_t(kMlaRopeDim); i += N) {
    hn::StoreU(LoadBf16(d, rope + i), d, out + kMlaLatentDim + i);
  }
}

// Heads [0, heads) of one query (rows of q [heads, 576]) against the keys `ids` (-1 skipped), or
// against 0 .. count-1 when ids is null. Writes out [heads, 512] and lse [heads]. With
// `use_avx512bf16` the scores come from bf16 pairs: q [heads][288] and keys [64][288] dwords.
void AttendLatent(const float* q, int64_t heads, const LatentCacheView& cache, const int32_t* ids,
                  int64_t count, float scale, bool use_avx512bf16, float* out, float* lse) {
  constexpr int kPairs = kMlaKeyDim / 2;
  AlignedBuffer key_buffer(sizeof(float) * kFlashChunk * kMlaKeyDim);
  AlignedBuffer score_buffer(sizeof(float) * 4 * kFlashChunk);
  AlignedBuffer key_pair_buffer(use_avx512bf16 ? sizeof(uint32_t) * kFlashChunk * kPairs : 0);
  AlignedBuffer q_pair_buffer(use_avx512bf16 ? sizeof(uint32_t) * size_t(heads) * kPairs : 0);
  float* keys = reinterpret_cast<float*>(key_buffer.data());
  float* scores = reinterpret_cast<float*>(score_buffer.data());
  uint32_t* key_pairs = reinterpret_cast<uint32_t*>(key_pair_buffer.data());
  uint32_t* q_pairs = reinterpret_cast<uint32_t*>(q_pair_buffer.data());
  if (use_avx512bf16) {
    mla_internal::to_bf16_pairs_avx512bf16(q, heads, kMlaKeyDim, kMlaKeyDim, q_pairs);
  }
  std::vector<float> row_max(size_t(heads), kNegInf), row_sum(size_t(heads), 0.0f);
  std::fill(out, out + heads * kMlaLatentDim, 0.0f);
  int64_t next = 0;
  while (next < count) {
    int filled = 0;
    for (; next < count && filled < kFlashChunk; ++next) {
      const int64_t id = ids ? ids[next] : next;
      if (id < 0) continue;
      DequantizeKey(cache.token(id), cache.format, keys + filled * kMlaKeyDim);
      ++filled;
    }
    if (filled == 0) break;
    if (use_avx512bf16) {
      mla_internal::to_bf16_pairs_avx512bf16(keys, filled, kMlaKeyDim, kMlaKeyDim, key_pairs);
    }
    // Four heads at a time: their scores stay in L1 while the chunk's keys stream from L2.
    for (int64_t h = 0; h < heads; h += 4) {
      const int rows = int(std::min<int64_t>(4, heads - h));
      if (use_avx512bf16) {
        mla_internal::score_chunk_avx512bf16(q_pairs + h * kPairs, rows, key_pairs, filled, kPairs,
                                             scale, scores, kFlashChunk);
      } else {
        ScoreChunk(q + h * kMlaKeyDim, kMlaKeyDim, rows, keys, kMlaKeyDim, filled, kMlaKeyDim,
                   scale, scores);
      }
      FlashChunk(scores, rows, filled, keys, kMlaKeyDim, kMlaLatentDim, out + h * kMlaLatentDim,
                 kMlaLatentDim, row_max.data() + h, row_sum.data() + h);
    }
  }
  FlashFinish(int(heads), kMlaLatentDim, out, kMlaLatentDim, row_max.data(), row_sum.data(), lse);
}

// Queries [t, t + 4) (or fewer) of one head in causal MHA mode.
void AttendMhaBlock(const MhaPrefillParams& p, int64_t head, int64_t t0, int rows) {
  const int64_t H = p.num_heads;
  const int64_t offset = p.num_keys - p.num_queries;
  const size_t k_stride = size_t(H) * kMhaQkDim;
  const size_t v_stride = size_t(H) * kMhaVDim;
  alignas(64) float scores[4 * kFlashChunk];
  float row_max[4], row_sum[4];
  std::fill(row_max, row_max + 4, kNegInf);
  std::fill(row_sum, row_sum + 4, 0.0f);
  float* out = p.out + (t0 * H + head) * kMhaVDim;
  const size_t out_stride = v_stride;
  for (int r = 0; r < rows; ++r)
    std::fill(out + r * out_stride, out + r * out_stride + kMhaVDim, 0.0f);
  const float* q = p.q + (t0 * H + head) * kMhaQkDim;
  const int64_t key_end = t0 + rows + offset;  // keys the last row sees
  for (int64_t s0 = 0; s0 < key_end; s0 += kFlashChunk) {
    const int count = int(std::min<int64_t>(kFlashChunk, key_end - s0));
    const float* k = p.k + s0 * k_stride + head * kMhaQkDim;
    const float* v = p.v + s0 * v_stride + head * kMhaVDim;
    ScoreChunk(q, k_stride, rows, k, k_stride, count, kMhaQkDim, p.softmax_scale, scores);
    for (int r = 0; r < rows; ++r) {  // causal mask: row t sees keys s <= t + offset
      const int64_t visible = t0 + r + offset + 1 - s0;
      for (int64_t j = std::max<int64_t>(visible, 0); j < count; ++j) {
        scores[r * kFlashChunk + j] = kNegInf;
      }
    }
    FlashChunk(scores, rows, count, v, v_stride, kMhaVDim, out, out_stride, row_max, row_sum);
  }
  FlashFinish(rows, kMhaVDim, out, out_stride, row_max, row_sum, nullptr);
}

}  // namespace dsa::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace dsa {

HWY_EXPORT(AttendLatent);
HWY_EXPORT(AttendMhaBlock);

namespace {

bool cpu_has_avx512bf16() {
  static const bool has = detect_cpu_features().avx512bf16;
  return has;
}

// Splits the heads of `queries` query rows into pieces so every thread has work: one piece per
// row when there are enough rows, else the heads of a row are divided between the threads.
void attend_rows(int64_t queries, int64_t heads, ThreadPool& pool,
                 const std::function<void(int64_t t, int64_t h0, int64_t h1)>& body) {
  const int64_t parts = queries >= pool.size() ? 1 : std::min<int64_t>(heads, pool.size());
  pool.parallel_for(queries * parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t t = item / parts, part = item % parts;
      const int64_t h0 = heads * part / parts, h1 = heads * (part + 1) / parts;
      if (h1 > h0) body(t, h0, h1);
    }
  });
}

}  // namespace

void sparse_mla(const SparseMlaParams& p, ThreadPool& pool) {
  validate(p);
  const bool use_avx512bf16 = p.allow_avx512bf16 && cpu_has_avx512bf16();
  attend_rows(p.num_queries, p.num_heads, pool, [&](int64_t t, int64_t h0, int64_t h1) {
    const int64_t row = t * p.num_heads + h0;
    HWY_DYNAMIC_DISPATCH(AttendLatent)
    (p.q + row * kMlaKeyDim, h1 - h0, p.cache, p.indices + t * p.topk, p.topk, p.softmax_scale,
     use_avx512bf16, p.out + row * kMlaLatentDim, p.lse + row);
  });
}

void dense_mla(const DenseMlaParams& p, ThreadPool& pool) {
  validate(p);
  const bool use_avx512bf16 = p.allow_avx512bf16 && cpu_has_avx512bf16();
  attend_rows(1, p.num_heads, pool, [&](int64_t, int64_t h0, int64_t h1) {
    HWY_DYNAMIC_DISPATCH(AttendLatent)
    (p.q + h0 * kMlaKeyDim, h1 - h0, p.cache, nullptr, p.cache.num_tokens, p.softmax_scale,
     use_avx512bf16, p.out + h0 * kMlaLatentDim, p.lse + h0);
  });
}

void mha_prefill(const MhaPrefillParams& p, ThreadPool& pool) {
  validate(p);
  const int64_t blocks = (p.num_queries + 3) / 4;
  pool.parallel_for(blocks * p.num_heads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t head = item % p.num_heads, t0 = (item / p.num_heads) * 4;
      const int rows = int(std::min<int64_t>(4, p.num_queries - t0));
      HWY_DYNAMIC_DISPATCH(AttendMhaBlock)(p, head, t0, rows);
    }
  });
}

}  // namespace dsa
#endif  // HWY_ONCE

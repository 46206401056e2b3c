// Fast MLA attention: Highway SIMD (runtime dispatch) + ThreadPool, fp32 online softmax
// (mla_flash-inl.h). Absorbed mode splits the heads of a query between threads; each thread
// dequantizes the keys it needs chunk by chunk into fp32 and keeps its heads' running outputs.
// On CPUs with AVX512-BF16 the q·k scores use vdpbf16ps (mla_scores_avx512bf16.cc) on bf16 copies
// of the queries and of each chunk's keys, zero-padded to whole vectors for any key width; p·v
// stays fp32 (p is not a bf16 value). Any width works: the flash blocks finish partial vectors in
// scalar code.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/attention/mla_fast.cc"
#include <algorithm>
#include <bit>
#include <cstring>
#include <vector>

#include "core/aligned_buffer.h"
#include "core/cpu_features.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "ops/attention/mla.h"
#include "ops/attention/mla_flash-inl.h"
#include "ops/attention/mla_scores_avx512bf16.h"
#include "ops/gemm/gemm_widen-inl.h"

HWY_BEFORE_NAMESPACE();
namespace dsa::HWY_NAMESPACE {

// Writes the dims.key() fp32 key values of one cache token (REF's bf16 values, as
// unpack_latent_token). The latent is whole 128-blocks, so whole vectors; the rope may end in a
// partial vector, done in scalar code.
void DequantizeKey(const std::byte* token, LatentCacheFormat format, LatentDims dims, float* out) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const size_t latent = size_t(dims.latent), rope_dim = size_t(dims.rope);
  const uint16_t* rope;
  if (format == LatentCacheFormat::kFp8) {
    const uint8_t* codes = reinterpret_cast<const uint8_t*>(token);
    const std::byte* scale_bytes = token + latent;
    for (int g = 0; g < dims.scale_count(); ++g) {
      float scale_value;
      std::memcpy(&scale_value, scale_bytes + 4 * g, 4);
      const VF scale = hn::Set(d, scale_value);
      for (size_t i = size_t(g) * kFp8BlockSize; i < size_t(g + 1) * kFp8BlockSize; i += N) {
        hn::StoreU(RoundToBf16(d, hn::Mul(LoadFp8(d, codes + i), scale)), d, out + i);
      }
    }
    rope = reinterpret_cast<const uint16_t*>(scale_bytes + 4 * dims.scale_count());
  } else {
    const uint16_t* values = reinterpret_cast<const uint16_t*>(token);
    for (size_t i = 0; i < latent; i += N) hn::StoreU(LoadBf16(d, values + i), d, out + i);
    rope = values + latent;
  }
  size_t i = 0;
  for (; i + N <= rope_dim; i += N) hn::StoreU(LoadBf16(d, rope + i), d, out + latent + i);
  for (; i < rope_dim; ++i) out[latent + i] = std::bit_cast<float>(uint32_t(rope[i]) << 16);
}

// Heads [0, heads) of one query (rows of q [heads, dims.key()]) against the keys `ids` (-1
// skipped), or against 0 .. count-1 when ids is null. Writes out [heads, dims.latent] and lse
// [heads]. With `use_avx512bf16` the scores come from bf16 pairs: q [heads][pairs] and keys
// [64][pairs] dwords, pairs = bf16_pair_count(dims.key()) (zero-padded to whole vectors).
void AttendLatent(const float* q, int64_t heads, const LatentCacheView& cache, const int32_t* ids,
                  int64_t count, float scale, bool use_avx512bf16, float* out, float* lse) {
  const LatentDims dims = cache.dims;
  const int key_dim = dims.key();
  const size_t latent = size_t(dims.latent);
  const int pairs = mla_internal::bf16_pair_count(key_dim);
  AlignedBuffer key_buffer(sizeof(float) * kFlashChunk * key_dim);
  AlignedBuffer score_buffer(sizeof(float) * 4 * kFlashChunk);
  AlignedBuffer key_pair_buffer(use_avx512bf16 ? sizeof(uint32_t) * kFlashChunk * pairs : 0);
  AlignedBuffer q_pair_buffer(use_avx512bf16 ? sizeof(uint32_t) * size_t(heads) * pairs : 0);
  float* keys = reinterpret_cast<float*>(key_buffer.data());
  float* scores = reinterpret_cast<float*>(score_buffer.data());
  uint32_t* key_pairs = reinterpret_cast<uint32_t*>(key_pair_buffer.data());
  uint32_t* q_pairs = reinterpret_cast<uint32_t*>(q_pair_buffer.data());
  if (use_avx512bf16) {
    mla_internal::to_bf16_pairs_avx512bf16(q, heads, key_dim, key_dim, q_pairs);
  }
  std::vector<float> row_max(size_t(heads), kNegInf), row_sum(size_t(heads), 0.0f);
  std::fill(out, out + heads * dims.latent, 0.0f);
  int64_t next = 0;
  while (next < count) {
    int filled = 0;
    for (; next < count && filled < kFlashChunk; ++next) {
      const int64_t id = ids ? ids[next] : next;
      if (id < 0) continue;
      DequantizeKey(cache.token(id), cache.format, dims, keys + filled * key_dim);
      ++filled;
    }
    if (filled == 0) break;
    if (use_avx512bf16) {
      mla_internal::to_bf16_pairs_avx512bf16(keys, filled, key_dim, key_dim, key_pairs);
    }
    // Four heads at a time: their scores stay in L1 while the chunk's keys stream from L2.
    for (int64_t h = 0; h < heads; h += 4) {
      const int rows = int(std::min<int64_t>(4, heads - h));
      if (use_avx512bf16) {
        mla_internal::score_chunk_avx512bf16(q_pairs + h * pairs, rows, key_pairs, filled, pairs,
                                             scale, scores, kFlashChunk);
      } else {
        ScoreChunk(q + h * key_dim, key_dim, rows, keys, key_dim, filled, key_dim, scale, scores);
      }
      FlashChunk(scores, rows, filled, keys, key_dim, latent, out + h * latent, latent,
                 row_max.data() + h, row_sum.data() + h);
    }
  }
  FlashFinish(int(heads), latent, out, latent, row_max.data(), row_sum.data(), lse);
}

// Queries [t0, t0 + rows) (rows <= 4) of one head in causal MHA mode. `selected` is null (every
// causal key) or [rows][key_end] flags of the keys each row's indices list.
void AttendMhaBlock(const MhaPrefillParams& p, int64_t head, int64_t t0, int rows,
                    const uint8_t* selected) {
  const int64_t H = p.num_heads;
  const int64_t offset = p.num_keys - p.num_queries;
  const size_t qk_dim = size_t(p.qk_dim), v_dim = size_t(p.v_dim);
  const size_t k_stride = size_t(H) * qk_dim;
  const size_t v_stride = size_t(H) * v_dim;
  alignas(64) float scores[4 * kFlashChunk];
  float row_max[4], row_sum[4];
  std::fill(row_max, row_max + 4, kNegInf);
  std::fill(row_sum, row_sum + 4, 0.0f);
  float* out = p.out + (t0 * H + head) * p.v_dim;
  const size_t out_stride = v_stride;
  for (int r = 0; r < rows; ++r)
    std::fill(out + r * out_stride, out + r * out_stride + v_dim, 0.0f);
  const float* q = p.q + (t0 * H + head) * p.qk_dim;
  const int64_t key_end = t0 + rows + offset;  // keys the last row sees
  for (int64_t s0 = 0; s0 < key_end; s0 += kFlashChunk) {
    const int count = int(std::min<int64_t>(kFlashChunk, key_end - s0));
    if (selected) {  // skip chunks that no row selects
      bool any = false;
      for (int r = 0; r < rows && !any; ++r) {
        const uint8_t* row = selected + r * key_end + s0;
        any = std::find(row, row + count, uint8_t(1)) != row + count;
      }
      if (!any) continue;
    }
    const float* k = p.k + s0 * k_stride + head * qk_dim;
    const float* v = p.v + s0 * v_stride + head * v_dim;
    ScoreChunk(q, k_stride, rows, k, k_stride, count, qk_dim, p.softmax_scale, scores);
    for (int r = 0; r < rows; ++r) {  // causal mask: row t sees keys s <= t + offset
      const int64_t visible = t0 + r + offset + 1 - s0;
      for (int64_t j = std::max<int64_t>(visible, 0); j < count; ++j) {
        scores[r * kFlashChunk + j] = kNegInf;
      }
      if (selected) {
        const uint8_t* row = selected + r * key_end + s0;
        for (int j = 0; j < count; ++j) {
          if (!row[j]) scores[r * kFlashChunk + j] = kNegInf;
        }
      }
    }
    FlashChunk(scores, rows, count, v, v_stride, v_dim, out, out_stride, row_max, row_sum);
  }
  FlashFinish(rows, v_dim, out, out_stride, row_max, row_sum, nullptr);
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
    (p.q + row * p.cache.dims.key(), h1 - h0, p.cache, p.indices + t * p.topk, p.topk,
     p.softmax_scale, use_avx512bf16, p.out + row * p.cache.dims.latent, p.lse + row);
  });
}

void dense_mla(const DenseMlaParams& p, ThreadPool& pool) {
  validate(p);
  const bool use_avx512bf16 = p.allow_avx512bf16 && cpu_has_avx512bf16();
  attend_rows(1, p.num_heads, pool, [&](int64_t, int64_t h0, int64_t h1) {
    HWY_DYNAMIC_DISPATCH(AttendLatent)
    (p.q + h0 * p.cache.dims.key(), h1 - h0, p.cache, nullptr, p.cache.num_tokens, p.softmax_scale,
     use_avx512bf16, p.out + h0 * p.cache.dims.latent, p.lse + h0);
  });
}

void mha_prefill(const MhaPrefillParams& p, ThreadPool& pool) {
  validate(p);
  const int64_t blocks = (p.num_queries + 3) / 4;
  const int64_t offset = p.num_keys - p.num_queries;
  pool.parallel_for(blocks * p.num_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> selected;  // [rows][key_end] flags of the block's rows, with indices
    int64_t selected_t0 = -1;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t head = item % p.num_heads, t0 = (item / p.num_heads) * 4;
      const int rows = int(std::min<int64_t>(4, p.num_queries - t0));
      if (p.indices && selected_t0 != t0) {
        const int64_t key_end = t0 + rows + offset;
        selected.assign(size_t(rows * key_end), 0);
        for (int r = 0; r < rows; ++r) {
          for (int64_t i = 0; i < p.topk; ++i) {
            const int32_t index = p.indices[(t0 + r) * p.topk + i];
            if (index >= 0 && index < key_end) selected[size_t(r * key_end + index)] = 1;
          }
        }
        selected_t0 = t0;
      }
      HWY_DYNAMIC_DISPATCH(AttendMhaBlock)
      (p, head, t0, rows, p.indices ? selected.data() : nullptr);
    }
  });
}

}  // namespace dsa
#endif  // HWY_ONCE

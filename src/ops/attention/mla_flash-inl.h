// Flash-attention building blocks (fp32, online softmax) shared by the absorbed-mode and
// MHA-mode kernels in mla_fast.cc. A block of query rows visits the keys chunk by chunk:
//   scores = q · kᵀ * scale  (DotBlock), then FlashChunk rescales the running output by
//   exp(old_max - new_max), adds Σ_j exp(s_j - new_max) v_j and updates the running sum.
// Widths (q·k dims, value dims) may be anything: whole vectors run on SIMD lanes and the last
// width % Lanes(DF) dims in scalar code, so V3.2's widths (multiples of 64) never reach the tails.
// Per-target include guard: foreach_target.h includes this once per SIMD target.
#if defined(DSA_OPS_MLA_FLASH_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef DSA_OPS_MLA_FLASH_INL_H_
#undef DSA_OPS_MLA_FLASH_INL_H_
#else
#define DSA_OPS_MLA_FLASH_INL_H_
#endif

#include <cmath>
#include <cstddef>
#include <limits>

#include "core/float_formats.h"
#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "ops/gemm/gemm_widen-inl.h"

HWY_BEFORE_NAMESPACE();
namespace dsa::HWY_NAMESPACE {

constexpr int kFlashChunk = 64;  // keys per chunk; a multiple of every f32 vector width
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Σ_{i in [begin, end)} a[i] b[i]: the dims after the last whole vector.
HWY_INLINE float TailDot(const float* a, const float* b, size_t begin, size_t end) {
  float sum = 0.0f;
  for (size_t i = begin; i < end; ++i) sum += a[i] * b[i];
  return sum;
}

// scores[r * kFlashChunk + c] = scale * (q_r · k_c) for kRows rows and kCols keys of `dim` values.
template <int kRows, int kCols>
HWY_INLINE void DotBlock(const float* q, size_t q_stride, const float* k, size_t k_stride,
                         size_t dim, float scale, float* scores) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const size_t vector_end = dim - dim % N;
  VF acc[kRows][kCols];
  for (int r = 0; r < kRows; ++r) {
    for (int c = 0; c < kCols; ++c) acc[r][c] = hn::Zero(d);
  }
  for (size_t i = 0; i < vector_end; i += N) {
    VF key[kCols];
    for (int c = 0; c < kCols; ++c) key[c] = hn::LoadU(d, k + c * k_stride + i);
    for (int r = 0; r < kRows; ++r) {
      const VF query = hn::LoadU(d, q + r * q_stride + i);
      for (int c = 0; c < kCols; ++c) acc[r][c] = hn::MulAdd(query, key[c], acc[r][c]);
    }
  }
  // Reduce every accumulator before touching the tail: a loop that mixes the two keeps GCC from
  // unrolling it, and the accumulators then live in memory (2x slower on V3.2's shapes).
  float sums[kRows][kCols];
  for (int r = 0; r < kRows; ++r) {
    for (int c = 0; c < kCols; ++c) sums[r][c] = hn::GetLane(hn::SumOfLanes(d, acc[r][c]));
  }
  if (vector_end != dim) {
    for (int r = 0; r < kRows; ++r) {
      for (int c = 0; c < kCols; ++c) {
        sums[r][c] += TailDot(q + r * q_stride, k + c * k_stride, vector_end, dim);
      }
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int c = 0; c < kCols; ++c) scores[r * kFlashChunk + c] = sums[r][c] * scale;
  }
}

// Scores of kRows query rows against `count` keys (count <= kFlashChunk).
template <int kRows>
HWY_INLINE void ScoreRows(const float* q, size_t q_stride, const float* k, size_t k_stride,
                          int count, size_t dim, float scale, float* scores) {
  int c = 0;
  for (; c + 4 <= count; c += 4) {
    DotBlock<kRows, 4>(q, q_stride, k + c * k_stride, k_stride, dim, scale, scores + c);
  }
  for (; c < count; ++c) {
    DotBlock<kRows, 1>(q, q_stride, k + c * k_stride, k_stride, dim, scale, scores + c);
  }
}

// Scores for `rows` query rows (any count) into scores[rows][kFlashChunk].
HWY_INLINE void ScoreChunk(const float* q, size_t q_stride, int rows, const float* k,
                           size_t k_stride, int count, size_t dim, float scale, float* scores) {
  int r = 0;
  for (; r + 4 <= rows; r += 4) {
    ScoreRows<4>(q + r * q_stride, q_stride, k, k_stride, count, dim, scale,
                 scores + r * kFlashChunk);
  }
  for (; r < rows; ++r) {
    ScoreRows<1>(q + r * q_stride, q_stride, k, k_stride, count, dim, scale,
                 scores + r * kFlashChunk);
  }
}

// out[r][x, x + kVecs N) += Σ_{j < count} p[r][j] * v_j[x, x + kVecs N) for kRows rows.
template <int kRows, int kVecs>
HWY_INLINE void AccumulateColumns(const float* p, const float* v, size_t v_stride, int count,
                                  size_t x, float* out, size_t out_stride) {
  const DF d;
  const size_t N = hn::Lanes(d);
  VF acc[kRows][kVecs];
  for (int r = 0; r < kRows; ++r) {
    for (int i = 0; i < kVecs; ++i) acc[r][i] = hn::LoadU(d, out + r * out_stride + x + i * N);
  }
  for (int j = 0; j < count; ++j) {
    const float* value = v + j * v_stride + x;
    VF val[kVecs];
    for (int i = 0; i < kVecs; ++i) val[i] = hn::LoadU(d, value + i * N);
    for (int r = 0; r < kRows; ++r) {
      const VF weight = hn::Set(d, p[r * kFlashChunk + j]);
      for (int i = 0; i < kVecs; ++i) acc[r][i] = hn::MulAdd(weight, val[i], acc[r][i]);
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int i = 0; i < kVecs; ++i) hn::StoreU(acc[r][i], d, out + r * out_stride + x + i * N);
  }
}

// out[r] += Σ_{j < count} p[r][j] * v_j for kRows rows of `dim` values: 4 vectors at a time, then
// single vectors, then the last dim % Lanes(DF) values in scalar code.
template <int kRows>
HWY_INLINE void AccumulateValues(const float* p, const float* v, size_t v_stride, int count,
                                 size_t dim, float* out, size_t out_stride) {
  const size_t N = hn::Lanes(DF());
  size_t x = 0;
  for (; x + 4 * N <= dim; x += 4 * N) {
    AccumulateColumns<kRows, 4>(p, v, v_stride, count, x, out, out_stride);
  }
  for (; x + N <= dim; x += N)
    AccumulateColumns<kRows, 1>(p, v, v_stride, count, x, out, out_stride);
  for (; x < dim; ++x) {
    for (int r = 0; r < kRows; ++r) {
      float sum = out[r * out_stride + x];
      for (int j = 0; j < count; ++j) sum += p[r * kFlashChunk + j] * v[j * v_stride + x];
      out[r * out_stride + x] = sum;
    }
  }
}

// Folds one chunk into the running state of `rows` rows. scores[r][j] for j < count are the
// scaled scores (kNegInf = masked); they are overwritten with the unnormalized probabilities.
HWY_INLINE void FlashChunk(float* scores, int rows, int count, const float* v, size_t v_stride,
                           size_t dim, float* out, size_t out_stride, float* row_max,
                           float* row_sum) {
  const DF d;
  const size_t N = hn::Lanes(d);
  for (int r = 0; r < rows; ++r) {
    float* s = scores + r * kFlashChunk;
    for (int j = count; j < kFlashChunk; ++j) s[j] = kNegInf;  // padding lanes
    VF chunk_max = hn::Set(d, kNegInf);
    for (int j = 0; j < kFlashChunk; j += int(N))
      chunk_max = hn::Max(chunk_max, hn::LoadU(d, s + j));
    const float new_max = std::max(row_max[r], hn::GetLane(hn::MaxOfLanes(d, chunk_max)));
    if (new_max == kNegInf) {  // nothing valid for this row yet: all probabilities are 0
      for (int j = 0; j < kFlashChunk; ++j) s[j] = 0.0f;
      continue;
    }
    const float correction = std::exp(row_max[r] - new_max);  // exp(-inf) = 0 on the first chunk
    const VF shift = hn::Set(d, new_max);
    const VF floor = hn::Set(d, -104.0f);  // below it exp underflows to 0 (and -inf stays finite)
    VF sum = hn::Zero(d);
    for (int j = 0; j < kFlashChunk; j += int(N)) {
      const VF e = hn::Exp(d, hn::Max(hn::Sub(hn::LoadU(d, s + j), shift), floor));
      hn::StoreU(e, d, s + j);
      sum = hn::Add(sum, e);
    }
    row_sum[r] = row_sum[r] * correction + hn::GetLane(hn::SumOfLanes(d, sum));
    row_max[r] = new_max;
    if (correction != 1.0f) {
      const VF factor = hn::Set(d, correction);
      float* o = out + r * out_stride;
      size_t x = 0;
      for (; x + N <= dim; x += N) hn::StoreU(hn::Mul(hn::LoadU(d, o + x), factor), d, o + x);
      for (; x < dim; ++x) o[x] *= correction;
    }
  }
  int r = 0;
  for (; r + 4 <= rows; r += 4) {
    AccumulateValues<4>(scores + r * kFlashChunk, v, v_stride, count, dim, out + r * out_stride,
                        out_stride);
  }
  for (; r < rows; ++r) {
    AccumulateValues<1>(scores + r * kFlashChunk, v, v_stride, count, dim, out + r * out_stride,
                        out_stride);
  }
}

// out[r] = bf16(out[r] / row_sum[r]), lse[r] = row_max + log(row_sum); a row that saw no valid
// key gets 0 and +inf. `lse` may be null (MHA mode has none).
HWY_INLINE void FlashFinish(int rows, size_t dim, float* out, size_t out_stride,
                            const float* row_max, const float* row_sum, float* lse) {
  const DF d;
  const size_t N = hn::Lanes(d);
  for (int r = 0; r < rows; ++r) {
    const bool empty = row_sum[r] == 0.0f;
    const float inverse = empty ? 0.0f : 1.0f / row_sum[r];
    const VF factor = hn::Set(d, inverse);
    float* o = out + r * out_stride;
    size_t x = 0;
    for (; x + N <= dim; x += N) {
      hn::StoreU(RoundToBf16(d, hn::Mul(hn::LoadU(d, o + x), factor)), d, o + x);
    }
    for (; x < dim; ++x) o[x] = round_to_bf16(o[x] * inverse);
    if (lse) {
      lse[r] = empty ? std::numeric_limits<float>::infinity() : row_max[r] + std::log(row_sum[r]);
    }
  }
}

}  // namespace dsa::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // DSA_OPS_MLA_FLASH_INL_H_

// The building blocks of the training MHA kernels (mha_train_fast.cc): small matrix products
// with outer-product kernels, gathers, dot products, and the per-call transposed operands.
// Per-target include guard: foreach_target.h includes this once per SIMD target.
#if defined(DSA_OPS_ATTENTION_MHA_TRAIN_BLOCKS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef DSA_OPS_ATTENTION_MHA_TRAIN_BLOCKS_INL_H_
#undef DSA_OPS_ATTENTION_MHA_TRAIN_BLOCKS_INL_H_
#else
#define DSA_OPS_ATTENTION_MHA_TRAIN_BLOCKS_INL_H_
#endif

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/thread_pool.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace dsa {
namespace HWY_NAMESPACE {
namespace mha_train {

namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

constexpr int kBlock = 64;  // query rows and keys per tile; a multiple of every vector width
// Vectors per row in a matrix-product tile: 4 x 4 accumulators need 32 registers (AVX-512),
// 4 x 2 fit in 16.
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
constexpr int kTileVecs = 4;
#else
constexpr int kTileVecs = 2;
#endif

// The right operand of a matrix product, row k at b[k]: rows `stride` apart, or gathered.
struct StridedRows {
  const float* base;
  size_t stride;
  const float* operator[](int k) const { return base + size_t(k) * stride; }
};
struct GatheredRows {
  const float* const* rows;
  const float* operator[](int k) const { return rows[k]; }
};

// c[r][x, x + kVecs N) (+)= Σ_k a[r][k] b[k][x, x + kVecs N) for kRows rows: outer products,
// so the inner loop is kRows x kVecs independent multiply-adds with no horizontal sums.
template <int kRows, int kVecs, class B>
HWY_INLINE void MatMulTile(const float* a, size_t lda, const B& b, size_t x, int depth, float* c,
                           size_t ldc, bool accumulate) {
  const DF d;
  const size_t N = hn::Lanes(d);
  VF acc[kRows][kVecs];
  for (int r = 0; r < kRows; ++r) {
    for (int v = 0; v < kVecs; ++v) {
      acc[r][v] = accumulate ? hn::LoadU(d, c + r * ldc + x + v * N) : hn::Zero(d);
    }
  }
  for (int k = 0; k < depth; ++k) {
    const float* row = b[k] + x;
    VF bv[kVecs];
    for (int v = 0; v < kVecs; ++v) bv[v] = hn::LoadU(d, row + v * N);
    for (int r = 0; r < kRows; ++r) {
      const VF av = hn::Set(d, a[r * lda + k]);
      for (int v = 0; v < kVecs; ++v) acc[r][v] = hn::MulAdd(av, bv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int v = 0; v < kVecs; ++v) hn::StoreU(acc[r][v], d, c + r * ldc + x + v * N);
  }
}

template <int kRows, class B>
HWY_INLINE void MatMulRows(const float* a, size_t lda, const B& b, float* c, size_t ldc, size_t n,
                           int depth, bool accumulate) {
  const size_t N = hn::Lanes(DF());
  size_t x = 0;
  for (; x + kTileVecs * N <= n; x += kTileVecs * N) {
    MatMulTile<kRows, kTileVecs>(a, lda, b, x, depth, c, ldc, accumulate);
  }
  for (; x + N <= n; x += N) MatMulTile<kRows, 1>(a, lda, b, x, depth, c, ldc, accumulate);
  for (; x < n; ++x) {  // the last n % N columns
    for (int r = 0; r < kRows; ++r) {
      float sum = accumulate ? c[r * ldc + x] : 0.0f;
      for (int k = 0; k < depth; ++k) sum += a[r * lda + k] * b[k][x];
      c[r * ldc + x] = sum;
    }
  }
}

// c [m, n] (+)= a [m, depth] · b [depth, n]; a and c row-major with row strides lda and ldc.
template <class B>
void MatMul(const float* a, size_t lda, const B& b, float* c, size_t ldc, int m, size_t n,
            int depth, bool accumulate) {
  int r = 0;
  for (; r + 4 <= m; r += 4) {
    MatMulRows<4>(a + r * lda, lda, b, c + r * ldc, ldc, n, depth, accumulate);
  }
  for (; r < m; ++r) MatMulRows<1>(a + r * lda, lda, b, c + r * ldc, ldc, n, depth, accumulate);
}

// dst [dim, kBlock] = the `count` rows' transpose, columns >= count zeroed.
void GatherTranspose(const float* const* rows, int count, size_t dim, float* dst) {
  for (int r = 0; r < count; ++r) {
    for (size_t i = 0; i < dim; ++i) dst[i * kBlock + r] = rows[r][i];
  }
  for (size_t i = 0; i < dim; ++i)
    std::fill(dst + i * kBlock + count, dst + (i + 1) * kBlock, 0.0f);
}

// out[j] = x · rows[j] for kRows rows of `dim` values.
template <int kRows>
HWY_INLINE void DotRows(const float* x, const float* const* rows, size_t dim, float* out) {
  const DF d;
  const size_t N = hn::Lanes(d);
  VF acc[kRows];
  for (int j = 0; j < kRows; ++j) acc[j] = hn::Zero(d);
  size_t i = 0;
  for (; i + N <= dim; i += N) {
    const VF xv = hn::LoadU(d, x + i);
    for (int j = 0; j < kRows; ++j) acc[j] = hn::MulAdd(xv, hn::LoadU(d, rows[j] + i), acc[j]);
  }
  for (int j = 0; j < kRows; ++j) {
    float sum = hn::GetLane(hn::SumOfLanes(d, acc[j]));
    for (size_t t = i; t < dim; ++t) sum += x[t] * rows[j][t];
    out[j] = sum;
  }
}

// out[j] = x · rows[j] for j < count.
void DotMany(const float* x, const float* const* rows, int count, size_t dim, float* out) {
  int j = 0;
  for (; j + 4 <= count; j += 4) DotRows<4>(x, rows + j, dim, out + j);
  for (; j < count; ++j) DotRows<1>(x, rows + j, dim, out + j);
}

// acc += Σ_{j < count} w[j] rows[j], added in order of j (4 rows per pass over acc).
void AccumulateScaled(const float* w, const float* const* rows, int count, size_t dim, float* acc) {
  const DF d;
  const size_t N = hn::Lanes(d);
  int j = 0;
  for (; j + 4 <= count; j += 4) {
    const VF w0 = hn::Set(d, w[j]), w1 = hn::Set(d, w[j + 1]);
    const VF w2 = hn::Set(d, w[j + 2]), w3 = hn::Set(d, w[j + 3]);
    size_t i = 0;
    for (; i + N <= dim; i += N) {
      VF a = hn::LoadU(d, acc + i);
      a = hn::MulAdd(w0, hn::LoadU(d, rows[j] + i), a);
      a = hn::MulAdd(w1, hn::LoadU(d, rows[j + 1] + i), a);
      a = hn::MulAdd(w2, hn::LoadU(d, rows[j + 2] + i), a);
      a = hn::MulAdd(w3, hn::LoadU(d, rows[j + 3] + i), a);
      hn::StoreU(a, d, acc + i);
    }
    for (; i < dim; ++i) {
      acc[i] += w[j] * rows[j][i];
      acc[i] += w[j + 1] * rows[j + 1][i];
      acc[i] += w[j + 2] * rows[j + 2][i];
      acc[i] += w[j + 3] * rows[j + 3][i];
    }
  }
  for (; j < count; ++j) {
    const VF wj = hn::Set(d, w[j]);
    size_t i = 0;
    for (; i + N <= dim; i += N) {
      hn::StoreU(hn::MulAdd(wj, hn::LoadU(d, rows[j] + i), hn::LoadU(d, acc + i)), d, acc + i);
    }
    for (; i < dim; ++i) acc[i] += w[j] * rows[j][i];
  }
}

// dst[i] = factor * src[i]
void ScaleRow(const float* src, float factor, size_t dim, float* dst) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const VF f = hn::Set(d, factor);
  size_t i = 0;
  for (; i + N <= dim; i += N) hn::StoreU(hn::Mul(f, hn::LoadU(d, src + i)), d, dst + i);
  for (; i < dim; ++i) dst[i] = factor * src[i];
}

// Shapes and strides of one call.
struct Layout {
  int64_t T, H;
  size_t Dqk, Dv;
  size_t q_stride, v_stride;  // between tokens: H Dqk and H Dv
  explicit Layout(const MhaTrainParams& p)
      : T(p.tokens),
        H(p.heads),
        Dqk(size_t(p.qk_dim)),
        Dv(size_t(p.v_dim)),
        q_stride(size_t(p.heads * p.qk_dim)),
        v_stride(size_t(p.heads * p.v_dim)) {}
  size_t qk_row(int64_t t, int64_t h) const { return size_t(t * H + h) * Dqk; }
  size_t v_row(int64_t t, int64_t h) const { return size_t(t * H + h) * Dv; }
};

// The dense path's right-hand operands transposed once per call, [H][dim][ld] with ld >= T
// rounded up to kBlock and zeros beyond T: a tile then reads kBlock consecutive columns of its
// head instead of gathering and transposing its block again for every block that meets it (the
// transposes cost about half as much as the tile products at these widths).
struct Transposed {
  std::vector<float> data;
  size_t dim = 0, ld = 0;
  const float* head(int64_t h) const { return data.data() + size_t(h) * dim * ld; }
};

// x [T, H, dim] (row stride H·dim) transposed per head.
Transposed TransposeHeads(const float* x, const Layout& L, size_t dim, ThreadPool& pool) {
  Transposed out;
  out.dim = dim;
  // 16 floats past a multiple of kBlock: a power-of-two row stride would map the rows a tile
  // reads (and the transpose writes) onto a few L1 sets (measured: the transpose alone took 12%
  // of a training step with ld = 512).
  out.ld = size_t((L.T + kBlock - 1) / kBlock * kBlock) + 16;
  out.data.assign(size_t(L.H) * dim * out.ld, 0.0f);
  const size_t stride = size_t(L.H) * dim;
  const int64_t blocks = (L.T + kBlock - 1) / kBlock;
  pool.parallel_for(L.H * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t h = i / blocks, t0 = (i % blocks) * kBlock;
      const int64_t t1 = std::min<int64_t>(L.T, t0 + kBlock);
      float* dst = out.data.data() + size_t(h) * dim * out.ld;
      for (int64_t t = t0; t < t1; ++t) {
        const float* src = x + size_t(t) * stride + size_t(h) * dim;
        for (size_t j = 0; j < dim; ++j) dst[j * out.ld + size_t(t)] = src[j];
      }
    }
  });
  return out;
}

}  // namespace mha_train
}  // namespace HWY_NAMESPACE
}  // namespace dsa
HWY_AFTER_NAMESPACE();

#endif  // DSA_OPS_ATTENTION_MHA_TRAIN_BLOCKS_INL_H_

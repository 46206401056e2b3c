// Fast GEMMs. Two kernels, chosen per case by the measurements in docs/cpu-kernels.md:
//  * Highway dot kernel (runtime dispatch): up to 8 activation rows share each weight load, the
//    weight is widened from its storage type in registers (bf16, fp8 e4m3 with the block scales
//    applied per 128-wide K block), threads split N. Wins while the weight stream is the cost
//    (decode, small M).
//  * sgemm (ops/gemm/sgemm.h: our AVX-512 kernel, else single-threaded OpenBLAS) on fp32
//    copies, in fixed blocks of rows on the pool: F32 weights directly; BF16 and FP8 weights are
//    widened to fp32 tile by tile (FP8: W * S and the dequantized act_quant codes x_q * s_x, so
//    each term is the same real number as in the block formula; only the fp32 summation order
//    differs). Wins for prefill-sized M where its cache blocking pays off.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/gemm/gemm_fast.cc"
#include <algorithm>
#include <vector>

#include "core/float_formats.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "ops/gemm/blas_blocks.h"
#include "ops/gemm/gemm.h"
#include "ops/gemm/gemm_widen-inl.h"

#ifndef DSA_GEMM_FAST_TILES
#define DSA_GEMM_FAST_TILES
namespace dsa {
// The dot kernel's tile: activation rows sharing each weight load (their accumulators and
// partial sums fill 16 of the 32 AVX-512 registers), and weight rows a thread takes at a time
// (for V3.2's widest K, 7168 FP8 codes a row, 16 rows are 112 KiB: the L2, shared by the rows).
inline constexpr int kDotRows = 8;
inline constexpr int64_t kDotWeightTile = 16;
}  // namespace dsa
#endif

HWY_BEFORE_NAMESPACE();
namespace dsa::HWY_NAMESPACE {

// Weight element loads by storage type.
struct F32Weight {
  using T = float;
  static VF Load(DF d, const float* p) { return hn::LoadU(d, p); }
  static float Scalar(const float* p) { return *p; }
};
struct Bf16Weight {
  using T = uint16_t;
  static VF Load(DF d, const uint16_t* p) { return LoadBf16(d, p); }
  static float Scalar(const uint16_t* p) { return bf16_to_float(bf16{*p}); }
};
struct Fp8Weight {
  using T = uint8_t;
  static VF Load(DF d, const uint8_t* p) { return LoadFp8(d, p); }
  static float Scalar(const uint8_t* p) { return fp8_to_float(fp8_e4m3{*p}); }
};

// Σ_k x[r][k] * w[k] over [begin, end) into the lane accumulators `acc` (and the scalar tail).
template <class W, int kRows>
HWY_INLINE void DotRange(const float* const* x, const typename W::T* w, int64_t begin, int64_t end,
                         VF* acc, float* tail) {
  const DF d;
  const int64_t N = int64_t(hn::Lanes(d));
  int64_t k = begin;
  for (; k + N <= end; k += N) {
    const VF weight = W::Load(d, w + k);
    for (int r = 0; r < kRows; ++r) acc[r] = hn::MulAdd(hn::LoadU(d, x[r] + k), weight, acc[r]);
  }
  for (; k < end; ++k) {
    const float weight = W::Scalar(w + k);
    for (int r = 0; r < kRows; ++r) tail[r] += x[r][k] * weight;
  }
}

// y[r][n] for kRows rows and output columns [n0, n1). F32/BF16: plain dot products.
template <class W, int kRows>
void DotRows(const float* const* x, const typename W::T* weight, int64_t k, int64_t n0, int64_t n1,
             bool round_bf16, float* const* y) {
  const DF d;
  for (int64_t n = n0; n < n1; ++n) {
    VF acc[kRows];
    float tail[kRows] = {};
    for (int r = 0; r < kRows; ++r) acc[r] = hn::Zero(d);
    DotRange<W, kRows>(x, weight + n * k, 0, k, acc, tail);
    for (int r = 0; r < kRows; ++r) {
      const float sum = hn::GetLane(hn::SumOfLanes(d, acc[r])) + tail[r];
      y[r][n] = round_bf16 ? round_to_bf16(sum) : sum;
    }
  }
}

// FP8: x holds the act_quant codes (as floats), scales[r] their per-block scales. Per 128-wide
// K block the code products are summed, then scaled by s_x * S (kept per lane: the lane sums of
// acc_blk * scale add up to acc of the block formula up to fp32 summation order).
template <int kRows>
void Fp8DotRows(const float* const* x, const float* const* scales, const uint8_t* weight,
                const float* weight_scale, int64_t k, int64_t n0, int64_t n1, float* const* y) {
  const DF d;
  const int64_t blocks = (k + kFp8BlockSize - 1) / kFp8BlockSize;
  for (int64_t n = n0; n < n1; ++n) {
    const float* w_scales = weight_scale + (n / kFp8BlockSize) * blocks;
    VF acc[kRows];
    float acc_tail[kRows] = {};
    for (int r = 0; r < kRows; ++r) acc[r] = hn::Zero(d);
    for (int64_t b = 0; b < blocks; ++b) {
      VF block[kRows];
      float tail[kRows] = {};
      for (int r = 0; r < kRows; ++r) block[r] = hn::Zero(d);
      DotRange<Fp8Weight, kRows>(x, weight + n * k, b * kFp8BlockSize,
                                 std::min(k, (b + 1) * kFp8BlockSize), block, tail);
      for (int r = 0; r < kRows; ++r) {
        const float scale = scales[r][b] * w_scales[b];
        acc[r] = hn::MulAdd(block[r], hn::Set(d, scale), acc[r]);
        acc_tail[r] += tail[r] * scale;
      }
    }
    for (int r = 0; r < kRows; ++r) {
      y[r][n] = round_to_bf16(hn::GetLane(hn::SumOfLanes(d, acc[r])) + acc_tail[r]);
    }
  }
}

// kRows rows of y for output columns [n0, n1), by weight type.
template <int kRows>
void DotRowsOfType(const GemmParams& p, const float* const* x, const float* const* scales,
                   int64_t n0, int64_t n1, float* const* y) {
  if (p.weight_dtype == DType::F32) {
    DotRows<F32Weight, kRows>(x, static_cast<const float*>(p.weight), p.k, n0, n1,
                              p.round_output_to_bf16, y);
  } else if (p.weight_dtype == DType::BF16) {
    DotRows<Bf16Weight, kRows>(x, static_cast<const uint16_t*>(p.weight), p.k, n0, n1,
                               p.round_output_to_bf16, y);
  } else {
    Fp8DotRows<kRows>(x, scales, static_cast<const uint8_t*>(p.weight), p.weight_scale, p.k, n0, n1,
                      y);
  }
}

// Rows [m0, m0 + rows) (rows <= kDotRows) of y for output columns [n0, n1). `x` is the
// activation matrix, or for FP8 the act_quant codes with `x_scales` [M, blocks].
void DotKernel(const GemmParams& p, const float* x, const float* x_scales, int64_t m0, int rows,
               int64_t n0, int64_t n1) {
  const int64_t blocks = (p.k + kFp8BlockSize - 1) / kFp8BlockSize;
  const float* x_rows[kDotRows];
  const float* scale_rows[kDotRows];
  float* y_rows[kDotRows];
  for (int r = 0; r < rows; ++r) {
    x_rows[r] = x + (m0 + r) * p.k;
    scale_rows[r] = x_scales ? x_scales + (m0 + r) * blocks : nullptr;
    y_rows[r] = p.y + (m0 + r) * p.n;
  }
  switch (rows) {
    case 1:
      return DotRowsOfType<1>(p, x_rows, scale_rows, n0, n1, y_rows);
    case 2:
      return DotRowsOfType<2>(p, x_rows, scale_rows, n0, n1, y_rows);
    case 3:
      return DotRowsOfType<3>(p, x_rows, scale_rows, n0, n1, y_rows);
    case 4:
      return DotRowsOfType<4>(p, x_rows, scale_rows, n0, n1, y_rows);
    case 5:
      return DotRowsOfType<5>(p, x_rows, scale_rows, n0, n1, y_rows);
    case 6:
      return DotRowsOfType<6>(p, x_rows, scale_rows, n0, n1, y_rows);
    case 7:
      return DotRowsOfType<7>(p, x_rows, scale_rows, n0, n1, y_rows);
    default:
      return DotRowsOfType<8>(p, x_rows, scale_rows, n0, n1, y_rows);
  }
}

// Widens weight rows [n0, n1) to fp32 (FP8: times the block scale) into out [n1 - n0, K].
void WidenWeightRows(const GemmParams& p, int64_t n0, int64_t n1, float* out) {
  const DF d;
  const int64_t N = int64_t(hn::Lanes(d));
  const int64_t blocks = (p.k + kFp8BlockSize - 1) / kFp8BlockSize;
  for (int64_t n = n0; n < n1; ++n) {
    float* row = out + (n - n0) * p.k;
    int64_t k = 0;
    if (p.weight_dtype == DType::BF16) {
      const uint16_t* w = static_cast<const uint16_t*>(p.weight) + n * p.k;
      for (; k + N <= p.k; k += N) hn::StoreU(LoadBf16(d, w + k), d, row + k);
      for (; k < p.k; ++k) row[k] = Bf16Weight::Scalar(w + k);
    } else {
      const uint8_t* w = static_cast<const uint8_t*>(p.weight) + n * p.k;
      const float* scales = p.weight_scale + (n / kFp8BlockSize) * blocks;
      for (; k + N <= p.k; k += N) {
        hn::StoreU(hn::Mul(LoadFp8(d, w + k), hn::Set(d, scales[k / kFp8BlockSize])), d, row + k);
      }
      for (; k < p.k; ++k) row[k] = Fp8Weight::Scalar(w + k) * scales[k / kFp8BlockSize];
    }
  }
}

}  // namespace dsa::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace dsa {

HWY_EXPORT(DotKernel);
HWY_EXPORT(WidenWeightRows);

namespace {

// From the measurements (docs/cpu-kernels.md): OpenBLAS wins from this many rows on. Widening
// bf16 / FP8 weights to fp32 costs a pass over them, so those switch later than F32 weights.
constexpr int64_t kBlasMinRowsF32 = 8;
constexpr int64_t kBlasMinRowsWidened = 32;
constexpr int64_t kBlasTileRows = 256;  // weight rows widened per sgemm call
constexpr int64_t kBlasRowBlock = 256;  // activation rows per sgemm call

// The activations the kernels multiply: x itself, or for FP8 the act_quant codes (dot kernel)
// or their dequantized values x_q * s_x (sgemm, exact for power-of-two scales).
struct PreparedActivations {
  std::vector<float> values;  // [M, K]
  std::vector<float> scales;  // [M, blocks], FP8 dot kernel only
};

PreparedActivations quantize_activations(const GemmParams& p, bool dequantize, ThreadPool& pool) {
  const int64_t blocks = weight_scale_cols(p.k);
  PreparedActivations a{std::vector<float>(size_t(p.m * p.k)),
                        std::vector<float>(size_t(p.m * blocks))};
  act_quant_rows(p.x, p.m, p.k, p.act_scales, a.values.data(), a.scales.data(), pool);
  if (dequantize) {
    pool.parallel_for(p.m, 1, [&](int64_t begin, int64_t end) {
      for (int64_t m = begin; m < end; ++m) {
        float* codes = a.values.data() + m * p.k;
        const float* scales = a.scales.data() + m * blocks;
        for (int64_t k = 0; k < p.k; ++k) codes[k] *= scales[k / kFp8BlockSize];
      }
    });
  }
  return a;
}

void gemm_dot_kernel(const GemmParams& p, ThreadPool& pool) {
  PreparedActivations fp8;
  const float* x = p.x;
  const float* x_scales = nullptr;
  if (p.weight_dtype == DType::F8_E4M3) {
    fp8 = quantize_activations(p, false, pool);
    x = fp8.values.data();
    x_scales = fp8.scales.data();
  }
  // Threads split N. Each thread takes its weight rows a tile at a time, small enough to stay
  // in L1 while every group of kDotRows activation rows passes over it, so a batch reads (and
  // for FP8 decodes) each weight from memory once. A row's sums do not depend on its group or
  // tile, so results are the same for any M.
  pool.parallel_for(p.n, kDotWeightTile, [&](int64_t n0, int64_t n1) {
    for (int64_t t0 = n0; t0 < n1; t0 += kDotWeightTile) {
      const int64_t t1 = std::min(n1, t0 + kDotWeightTile);
      for (int64_t m = 0; m < p.m; m += kDotRows) {
        HWY_DYNAMIC_DISPATCH(DotKernel)
        (p, x, x_scales, m, int(std::min<int64_t>(kDotRows, p.m - m)), t0, t1);
      }
    }
  });
}

void gemm_blas(const GemmParams& p, ThreadPool& pool) {
  PreparedActivations fp8;
  const float* x = p.x;
  if (p.weight_dtype == DType::F8_E4M3) {
    fp8 = quantize_activations(p, true, pool);
    x = fp8.values.data();
  }
  // Blocks of kBlasRowBlock activation rows on the pool's threads, each one single-threaded
  // sgemm: the blocks follow the shapes only, so the logits do not depend on the thread count
  // (OpenBLAS's own threads would split, and round, by their number).
  const SingleThreadedBlas single;
  if (p.weight_dtype == DType::F32) {
    for_blocks(pool, p.m, kBlasRowBlock, [&](int64_t m0, int64_t m1) {
      sgemm(false, true, m1 - m0, p.n, p.k, 1.0f, x + m0 * p.k, p.k,
            static_cast<const float*>(p.weight), p.k, 0.0f, p.y + m0 * p.n, p.n);
    });
  } else {
    std::vector<float> tile(size_t(std::min(p.n, kBlasTileRows) * p.k));
    for (int64_t n0 = 0; n0 < p.n; n0 += kBlasTileRows) {
      const int64_t rows = std::min(kBlasTileRows, p.n - n0);
      pool.parallel_for(rows, 8, [&](int64_t begin, int64_t end) {
        HWY_DYNAMIC_DISPATCH(WidenWeightRows)(p, n0 + begin, n0 + end, tile.data() + begin * p.k);
      });
      for_blocks(pool, p.m, kBlasRowBlock, [&](int64_t m0, int64_t m1) {
        sgemm(false, true, m1 - m0, rows, p.k, 1.0f, x + m0 * p.k, p.k, tile.data(), p.k, 0.0f,
              p.y + m0 * p.n + n0, p.n);
      });
    }
  }
  if (p.round_output_to_bf16) {
    pool.parallel_for(p.m * p.n, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) p.y[i] = round_to_bf16(p.y[i]);
    });
  }
}

}  // namespace

void gemm(const GemmParams& p, ThreadPool& pool) {
  validate(p);
  if (p.m == 0 || p.n == 0) return;
  const int64_t blas_min_rows =
      p.weight_dtype == DType::F32 ? kBlasMinRowsF32 : kBlasMinRowsWidened;
  const bool blas =
      p.kernel == GemmKernel::kBlas || (p.kernel == GemmKernel::kAuto && p.m >= blas_min_rows);
  if (blas && p.k > 0) {
    gemm_blas(p, pool);
  } else {
    gemm_dot_kernel(p, pool);
  }
}

}  // namespace dsa
#endif  // HWY_ONCE

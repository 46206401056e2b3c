#include "core/fp8_quant.h"

#include <algorithm>
#include <bit>
#include <cmath>

#include "core/error.h"

namespace dsa {
namespace {

// 2^ceil(log2(x)) for a positive normal float, by exponent bits (DeepSeek's fast_log2_ceil and
// fast_pow2): the exponent, plus one if any mantissa bit is set.
float pow2_ceil(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const int exponent = int((bits >> 23) & 0xFF) - 127 + ((bits & 0x7FFFFFu) != 0 ? 1 : 0);
  return std::bit_cast<float>(uint32_t(exponent + 127) << 23);
}

}  // namespace

float act_quant_scale(float amax, ScaleFormat format) {
  // fl32(1/448) times amax, not amax / 448: the two can differ in the last bit.
  const float scale = std::max(amax, kActQuantAmaxFloor) * (1.0f / kFp8E4M3Max);
  return format == ScaleFormat::kUe8m0 ? pow2_ceil(scale) : scale;
}

void act_quant_row(std::span<const float> x, ScaleFormat format, std::span<fp8_e4m3> out,
                   std::span<float> scales) {
  DSA_CHECK(x.size() % kFp8BlockSize == 0, "act_quant needs a multiple of 128, got {}", x.size());
  DSA_CHECK(out.size() == x.size() && scales.size() == x.size() / kFp8BlockSize);
  for (size_t group = 0; group < scales.size(); ++group) {
    const float* in = x.data() + group * kFp8BlockSize;
    float amax = 0.0f;
    for (int i = 0; i < kFp8BlockSize; ++i) amax = std::max(amax, std::fabs(in[i]));
    const float scale = act_quant_scale(amax, format);
    scales[group] = scale;
    for (int i = 0; i < kFp8BlockSize; ++i) {
      out[group * kFp8BlockSize + i] =
          float_to_fp8(std::clamp(in[i] / scale, -kFp8E4M3Max, kFp8E4M3Max));
    }
  }
}

void act_quant_round_trip(std::span<const float> x, ScaleFormat format, std::span<float> out) {
  DSA_CHECK(out.size() == x.size());
  fp8_e4m3 codes[kFp8BlockSize];
  float scale;
  for (size_t offset = 0; offset < x.size(); offset += kFp8BlockSize) {
    act_quant_row(x.subspan(offset, kFp8BlockSize), format, codes, std::span<float>(&scale, 1));
    for (int i = 0; i < kFp8BlockSize; ++i) out[offset + i] = fp8_to_float(codes[i]) * scale;
  }
}

void dequantize_weight_fp8(const fp8_e4m3* weight, const float* scale_inv, int64_t rows,
                           int64_t cols, float* out) {
  const int64_t scale_cols = weight_scale_cols(cols);
  for (int64_t i = 0; i < rows; ++i) {
    const float* scale_row = scale_inv + (i / kFp8BlockSize) * scale_cols;
    for (int64_t j = 0; j < cols; ++j) {
      out[i * cols + j] = fp8_to_float(weight[i * cols + j]) * scale_row[j / kFp8BlockSize];
    }
  }
}

void quantize_weight_fp8(const float* weight, int64_t rows, int64_t cols, fp8_e4m3* out,
                         float* scale_inv) {
  const int64_t scale_cols = weight_scale_cols(cols);
  for (int64_t block_row = 0; block_row < weight_scale_rows(rows); ++block_row) {
    const int64_t row_end = std::min(rows, (block_row + 1) * kFp8BlockSize);
    for (int64_t block_col = 0; block_col < scale_cols; ++block_col) {
      const int64_t col_begin = block_col * kFp8BlockSize;
      const int64_t col_end = std::min(cols, col_begin + kFp8BlockSize);
      float amax = 0.0f;
      for (int64_t i = block_row * kFp8BlockSize; i < row_end; ++i) {
        for (int64_t j = col_begin; j < col_end; ++j) {
          amax = std::max(amax, std::fabs(weight[i * cols + j]));
        }
      }
      const float scale = amax > 0.0f ? amax / kFp8E4M3Max : 1.0f;
      scale_inv[block_row * scale_cols + block_col] = scale;
      for (int64_t i = block_row * kFp8BlockSize; i < row_end; ++i) {
        for (int64_t j = col_begin; j < col_end; ++j) {
          out[i * cols + j] =
              float_to_fp8(std::clamp(weight[i * cols + j] / scale, -kFp8E4M3Max, kFp8E4M3Max));
        }
      }
    }
  }
}

void quantize_weight_fp8(const float* weight, int64_t rows, int64_t cols, fp8_e4m3* out,
                         float* scale_inv, ThreadPool& pool) {
  const int64_t scale_cols = weight_scale_cols(cols);
  pool.parallel_for(weight_scale_rows(rows), 1, [&](int64_t begin, int64_t end) {
    for (int64_t band = begin; band < end; ++band) {
      const int64_t row0 = band * kFp8BlockSize;
      const int64_t band_rows = std::min<int64_t>(kFp8BlockSize, rows - row0);
      quantize_weight_fp8(weight + row0 * cols, band_rows, cols, out + row0 * cols,
                          scale_inv + band * scale_cols);
    }
  });
}

}  // namespace dsa

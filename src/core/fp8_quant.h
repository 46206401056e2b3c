// FP8 block quantization as DeepSeek does it (dsa-reference.md §2.2-§2.3).
//
// Activations (act_quant): one fp32 scale per 128 consecutive elements of a row,
//   amax = max(max|x|, 1e-4);  s = amax * fl32(1/448), rounded UP to a power of two when the scale
//   format is ue8m0 (the V3.2 config); y = fp8(clamp(x / s, ±448)).
// Weights: W_real[i, j] = fp8(W[i, j]) * S[i / 128, j / 128], with S of shape
//   [ceil(rows / 128), ceil(cols / 128)] (`weight_scale_inv` in Hugging Face checkpoints).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "core/float_formats.h"
#include "core/thread_pool.h"

namespace dsa {

constexpr int kFp8BlockSize = 128;
constexpr float kActQuantAmaxFloor = 1e-4f;

enum class ScaleFormat {
  kPlain,  // s = amax / 448 (multiplied by fl32(1/448), as DeepSeek's kernel does)
  kUe8m0,  // s rounded up to a power of two, so x / s and y * s are exact
};

// The scale of one 128-element group whose largest magnitude is `amax`.
float act_quant_scale(float amax, ScaleFormat format);

// Quantizes one row of n floats (n a multiple of 128; inputs are usually bf16 values held in
// float). Writes n codes to `out` and n / 128 scales to `scales`.
void act_quant_row(std::span<const float> x, ScaleFormat format, std::span<fp8_e4m3> out,
                   std::span<float> scales);

// Quantize-then-dequantize of one row: what a simulated FP8 cache holds (dsa-reference §5.3).
void act_quant_round_trip(std::span<const float> x, ScaleFormat format, std::span<float> out);

// Shape of the block-scale tensor of a [rows, cols] weight.
inline int64_t weight_scale_rows(int64_t rows) {
  return (rows + kFp8BlockSize - 1) / kFp8BlockSize;
}
inline int64_t weight_scale_cols(int64_t cols) {
  return (cols + kFp8BlockSize - 1) / kFp8BlockSize;
}

// W_real = fp8(W) * S per 128x128 block. `weight` is [rows, cols] row-major, `scale_inv` is
// [ceil(rows/128), ceil(cols/128)], `out` is [rows, cols]. Any shape is allowed: edge blocks
// are simply smaller.
void dequantize_weight_fp8(const fp8_e4m3* weight, const float* scale_inv, int64_t rows,
                           int64_t cols, float* out);

// The inverse, used to make FP8 checkpoints: per 128x128 block, S = amax / 448 (1.0 for an
// all-zero block) and W = fp8(w / S). Writes the codes and the block scales.
void quantize_weight_fp8(const float* weight, int64_t rows, int64_t cols, fp8_e4m3* out,
                         float* scale_inv);

// The same on the pool: each band of 128 rows is an independent row of blocks.
void quantize_weight_fp8(const float* weight, int64_t rows, int64_t cols, fp8_e4m3* out,
                         float* scale_inv, ThreadPool& pool);

}  // namespace dsa

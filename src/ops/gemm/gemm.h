// y = x · Wᵀ, a Linear layer without bias (dsa-reference.md §2.4), for three weight types:
//   F32     fp32 products and sums, fp32 output (the LM head, the MoE gate on x.float()).
//   BF16    fp32 products and sums; REF's F.linear on bf16 operands gives a bf16 output, so
//           round_output_to_bf16 is normally set.
//   F8_E4M3 DeepSeek's fp8_gemm: x is act_quant'ed per row and per 128 input channels
//           (x_q codes, scale s_x), and for each 128-wide K block
//             acc_blk = Σ_{k in block} x_q[m, k] * W_q[n, k]      (fp32)
//             acc    += acc_blk * (s_x[m, block] * S[n / 128, block])
//           the output is rounded to bf16 (REF casts to the default dtype).
//           K need not be a multiple of 128: the last block is quantized as if zero-padded.
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "core/fp8_quant.h"
#include "core/thread_pool.h"

namespace dsa {

// Which fast kernel runs (gemm_fast.cc); kAuto picks by M as measured in docs/cpu-kernels.md.
enum class GemmKernel { kAuto, kDot, kBlas };

struct GemmParams {
  const float* x = nullptr;             // [M, K] activations (bf16 values for BF16 and F8 weights)
  const void* weight = nullptr;         // [N, K] of weight_dtype
  DType weight_dtype = DType::F32;      // F32, BF16 or F8_E4M3
  const float* weight_scale = nullptr;  // [ceil(N/128), ceil(K/128)], F8_E4M3 only
  ScaleFormat act_scales = ScaleFormat::kUe8m0;  // F8_E4M3: scale format of act_quant
  bool round_output_to_bf16 = false;             // must be true for F8_E4M3
  float* y = nullptr;                            // [M, N]
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
  GemmKernel kernel = GemmKernel::kAuto;  // gemm() only; the reference ignores it
};

// A Linear layer's weight as stored in a checkpoint.
struct LinearWeight {
  const void* data = nullptr;    // [out_features, in_features] of dtype
  DType dtype = DType::BF16;     // F32, BF16 or F8_E4M3
  const float* scale = nullptr;  // F8_E4M3: [ceil(out/128), ceil(in/128)]
  int64_t out_features = 0;
  int64_t in_features = 0;
};

// REF's linear(x, W) for x [m, in_features]: bf16 output unless the weight is fp32.
GemmParams linear_params(const float* x, const LinearWeight& weight, float* y, int64_t m);

// Throws dsa::Error naming the bad field.
void validate(const GemmParams& params);

void gemm_ref(const GemmParams& params);
void gemm(const GemmParams& params, ThreadPool& pool);

// Activation quantization of one row of any length K (the last 128-group zero-padded):
// `codes` [K] as the fp8 values in float, `scales` [ceil(K/128)].
void act_quant_padded_row(const float* x, int64_t k, ScaleFormat format, float* codes,
                          float* scales);

// act_quant_padded_row for each of the m rows of x [m, k], with SIMD and (from two rows on) on the
// pool's threads: the same codes [m, k] and scales [m, ceil(k/128)], bit for bit.
void act_quant_rows(const float* x, int64_t m, int64_t k, ScaleFormat format, float* codes,
                    float* scales, ThreadPool& pool);

}  // namespace dsa

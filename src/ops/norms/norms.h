// RMSNorm (with and without DeepSeek's fused residual) and LayerNorm, dsa-reference.md §2.5-§2.6.
//
//   rms_norm:   h = x (+ residual, summed in fp32);  out = bf16(weight * (h * rsqrt(mean(h^2) +
//   eps)))
//               residual_out = bf16(h). The output is normalized from the UNROUNDED fp32 sum; only
//               the residual passed on is rounded.
//   layer_norm: out = bf16(((x - mean) * rsqrt(var + eps)) * weight + bias), biased variance.
// Weights are fp32 parameters (bf16 in the checkpoint); statistics are fp32.
#pragma once

#include <cstdint>

#include "core/float_formats.h"
#include "core/thread_pool.h"

namespace dsa {

constexpr float kNormEps = 1e-6f;  // RMSNorm and LayerNorm eps in REF (never overridden)

struct RmsNormParams {
  const bf16* x = nullptr;         // [T, D]
  const bf16* residual = nullptr;  // [T, D], or null for a plain RMSNorm
  const float* weight = nullptr;   // [D]
  bf16* out = nullptr;             // [T, D]; may be x
  bf16* residual_out = nullptr;    // [T, D], required with a residual; may be x or residual
  int64_t tokens = 0;              // T
  int64_t dim = 0;                 // D
  float eps = kNormEps;
};

struct LayerNormParams {
  const bf16* x = nullptr;        // [T, D]
  const float* weight = nullptr;  // [D]
  const float* bias = nullptr;    // [D]
  bf16* out = nullptr;            // [T, D]; may be x
  int64_t tokens = 0;             // T
  int64_t dim = 0;                // D (128 for the indexer's k_norm)
  float eps = kNormEps;
};

// Throw dsa::Error naming the bad field.
void validate(const RmsNormParams& params);
void validate(const LayerNormParams& params);

// Scalar references; the statistics are summed in double (closer to torch's pairwise fp32
// reductions than a sequential fp32 sum), then used in fp32.
void rms_norm_reference(const RmsNormParams& params);
void layer_norm_reference(const LayerNormParams& params);

// SIMD (Highway, runtime dispatch) over the pool's threads, fp32 lane-wise statistics.
void rms_norm(const RmsNormParams& params, ThreadPool& pool);
void layer_norm(const LayerNormParams& params, ThreadPool& pool);

}  // namespace dsa

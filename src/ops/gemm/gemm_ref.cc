// Scalar reference GEMMs, in REF's order of operations (§2.4).
#include <vector>

#include "core/error.h"
#include "core/float_formats.h"
#include "ops/gemm/gemm.h"

namespace dsa {

void validate(const GemmParams& p) {
  if (p.m < 0 || p.n < 0 || p.k < 0) fail("gemm: negative shape M={} N={} K={}", p.m, p.n, p.k);
  if (p.weight_dtype != DType::F32 && p.weight_dtype != DType::BF16 &&
      p.weight_dtype != DType::F8_E4M3) {
    fail("gemm: unsupported weight dtype {} (expected F32, BF16 or F8_E4M3)",
         dtype_name(p.weight_dtype));
  }
  if (p.weight_dtype == DType::F8_E4M3) {
    if (!p.weight_scale) fail("gemm: F8_E4M3 weight [{}, {}] without its block scales", p.n, p.k);
    if (!p.round_output_to_bf16) fail("gemm: the F8_E4M3 GEMM output is bf16 (REF's fp8_gemm)");
  }
  if (p.m > 0 && p.n > 0 && (!p.x || !p.weight || !p.y)) fail("gemm: null tensor");
}

GemmParams linear_params(const float* x, const LinearWeight& weight, float* y, int64_t m) {
  GemmParams p;
  p.x = x;
  p.weight = weight.data;
  p.weight_dtype = weight.dtype;
  p.weight_scale = weight.scale;
  p.round_output_to_bf16 = weight.dtype != DType::F32;
  p.y = y;
  p.m = m;
  p.n = weight.out_features;
  p.k = weight.in_features;
  return p;
}

void act_quant_padded_row(const float* x, int64_t k, ScaleFormat format, float* codes,
                          float* scales) {
  const int64_t groups = weight_scale_cols(k);
  std::vector<float> padded(size_t(groups * kFp8BlockSize), 0.0f);
  std::copy(x, x + k, padded.begin());
  std::vector<fp8_e4m3> quantized(padded.size());
  act_quant_row(padded, format, quantized, std::span<float>(scales, size_t(groups)));
  for (int64_t i = 0; i < k; ++i) codes[i] = fp8_to_float(quantized[i]);
}

namespace {

float weight_value(const GemmParams& p, int64_t index) {
  if (p.weight_dtype == DType::F32) return static_cast<const float*>(p.weight)[index];
  return bf16_to_float(static_cast<const bf16*>(p.weight)[index]);
}

void fp8_gemm_ref(const GemmParams& p) {
  const int64_t blocks = weight_scale_cols(p.k);
  const auto* weight = static_cast<const fp8_e4m3*>(p.weight);
  std::vector<float> codes(size_t(p.k)), scales(static_cast<size_t>(blocks));
  for (int64_t m = 0; m < p.m; ++m) {
    act_quant_padded_row(p.x + m * p.k, p.k, p.act_scales, codes.data(), scales.data());
    for (int64_t n = 0; n < p.n; ++n) {
      const float* weight_scales = p.weight_scale + (n / kFp8BlockSize) * blocks;
      float acc = 0.0f;
      for (int64_t b = 0; b < blocks; ++b) {
        float block_sum = 0.0f;
        for (int64_t k = b * kFp8BlockSize; k < std::min(p.k, (b + 1) * kFp8BlockSize); ++k) {
          block_sum += codes[k] * fp8_to_float(weight[n * p.k + k]);
        }
        acc += block_sum * (scales[b] * weight_scales[b]);
      }
      p.y[m * p.n + n] = round_to_bf16(acc);
    }
  }
}

}  // namespace

void gemm_ref(const GemmParams& p) {
  validate(p);
  if (p.weight_dtype == DType::F8_E4M3) {
    fp8_gemm_ref(p);
    return;
  }
  for (int64_t m = 0; m < p.m; ++m) {
    for (int64_t n = 0; n < p.n; ++n) {
      float acc = 0.0f;
      for (int64_t k = 0; k < p.k; ++k) acc += p.x[m * p.k + k] * weight_value(p, n * p.k + k);
      p.y[m * p.n + n] = p.round_output_to_bf16 ? round_to_bf16(acc) : acc;
    }
  }
}

}  // namespace dsa

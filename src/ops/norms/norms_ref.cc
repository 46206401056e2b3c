#include <cmath>
#include <vector>

#include "core/error.h"
#include "ops/norms/norms.h"

namespace dsa {

void validate(const RmsNormParams& params) {
  if (params.tokens < 0 || params.dim <= 0) {
    fail("rms_norm: need tokens >= 0 and dim > 0, got tokens {} dim {}", params.tokens, params.dim);
  }
  if (params.tokens == 0) return;
  if (!params.x || !params.weight || !params.out) fail("rms_norm: x, weight and out must be set");
  if (params.residual && !params.residual_out) {
    fail("rms_norm: a residual is given but residual_out is null");
  }
}

void validate(const LayerNormParams& params) {
  if (params.tokens < 0 || params.dim <= 0) {
    fail("layer_norm: need tokens >= 0 and dim > 0, got tokens {} dim {}", params.tokens,
         params.dim);
  }
  if (params.tokens == 0) return;
  if (!params.x || !params.weight || !params.bias || !params.out) {
    fail("layer_norm: x, weight, bias and out must be set");
  }
}

void rms_norm_reference(const RmsNormParams& params) {
  validate(params);
  const int64_t dim = params.dim;
  std::vector<float> h(static_cast<size_t>(dim));
  for (int64_t t = 0; t < params.tokens; ++t) {
    const int64_t row = t * dim;
    double sum_squares = 0.0;
    for (int64_t i = 0; i < dim; ++i) {
      h[i] = bf16_to_float(params.x[row + i]);
      if (params.residual) h[i] += bf16_to_float(params.residual[row + i]);  // fp32 sum
      sum_squares += double(h[i]) * h[i];
    }
    const float rms_inv = 1.0f / std::sqrt(float(sum_squares / double(dim)) + params.eps);
    for (int64_t i = 0; i < dim; ++i) {
      params.out[row + i] = float_to_bf16(params.weight[i] * (h[i] * rms_inv));
      if (params.residual) params.residual_out[row + i] = float_to_bf16(h[i]);
    }
  }
}

void layer_norm_reference(const LayerNormParams& params) {
  validate(params);
  const int64_t dim = params.dim;
  std::vector<float> x(static_cast<size_t>(dim));
  for (int64_t t = 0; t < params.tokens; ++t) {
    const int64_t row = t * dim;
    double sum = 0.0;
    for (int64_t i = 0; i < dim; ++i) {
      x[i] = bf16_to_float(params.x[row + i]);
      sum += x[i];
    }
    const float mean = float(sum / double(dim));
    double sum_squares = 0.0;
    for (int64_t i = 0; i < dim; ++i) sum_squares += double(x[i] - mean) * (x[i] - mean);
    const float rstd = 1.0f / std::sqrt(float(sum_squares / double(dim)) + params.eps);
    for (int64_t i = 0; i < dim; ++i) {
      params.out[row + i] = float_to_bf16((x[i] - mean) * rstd * params.weight[i] + params.bias[i]);
    }
  }
}

}  // namespace dsa

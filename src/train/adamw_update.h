// The element-wise AdamW update of adamw.h: a readable scalar definition and a SIMD version
// (Highway, f64 lanes) that gives the same bits. Both compute in double and store fp32.
#pragma once

#include <cstdint>

namespace dsa::train {

struct AdamWCoefficients {
  double lr = 0.0;
  double decay = 0.0;  // lr · weight_decay for decayed tensors, else 0
  double beta1 = 0.0, beta2 = 0.0;
  double bias_correction1 = 1.0, bias_correction2 = 1.0;  // 1 - beta^step
  double eps = 0.0;
};

// For i < n: p -= decay·p; m = β1·m + (1-β1)·g; v = β2·v + (1-β2)·g²; m and v rounded to fp32;
// p -= lr·(m/bc1) / (sqrt(v/bc2) + eps); p rounded to fp32.
void adamw_update_reference(const AdamWCoefficients& c, float* p, const float* g, float* m,
                            float* v, int64_t n);

// The same operations in the same order on vectors of doubles (its translation unit is
// compiled with -ffp-contract=off, so no multiply-add is fused): bit-identical to the reference.
void adamw_update(const AdamWCoefficients& c, float* p, const float* g, float* m, float* v,
                  int64_t n);

}  // namespace dsa::train

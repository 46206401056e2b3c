// RMSNorm and LayerNorm for training: fp32 forward that saves its row statistics, and backward
// (docs/training-engine.md). The inference versions in norms.h round to bf16; these do not.
//
//   RMSNorm    rstd = 1 / sqrt(mean(x²) + eps)                    y = w ⊙ (x · rstd)
//   LayerNorm  mean = mean(x), rstd = 1 / sqrt(var(x) + eps)      y = w ⊙ ((x − mean) · rstd) + b
//              (biased variance)
//
// Backward, per row, with the saved statistics (x̂ = x · rstd, resp. (x − mean) · rstd, g = w ⊙ dy):
//   RMSNorm    dx = rstd · (g − x̂ · mean(g ⊙ x̂))             dw += Σ_t dy ⊙ x̂
//   LayerNorm  dx = rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂))   dw += Σ_t dy ⊙ x̂,  db += Σ_t dy
// dx is OVERWRITTEN (it may be dy: each row is read before it is written); dw and db are
// ACCUMULATED so that callers can sum micro-batches.
#pragma once

#include <cstdint>

#include "core/thread_pool.h"

namespace dsa {

template <typename Real>
struct RmsNormTrain {
  const Real* x = nullptr;       // [T, D]
  const Real* weight = nullptr;  // [D]
  Real* y = nullptr;             // [T, D] forward output; may be x
  Real* rstd = nullptr;          // [T]    forward output, saved for backward (read by it)
  const Real* dy = nullptr;      // [T, D] backward input
  Real* dx = nullptr;            // [T, D] backward: OVERWRITTEN; may be dy
  Real* dweight = nullptr;       // [D]    backward: accumulated (+=); null = skip
  int64_t tokens = 0;            // T
  int64_t dim = 0;               // D
  Real eps = Real(1e-6);
};
using RmsNormTrainParams = RmsNormTrain<float>;

template <typename Real>
struct LayerNormTrain {
  const Real* x = nullptr;       // [T, D]
  const Real* weight = nullptr;  // [D]
  const Real* bias = nullptr;    // [D]
  Real* y = nullptr;             // [T, D] forward output; may be x
  Real* mean = nullptr;          // [T]    forward output, saved for backward (read by it)
  Real* rstd = nullptr;          // [T]    forward output, saved for backward (read by it)
  const Real* dy = nullptr;      // [T, D] backward input
  Real* dx = nullptr;            // [T, D] backward: OVERWRITTEN; may be dy
  Real* dweight = nullptr;       // [D]    backward: accumulated (+=); null = skip
  Real* dbias = nullptr;         // [D]    backward: accumulated (+=); null = skip
  int64_t tokens = 0;            // T
  int64_t dim = 0;               // D
  Real eps = Real(1e-6);
};
using LayerNormTrainParams = LayerNormTrain<float>;

// Shapes and eps; throw dsa::Error naming the bad field.
template <typename Real>
void validate(const RmsNormTrain<Real>& params);
template <typename Real>
void validate(const LayerNormTrain<Real>& params);
// validate() plus the pointers that pass reads and writes.
template <typename Real>
void validate_forward(const RmsNormTrain<Real>& params);
template <typename Real>
void validate_backward(const RmsNormTrain<Real>& params);
template <typename Real>
void validate_forward(const LayerNormTrain<Real>& params);
template <typename Real>
void validate_backward(const LayerNormTrain<Real>& params);

// Scalar references (Real = float or double): sums in double, every other step in Real.
template <typename Real>
void rms_norm_train_forward_reference(const RmsNormTrain<Real>& params);
template <typename Real>
void rms_norm_backward_reference(const RmsNormTrain<Real>& params);
template <typename Real>
void layer_norm_train_forward_reference(const LayerNormTrain<Real>& params);
template <typename Real>
void layer_norm_backward_reference(const LayerNormTrain<Real>& params);

// SIMD (Highway, runtime dispatch) in fp32 over the pool's threads, by rows. The backward reads
// x and dy once: dw and db are summed per fixed chunk of 16 tokens, then over the chunks in
// order. No result depends on the thread count.
void rms_norm_train_forward(const RmsNormTrainParams& params, ThreadPool& pool);
void rms_norm_backward(const RmsNormTrainParams& params, ThreadPool& pool);
void layer_norm_train_forward(const LayerNormTrainParams& params, ThreadPool& pool);
void layer_norm_backward(const LayerNormTrainParams& params, ThreadPool& pool);

}  // namespace dsa

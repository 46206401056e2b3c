// The SwiGLU activation of the FFN for training, elementwise in fp32 (docs/training-engine.md):
//   forward   h = silu(g) · u,   silu(g) = g · σ(g)
//   backward  dgate = dh · u · σ(g) (1 + g σ(−g)),   dup = dh · silu(g)
// σ(g) and σ(−g) = 1 − σ(g) both come from one e = exp(−|g|) <= 1 (1 / (1 + e) and e / (1 + e)),
// so nothing overflows and neither cancels for large |g|.
#pragma once

#include <cstdint>

#include "core/thread_pool.h"

namespace dsa {

template <typename Real>
struct SwigluTrain {
  const Real* gate = nullptr;  // [N] (x · gate_projᵀ, flattened)
  const Real* up = nullptr;    // [N] (x · up_projᵀ)
  Real* h = nullptr;           // [N] forward; may be gate or up
  const Real* dh = nullptr;    // [N] backward input
  Real* dgate = nullptr;       // [N] backward: OVERWRITTEN; may be gate, up or dh
  Real* dup = nullptr;         // [N] backward: OVERWRITTEN; may be gate, up or dh (not dgate)
  int64_t n = 0;
};
using SwigluTrainParams = SwigluTrain<float>;

// Throws dsa::Error naming the bad field.
template <typename Real>
void validate(const SwigluTrain<Real>& params);
// validate() plus the pointers that pass reads and writes.
template <typename Real>
void validate_forward(const SwigluTrain<Real>& params);
template <typename Real>
void validate_backward(const SwigluTrain<Real>& params);

// Scalar references (Real = float or double), std::exp.
template <typename Real>
void swiglu_train_forward_reference(const SwigluTrain<Real>& params);
template <typename Real>
void swiglu_backward_reference(const SwigluTrain<Real>& params);

// SIMD (Highway, runtime dispatch; its exp is within 1 ulp) over the pool's threads. Every
// element takes the same vector path (the tail is padded), so no result depends on the thread
// count.
void swiglu_train_forward(const SwigluTrainParams& params, ThreadPool& pool);
void swiglu_backward(const SwigluTrainParams& params, ThreadPool& pool);

}  // namespace dsa

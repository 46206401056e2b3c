// RoPE for training in fp32: the rotation of rope.h without bf16 rounding, and its backward
// (docs/training-engine.md). The rotation is orthogonal, so the backward is the rotation by −θ:
//   forward   (a, b) -> (a c − b s, a s + b c)
//   backward  (p, q) -> (p c + q s, q c − p s)       (dy in, dx out)
// with c, s = cos θ, sin θ from the RopeTable (fp32, converted to Real). Both work in place.
#pragma once

#include <cstdint>

#include "core/thread_pool.h"
#include "ops/rope/rope.h"

namespace dsa {

template <typename Real>
struct RopeTrain {
  Real* x = nullptr;      // [T, H, row]: rotated in place at [offset, offset + 2 * pairs)
  int64_t tokens = 0;     // T
  int64_t heads = 1;      // H (1 for a key without a head axis)
  int64_t row = 0;        // elements per head
  int64_t offset = 0;     // first rotated element
  int64_t start_pos = 0;  // token t is at position start_pos + t
  RopeLayout layout = RopeLayout::kInterleaved;
  const RopeTable* table = nullptr;  // pairs = table->pairs()
};
using RopeTrainParams = RopeTrain<float>;

// Throws dsa::Error naming the bad field.
template <typename Real>
void validate(const RopeTrain<Real>& params);

// Scalar references (Real = float or double).
template <typename Real>
void rope_train_forward_reference(const RopeTrain<Real>& params);  // x ← R(θ) x
template <typename Real>
void rope_backward_reference(const RopeTrain<Real>& params);  // x holds dy; x ← R(−θ) dy = dx

// SIMD (Highway, runtime dispatch) over the pool's threads (rows of one token and head). The
// same products and sums as the fp32 reference up to FMA contraction; no result depends on the
// thread count.
void rope_train_forward(const RopeTrainParams& params, ThreadPool& pool);
void rope_backward(const RopeTrainParams& params, ThreadPool& pool);

}  // namespace dsa

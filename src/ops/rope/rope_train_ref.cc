#include "core/error.h"
#include "ops/rope/rope_train.h"

namespace dsa {
namespace {

// Rotates every pair by +θ (sign = 1) or −θ (sign = −1).
template <typename Real>
void rotate_reference(const RopeTrain<Real>& p, Real sign) {
  validate(p);
  const int pairs = p.table->pairs();
  for (int64_t t = 0; t < p.tokens; ++t) {
    const float* cos = p.table->cos(p.start_pos + t);
    const float* sin = p.table->sin(p.start_pos + t);
    for (int64_t h = 0; h < p.heads; ++h) {
      Real* x = p.x + (t * p.heads + h) * p.row + p.offset;
      for (int i = 0; i < pairs; ++i) {
        const int ia = p.layout == RopeLayout::kInterleaved ? 2 * i : i;
        const int ib = p.layout == RopeLayout::kInterleaved ? 2 * i + 1 : i + pairs;
        const Real c = Real(cos[i]);
        const Real s = sign * Real(sin[i]);
        const Real a = x[ia], b = x[ib];
        x[ia] = a * c - b * s;
        x[ib] = a * s + b * c;
      }
    }
  }
}

}  // namespace

template <typename Real>
void validate(const RopeTrain<Real>& p) {
  if (p.table == nullptr) fail("rope_train: no RopeTable given");
  if (p.tokens < 0) fail("rope_train: tokens must be >= 0, got {}", p.tokens);
  if (p.heads <= 0) fail("rope_train: heads must be > 0, got {}", p.heads);
  if (p.x == nullptr && p.tokens > 0) fail("rope_train: x must be set");
  const int64_t width = 2 * int64_t(p.table->pairs());
  if (p.offset < 0 || p.offset + width > p.row) {
    fail("rope_train: rotated dims [offset {}, {}) do not fit in a row of {} elements", p.offset,
         p.offset + width, p.row);
  }
  if (p.start_pos < 0 || p.start_pos + p.tokens > p.table->positions()) {
    fail("rope_train: positions [start_pos {}, {}) exceed the table's {} positions", p.start_pos,
         p.start_pos + p.tokens, p.table->positions());
  }
}

template <typename Real>
void rope_train_forward_reference(const RopeTrain<Real>& params) {
  rotate_reference(params, Real(1));
}

template <typename Real>
void rope_backward_reference(const RopeTrain<Real>& params) {
  rotate_reference(params, Real(-1));
}

template void validate(const RopeTrain<float>&);
template void rope_train_forward_reference(const RopeTrain<float>&);
template void rope_backward_reference(const RopeTrain<float>&);

template void validate(const RopeTrain<double>&);
template void rope_train_forward_reference(const RopeTrain<double>&);
template void rope_backward_reference(const RopeTrain<double>&);

}  // namespace dsa

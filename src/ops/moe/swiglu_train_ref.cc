#include <cmath>

#include "core/error.h"
#include "ops/moe/swiglu_train.h"

namespace dsa {
namespace {

void require(const void* pointer, const char* op, const char* field) {
  if (pointer == nullptr) fail("{}: {} must be set", op, field);
}

// σ(g) and σ(−g) from e = exp(−|g|), never overflowing.
template <typename Real>
struct Sigmoids {
  Real of_g;      // σ(g)
  Real of_neg_g;  // σ(−g) = 1 − σ(g)
};

template <typename Real>
Sigmoids<Real> sigmoids(Real g) {
  const Real e = std::exp(-std::fabs(g));
  const Real large = Real(1) / (Real(1) + e);  // σ(|g|)
  const Real small = e * large;                // σ(−|g|)
  return g >= Real(0) ? Sigmoids<Real>{large, small} : Sigmoids<Real>{small, large};
}

}  // namespace

template <typename Real>
void validate(const SwigluTrain<Real>& p) {
  if (p.n < 0) fail("swiglu_train: n must be >= 0, got {}", p.n);
}

template <typename Real>
void validate_forward(const SwigluTrain<Real>& p) {
  validate(p);
  if (p.n == 0) return;
  require(p.gate, "swiglu_train_forward", "gate");
  require(p.up, "swiglu_train_forward", "up");
  require(p.h, "swiglu_train_forward", "h");
}

template <typename Real>
void validate_backward(const SwigluTrain<Real>& p) {
  validate(p);
  if (p.n == 0) return;
  require(p.gate, "swiglu_backward", "gate");
  require(p.up, "swiglu_backward", "up");
  require(p.dh, "swiglu_backward", "dh");
  require(p.dgate, "swiglu_backward", "dgate");
  require(p.dup, "swiglu_backward", "dup");
  if (p.dgate == p.dup) fail("swiglu_backward: dgate and dup must be different buffers");
}

template <typename Real>
void swiglu_train_forward_reference(const SwigluTrain<Real>& p) {
  validate_forward(p);
  for (int64_t i = 0; i < p.n; ++i) {
    const Real g = p.gate[i];
    p.h[i] = (g * sigmoids(g).of_g) * p.up[i];
  }
}

template <typename Real>
void swiglu_backward_reference(const SwigluTrain<Real>& p) {
  validate_backward(p);
  for (int64_t i = 0; i < p.n; ++i) {
    const Real g = p.gate[i], u = p.up[i], dh = p.dh[i];  // all read before either write
    const Sigmoids<Real> s = sigmoids(g);
    p.dgate[i] = (dh * u) * (s.of_g * (Real(1) + g * s.of_neg_g));
    p.dup[i] = dh * (g * s.of_g);
  }
}

template void validate(const SwigluTrain<float>&);
template void validate_forward(const SwigluTrain<float>&);
template void validate_backward(const SwigluTrain<float>&);
template void swiglu_train_forward_reference(const SwigluTrain<float>&);
template void swiglu_backward_reference(const SwigluTrain<float>&);

template void validate(const SwigluTrain<double>&);
template void validate_forward(const SwigluTrain<double>&);
template void validate_backward(const SwigluTrain<double>&);
template void swiglu_train_forward_reference(const SwigluTrain<double>&);
template void swiglu_backward_reference(const SwigluTrain<double>&);

}  // namespace dsa

// SIMD fp32 SwiGLU for training (see swiglu_train.h).

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/moe/swiglu_train_fast.cc"
#include <algorithm>

#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
// clang-format off: per-target headers go after foreach_target.h and highway.h.
#include "hwy/contrib/math/math-inl.h"
// clang-format on
#include "ops/moe/swiglu_train.h"

HWY_BEFORE_NAMESPACE();
namespace dsa {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// σ(g) and σ(−g) from e = exp(−|g|) (Highway's Exp gives 0 below −104, the right limit).
HWY_INLINE void Sigmoids(DF d, VF g, VF& of_g, VF& of_neg_g) {
  const VF one = hn::Set(d, 1.0f);
  const VF e = hn::Exp(d, hn::Neg(hn::Abs(g)));
  const VF large = hn::Div(one, hn::Add(one, e));  // σ(|g|)
  const VF small = hn::Mul(e, large);              // σ(−|g|)
  const auto non_negative = hn::Ge(g, hn::Zero(d));
  of_g = hn::IfThenElse(non_negative, large, small);
  of_neg_g = hn::IfThenElse(non_negative, small, large);
}

// Calls body(offset, g, u, dh, out0, out1) on full vectors over [begin, end): the last partial
// vector runs on zero-padded copies, so that every element takes the same path.
template <class Body>
HWY_INLINE void ForEachVector(const float* g, const float* u, const float* dh, float* out0,
                              float* out1, int64_t begin, int64_t end, Body body) {
  const DF d;
  const int64_t n = int64_t(hn::Lanes(d));
  int64_t i = begin;
  for (; i + n <= end; i += n) {
    body(g + i, u + i, dh ? dh + i : nullptr, out0 + i, out1 ? out1 + i : nullptr);
  }
  if (i == end) return;
  constexpr size_t kMax = HWY_MAX_BYTES / sizeof(float);
  HWY_ALIGN float gb[kMax] = {}, ub[kMax] = {}, dhb[kMax] = {}, o0[kMax], o1[kMax];
  const int64_t rest = end - i;
  std::copy(g + i, g + end, gb);
  std::copy(u + i, u + end, ub);
  if (dh) std::copy(dh + i, dh + end, dhb);
  body(gb, ub, dh ? dhb : nullptr, o0, out1 ? o1 : nullptr);
  std::copy(o0, o0 + rest, out0 + i);
  if (out1) std::copy(o1, o1 + rest, out1 + i);
}

void SwigluForwardRange(const SwigluTrainParams& p, int64_t begin, int64_t end) {
  const DF d;
  ForEachVector(p.gate, p.up, nullptr, p.h, nullptr, begin, end,
                [d](const float* g, const float* u, const float*, float* h, float*) {
                  const VF gv = hn::LoadU(d, g);
                  VF of_g, of_neg_g;
                  Sigmoids(d, gv, of_g, of_neg_g);
                  hn::StoreU(hn::Mul(hn::Mul(gv, of_g), hn::LoadU(d, u)), d, h);
                });
}

void SwigluBackwardRange(const SwigluTrainParams& p, int64_t begin, int64_t end) {
  const DF d;
  ForEachVector(p.gate, p.up, p.dh, p.dgate, p.dup, begin, end,
                [d](const float* g, const float* u, const float* dh, float* dgate, float* dup) {
                  const VF gv = hn::LoadU(d, g), uv = hn::LoadU(d, u), dhv = hn::LoadU(d, dh);
                  VF of_g, of_neg_g;
                  Sigmoids(d, gv, of_g, of_neg_g);
                  const VF dsilu = hn::Mul(of_g, hn::MulAdd(gv, of_neg_g, hn::Set(d, 1.0f)));
                  hn::StoreU(hn::Mul(hn::Mul(dhv, uv), dsilu), d, dgate);
                  hn::StoreU(hn::Mul(dhv, hn::Mul(gv, of_g)), d, dup);
                });
}

}  // namespace HWY_NAMESPACE
}  // namespace dsa
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace dsa {

HWY_EXPORT(SwigluForwardRange);
HWY_EXPORT(SwigluBackwardRange);

namespace {

constexpr int64_t kGrain = 16384;  // elements per task (~ 3 us of work)

}  // namespace

void swiglu_train_forward(const SwigluTrainParams& params, ThreadPool& pool) {
  validate_forward(params);
  pool.parallel_for(params.n, kGrain, [&](int64_t begin, int64_t end) {
    HWY_DYNAMIC_DISPATCH(SwigluForwardRange)(params, begin, end);
  });
}

void swiglu_backward(const SwigluTrainParams& params, ThreadPool& pool) {
  validate_backward(params);
  pool.parallel_for(params.n, kGrain, [&](int64_t begin, int64_t end) {
    HWY_DYNAMIC_DISPATCH(SwigluBackwardRange)(params, begin, end);
  });
}

}  // namespace dsa
#endif  // HWY_ONCE

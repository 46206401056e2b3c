// SIMD AdamW update (adamw_update.h). The scalar loop does two divisions and a square root in
// double per element, which the compiler does not vectorise: 0.85 s of an optimizer step over
// 191 M parameters (docs/training-speed.md). Here the same double operations run 8 (AVX-512) or
// 4 (AVX2) lanes at a time; -ffp-contract=off (src/CMakeLists.txt) keeps GCC from fusing the
// multiplies and adds into FMAs, which would change the rounding.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "train/adamw_update.cc"

#include "train/adamw_update.h"

#include <cmath>

#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace dsa::train {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Returns how many leading elements were updated (a multiple of the lane count).
int64_t AdamWUpdateVectors(const AdamWCoefficients& c, float* p, const float* g, float* m, float* v,
                           int64_t n) {
  const hn::ScalableTag<double> d;
  const hn::Rebind<float, decltype(d)> df;
  const int64_t lanes = int64_t(hn::Lanes(d));
  const auto decay = hn::Set(d, c.decay), lr = hn::Set(d, c.lr), eps = hn::Set(d, c.eps);
  const auto b1 = hn::Set(d, c.beta1), b2 = hn::Set(d, c.beta2);
  const auto one_minus_b1 = hn::Set(d, 1.0 - c.beta1), one_minus_b2 = hn::Set(d, 1.0 - c.beta2);
  const auto bc1 = hn::Set(d, c.bias_correction1), bc2 = hn::Set(d, c.bias_correction2);
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    auto pi = hn::PromoteTo(d, hn::LoadU(df, p + i));
    pi = hn::Sub(pi, hn::Mul(decay, pi));
    const auto gi = hn::PromoteTo(d, hn::LoadU(df, g + i));
    const auto mi =
        hn::Add(hn::Mul(b1, hn::PromoteTo(d, hn::LoadU(df, m + i))), hn::Mul(one_minus_b1, gi));
    const auto vi = hn::Add(hn::Mul(b2, hn::PromoteTo(d, hn::LoadU(df, v + i))),
                            hn::Mul(hn::Mul(one_minus_b2, gi), gi));
    const auto m32 = hn::DemoteTo(df, mi), v32 = hn::DemoteTo(df, vi);
    hn::StoreU(m32, df, m + i);
    hn::StoreU(v32, df, v + i);
    const auto m_hat = hn::Div(hn::PromoteTo(d, m32), bc1);
    const auto denominator = hn::Add(hn::Sqrt(hn::Div(hn::PromoteTo(d, v32), bc2)), eps);
    pi = hn::Sub(pi, hn::Div(hn::Mul(lr, m_hat), denominator));
    hn::StoreU(hn::DemoteTo(df, pi), df, p + i);
  }
  return i;
}

}  // namespace HWY_NAMESPACE
}  // namespace dsa::train
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace dsa::train {

HWY_EXPORT(AdamWUpdateVectors);

void adamw_update_reference(const AdamWCoefficients& c, float* p, const float* g, float* m,
                            float* v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    double pi = double(p[i]);
    pi -= c.decay * pi;
    const double gi = double(g[i]);
    m[i] = float(c.beta1 * double(m[i]) + (1.0 - c.beta1) * gi);
    v[i] = float(c.beta2 * double(v[i]) + (1.0 - c.beta2) * gi * gi);
    pi -= c.lr * (double(m[i]) / c.bias_correction1) /
          (std::sqrt(double(v[i]) / c.bias_correction2) + c.eps);
    p[i] = float(pi);
  }
}

void adamw_update(const AdamWCoefficients& c, float* p, const float* g, float* m, float* v,
                  int64_t n) {
  const int64_t done = HWY_DYNAMIC_DISPATCH(AdamWUpdateVectors)(c, p, g, m, v, n);
  adamw_update_reference(c, p + done, g + done, m + done, v + done, n - done);
}

}  // namespace dsa::train
#endif  // HWY_ONCE

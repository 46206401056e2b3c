// SIMD fp32 RoPE for training (see rope_train.h). Each lane computes the same two products and
// one add or subtract as the fp32 reference; on targets with FMA the compiler may fuse a product
// into the sum (a difference of at most one rounding of each product).

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/rope/rope_train_fast.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "ops/rope/rope_train.h"

HWY_BEFORE_NAMESPACE();
namespace dsa {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Halves layout: a = x[0 : pairs], b = x[pairs : 2 pairs]; `sin` already carries the sign of θ.
void RotateHalvesF32(float* x, const float* cos, const float* sin, int pairs) {
  const hn::ScalableTag<float> d;
  const int n = int(hn::Lanes(d));
  int i = 0;
  for (; i + n <= pairs; i += n) {
    const auto a = hn::LoadU(d, x + i);
    const auto b = hn::LoadU(d, x + pairs + i);
    const auto c = hn::LoadU(d, cos + i);
    const auto s = hn::LoadU(d, sin + i);
    hn::StoreU(hn::Sub(hn::Mul(a, c), hn::Mul(b, s)), d, x + i);
    hn::StoreU(hn::Add(hn::Mul(a, s), hn::Mul(b, c)), d, x + pairs + i);
  }
  for (; i < pairs; ++i) {
    const float a = x[i], b = x[pairs + i];
    x[i] = a * cos[i] - b * sin[i];
    x[pairs + i] = a * sin[i] + b * cos[i];
  }
}

// Interleaved layout: out = x * cos_dup + swap_pairs(x) * sin_alt with cos_dup = (c, c) and
// sin_alt = (−s, s) per pair (s signed by θ): lane 2i gets a c − b s, lane 2i+1 gets b c + a s.
void RotateInterleavedF32(float* x, const float* cos_dup, const float* sin_alt, int width) {
  const hn::ScalableTag<float> d;
  const int n = int(hn::Lanes(d));
  int i = 0;
  if (n >= 2) {
    for (; i + n <= width; i += n) {
      const auto v = hn::LoadU(d, x + i);
      const auto rotated = hn::Add(hn::Mul(v, hn::LoadU(d, cos_dup + i)),
                                   hn::Mul(hn::Reverse2(d, v), hn::LoadU(d, sin_alt + i)));
      hn::StoreU(rotated, d, x + i);
    }
  }
  for (; i < width; i += 2) {
    const float a = x[i], b = x[i + 1];
    x[i] = a * cos_dup[i] + b * sin_alt[i];
    x[i + 1] = b * cos_dup[i + 1] + a * sin_alt[i + 1];
  }
}

// Rows [begin, end) of [T·H, row], rotated by sign · θ.
void RopeTrainRows(const RopeTrainParams& p, float sign, int64_t begin, int64_t end) {
  const int pairs = p.table->pairs();
  float cos_dup[kMaxRopeDim];
  float sin_alt[kMaxRopeDim];
  int64_t prepared_token = -1;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t t = r / p.heads;
    if (t != prepared_token) {
      const float* cos = p.table->cos(p.start_pos + t);
      const float* sin = p.table->sin(p.start_pos + t);
      for (int i = 0; i < pairs; ++i) {
        const float s = sign * sin[i];
        if (p.layout == RopeLayout::kHalves) {
          cos_dup[i] = cos[i];
          sin_alt[i] = s;
        } else {
          cos_dup[2 * i] = cos_dup[2 * i + 1] = cos[i];
          sin_alt[2 * i] = -s;
          sin_alt[2 * i + 1] = s;
        }
      }
      prepared_token = t;
    }
    float* x = p.x + r * p.row + p.offset;
    if (p.layout == RopeLayout::kHalves) {
      RotateHalvesF32(x, cos_dup, sin_alt, pairs);
    } else {
      RotateInterleavedF32(x, cos_dup, sin_alt, 2 * pairs);
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace dsa
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace dsa {

HWY_EXPORT(RopeTrainRows);

namespace {

void rotate(const RopeTrainParams& params, float sign, ThreadPool& pool) {
  validate(params);
  pool.parallel_for(params.tokens * params.heads, 64, [&](int64_t begin, int64_t end) {
    HWY_DYNAMIC_DISPATCH(RopeTrainRows)(params, sign, begin, end);
  });
}

}  // namespace

void rope_train_forward(const RopeTrainParams& params, ThreadPool& pool) {
  rotate(params, 1.0f, pool);
}

void rope_backward(const RopeTrainParams& params, ThreadPool& pool) { rotate(params, -1.0f, pool); }

}  // namespace dsa
#endif  // HWY_ONCE

// Fast absorption: one (token, head) pair per task; q_abs as 128 bf16-widened axpys over the 512
// latent dims, the output projection through the fast GEMM kernel (W_UV[h] is a [128, 512]
// bf16 weight).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/mla_absorb_fast.cc"
#include <algorithm>
#include <vector>

#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "ops/gemm.h"
#include "ops/gemm_widen-inl.h"
#include "ops/latent_cache.h"
#include "ops/mla_absorb.h"

HWY_BEFORE_NAMESPACE();
namespace dsa::HWY_NAMESPACE {

// out[c] = bf16(Σ_d q[d] · w_uk[d, c]) for the 512 latent dims, 4 vectors at a time.
void AbsorbHead(const float* q, const bf16* w_uk, float* out) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const uint16_t* w = reinterpret_cast<const uint16_t*>(w_uk);
  for (size_t c = 0; c < size_t(kMlaLatentDim); c += 4 * N) {
    VF acc[4] = {hn::Zero(d), hn::Zero(d), hn::Zero(d), hn::Zero(d)};
    for (int k = 0; k < kMlaNopeDim; ++k) {
      const VF weight = hn::Set(d, q[k]);
      for (size_t i = 0; i < 4; ++i) {
        acc[i] = hn::MulAdd(weight, LoadBf16(d, w + k * kMlaLatentDim + c + i * N), acc[i]);
      }
    }
    for (size_t i = 0; i < 4; ++i) hn::StoreU(RoundToBf16(d, acc[i]), d, out + c + i * N);
  }
}

}  // namespace dsa::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace dsa {

HWY_EXPORT(AbsorbHead);

void absorb_query(const MlaAbsorbParams& p, const float* q_nope, float* q_abs, ThreadPool& pool) {
  validate(p);
  pool.parallel_for(p.num_tokens * p.num_heads, 4, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t h = row % p.num_heads;
      HWY_DYNAMIC_DISPATCH(AbsorbHead)
      (q_nope + row * kMlaNopeDim, p.wkv_b + h * kMlaWkvbRowsPerHead * kMlaLatentDim,
       q_abs + row * kMlaKeyDim);
    }
  });
}

void project_output(const MlaAbsorbParams& p, const float* o_lat, float* o, ThreadPool& pool) {
  validate(p);
  // Per head: o[:, h] = o_lat[:, h] · W_UV[h]ᵀ, the tokens as GEMM rows (stride H rows).
  ThreadPool single(1);  // the heads are the parallel axis; each GEMM runs on its thread
  pool.parallel_for(p.num_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> lat(size_t(p.num_tokens * kMlaLatentDim));
    std::vector<float> out(size_t(p.num_tokens * kMlaNopeDim));
    for (int64_t h = begin; h < end; ++h) {
      for (int64_t t = 0; t < p.num_tokens; ++t) {
        const float* src = o_lat + (t * p.num_heads + h) * kMlaLatentDim;
        std::copy(src, src + kMlaLatentDim, lat.begin() + t * kMlaLatentDim);
      }
      GemmParams g =
          linear_params(lat.data(),
                        {p.wkv_b + (h * kMlaWkvbRowsPerHead + kMlaNopeDim) * kMlaLatentDim,
                         DType::BF16, nullptr, kMlaNopeDim, kMlaLatentDim},
                        out.data(), p.num_tokens);
      g.kernel = GemmKernel::kDot;
      gemm(g, single);
      for (int64_t t = 0; t < p.num_tokens; ++t) {
        std::copy(out.begin() + t * kMlaNopeDim, out.begin() + (t + 1) * kMlaNopeDim,
                  o + (t * p.num_heads + h) * kMlaNopeDim);
      }
    }
  });
}

}  // namespace dsa
#endif  // HWY_ONCE

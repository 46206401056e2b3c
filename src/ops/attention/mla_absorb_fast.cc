// Fast absorption: one (token, head) pair per task; q_abs as nope_dim bf16-widened axpys over the
// latent dims, the output projection through the fast GEMM kernel (W_UV[h] is a [v_dim, latent]
// bf16 weight).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/attention/mla_absorb_fast.cc"
#include <algorithm>
#include <vector>

#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "ops/attention/mla_absorb.h"
#include "ops/gemm/gemm.h"
#include "ops/gemm/gemm_widen-inl.h"

HWY_BEFORE_NAMESPACE();
namespace dsa::HWY_NAMESPACE {

// out[c, c + kVecs N) = bf16(Σ_d q[d] · w_uk[d, c, c + kVecs N)) for a head of `nope` rows.
template <int kVecs>
HWY_INLINE void AbsorbColumns(const float* q, const uint16_t* w, int64_t nope, int64_t latent,
                              int64_t c, float* out) {
  const DF d;
  const size_t N = hn::Lanes(d);
  VF acc[kVecs];
  for (int i = 0; i < kVecs; ++i) acc[i] = hn::Zero(d);
  for (int64_t k = 0; k < nope; ++k) {
    const VF weight = hn::Set(d, q[k]);
    for (int i = 0; i < kVecs; ++i) {
      acc[i] = hn::MulAdd(weight, LoadBf16(d, w + k * latent + c + i * N), acc[i]);
    }
  }
  for (int i = 0; i < kVecs; ++i) hn::StoreU(RoundToBf16(d, acc[i]), d, out + c + i * N);
}

// out[c] = bf16(Σ_d q[d] · w_uk[d, c]) for the `latent` dims: 4 vectors at a time, then single
// vectors, then scalar code for a partial vector (kv_lora_rank is a multiple of 128, so V3.2 and
// every cache-compatible width stay on whole vectors).
void AbsorbHead(const float* q, const bf16* w_uk, int64_t nope, int64_t latent, float* out) {
  const int64_t N = int64_t(hn::Lanes(DF()));
  const uint16_t* w = reinterpret_cast<const uint16_t*>(w_uk);
  int64_t c = 0;
  for (; c + 4 * N <= latent; c += 4 * N) AbsorbColumns<4>(q, w, nope, latent, c, out);
  for (; c + N <= latent; c += N) AbsorbColumns<1>(q, w, nope, latent, c, out);
  for (; c < latent; ++c) {
    float sum = 0.0f;
    for (int64_t k = 0; k < nope; ++k) sum += q[k] * bf16_to_float(w_uk[k * latent + c]);
    out[c] = round_to_bf16(sum);
  }
}

}  // namespace dsa::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace dsa {

HWY_EXPORT(AbsorbHead);

void absorb_query(const MlaAbsorbParams& p, const float* q_nope, float* q_abs, ThreadPool& pool) {
  validate(p);
  const int64_t head_size = (p.nope_dim + p.v_dim) * p.latent_dim;  // wkv_b elements per head
  pool.parallel_for(p.num_tokens * p.num_heads, 4, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t h = row % p.num_heads;
      HWY_DYNAMIC_DISPATCH(AbsorbHead)
      (q_nope + row * p.nope_dim, p.wkv_b + h * head_size, p.nope_dim, p.latent_dim,
       q_abs + row * p.q_abs_stride);
    }
  });
}

void project_output(const MlaAbsorbParams& p, const float* o_lat, float* o, ThreadPool& pool) {
  validate(p);
  const int64_t T = p.num_tokens, latent = p.latent_dim, v_dim = p.v_dim;
  // Per head: o[:, h] = o_lat[:, h] · W_UV[h]ᵀ, the tokens as GEMM rows (stride H rows).
  ThreadPool single(1);  // the heads are the parallel axis; each GEMM runs on its thread
  pool.parallel_for(p.num_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> lat(size_t(T * latent));
    std::vector<float> out(size_t(T * v_dim));
    for (int64_t h = begin; h < end; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        const float* src = o_lat + (t * p.num_heads + h) * latent;
        std::copy(src, src + latent, lat.begin() + t * latent);
      }
      const bf16* w_uv = p.wkv_b + (h * (p.nope_dim + v_dim) + p.nope_dim) * latent;
      GemmParams g =
          linear_params(lat.data(), {w_uv, DType::BF16, nullptr, v_dim, latent}, out.data(), T);
      g.kernel = GemmKernel::kDot;
      gemm(g, single);
      for (int64_t t = 0; t < T; ++t) {
        std::copy(out.begin() + t * v_dim, out.begin() + (t + 1) * v_dim,
                  o + (t * p.num_heads + h) * v_dim);
      }
    }
  });
}

}  // namespace dsa
#endif  // HWY_ONCE

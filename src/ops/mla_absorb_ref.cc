#include "core/error.h"
#include "ops/latent_cache.h"
#include "ops/mla_absorb.h"

namespace dsa {
void validate(const MlaAbsorbParams& p) {
  if (p.num_tokens < 0 || p.num_heads <= 0) {
    fail("mla absorb: bad shape tokens={} heads={}", p.num_tokens, p.num_heads);
  }
  if (p.num_tokens > 0 && !p.wkv_b) fail("mla absorb: no wkv_b weight");
}

void absorb_query_ref(const MlaAbsorbParams& p, const float* q_nope, float* q_abs) {
  validate(p);
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    for (int64_t h = 0; h < p.num_heads; ++h) {
      const float* q = q_nope + (t * p.num_heads + h) * kMlaNopeDim;
      const bf16* w_uk = p.wkv_b + h * kMlaWkvbRowsPerHead * kMlaLatentDim;
      float* out = q_abs + (t * p.num_heads + h) * kMlaKeyDim;
      for (int c = 0; c < kMlaLatentDim; ++c) {
        float sum = 0.0f;
        for (int d = 0; d < kMlaNopeDim; ++d)
          sum += q[d] * bf16_to_float(w_uk[d * kMlaLatentDim + c]);
        out[c] = round_to_bf16(sum);
      }
    }
  }
}

void project_output_ref(const MlaAbsorbParams& p, const float* o_lat, float* o) {
  validate(p);
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    for (int64_t h = 0; h < p.num_heads; ++h) {
      const float* lat = o_lat + (t * p.num_heads + h) * kMlaLatentDim;
      const bf16* w_uv = p.wkv_b + (h * kMlaWkvbRowsPerHead + kMlaNopeDim) * kMlaLatentDim;
      for (int d = 0; d < kMlaNopeDim; ++d) {
        float sum = 0.0f;
        for (int c = 0; c < kMlaLatentDim; ++c)
          sum += lat[c] * bf16_to_float(w_uv[d * kMlaLatentDim + c]);
        o[(t * p.num_heads + h) * kMlaNopeDim + d] = round_to_bf16(sum);
      }
    }
  }
}

}  // namespace dsa

#include "core/error.h"
#include "ops/attention/mla_absorb.h"

namespace dsa {
void validate(const MlaAbsorbParams& p) {
  if (p.num_tokens < 0 || p.num_heads <= 0) {
    fail("mla absorb: bad shape tokens={} heads={}", p.num_tokens, p.num_heads);
  }
  if (p.nope_dim <= 0 || p.v_dim <= 0 || p.latent_dim <= 0) {
    fail("mla absorb: nope_dim, v_dim and latent_dim must be positive, got {}, {} and {}",
         p.nope_dim, p.v_dim, p.latent_dim);
  }
  if (p.q_abs_stride < p.latent_dim) {
    fail("mla absorb: q_abs_stride {} is narrower than latent_dim {}", p.q_abs_stride,
         p.latent_dim);
  }
  if (p.num_tokens > 0 && !p.wkv_b) fail("mla absorb: no wkv_b weight");
}

void absorb_query_ref(const MlaAbsorbParams& p, const float* q_nope, float* q_abs) {
  validate(p);
  const int64_t rows_per_head = p.nope_dim + p.v_dim, latent = p.latent_dim;
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    for (int64_t h = 0; h < p.num_heads; ++h) {
      const float* q = q_nope + (t * p.num_heads + h) * p.nope_dim;
      const bf16* w_uk = p.wkv_b + h * rows_per_head * latent;
      float* out = q_abs + (t * p.num_heads + h) * p.q_abs_stride;
      for (int64_t c = 0; c < latent; ++c) {
        float sum = 0.0f;
        for (int64_t d = 0; d < p.nope_dim; ++d) sum += q[d] * bf16_to_float(w_uk[d * latent + c]);
        out[c] = round_to_bf16(sum);
      }
    }
  }
}

void project_output_ref(const MlaAbsorbParams& p, const float* o_lat, float* o) {
  validate(p);
  const int64_t rows_per_head = p.nope_dim + p.v_dim, latent = p.latent_dim;
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    for (int64_t h = 0; h < p.num_heads; ++h) {
      const float* lat = o_lat + (t * p.num_heads + h) * latent;
      const bf16* w_uv = p.wkv_b + (h * rows_per_head + p.nope_dim) * latent;
      for (int64_t d = 0; d < p.v_dim; ++d) {
        float sum = 0.0f;
        for (int64_t c = 0; c < latent; ++c) sum += lat[c] * bf16_to_float(w_uv[d * latent + c]);
        o[(t * p.num_heads + h) * p.v_dim + d] = round_to_bf16(sum);
      }
    }
  }
}

}  // namespace dsa

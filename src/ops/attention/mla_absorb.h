// Weight absorption for MLA's MQA mode (dsa-reference.md §5.5), with wkv_b dequantized to bf16
// (REF's weight_dequant) and viewed as [H, nope_dim + v_dim, latent_dim] (V3.2: [128, 256, 512]):
// rows 0 .. nope_dim-1 of a head are W_UK, rows nope_dim .. nope_dim+v_dim-1 are W_UV.
//   q_abs[t, h, c] = bf16( Σ_d q_nope[t, h, d] · W_UK[h, d, c] )     (einsum "bshd,hdc->bshc")
//   o[t, h, d]     = bf16( Σ_c o_lat[t, h, c] · W_UV[h, d, c] )      (einsum "bshc,hdc->bshd")
#pragma once

#include <cstdint>

#include "core/float_formats.h"
#include "core/thread_pool.h"

namespace dsa {

struct MlaAbsorbParams {
  const bf16* wkv_b = nullptr;  // [H, nope_dim + v_dim, latent_dim]
  int64_t num_tokens = 0;       // T
  int64_t num_heads = 0;        // H
  int64_t nope_dim = 0;         // qk_nope_head_dim (128 for V3.2)
  int64_t v_dim = 0;            // v_head_dim (128 for V3.2)
  int64_t latent_dim = 0;       // kv_lora_rank (512 for V3.2)
  int64_t q_abs_stride = 0;     // row width of q_abs, >= latent_dim: latent + rope (576 for V3.2)
};

// Throws dsa::Error on a bad shape or a missing weight.
void validate(const MlaAbsorbParams& params);

// q_nope [T, H, nope_dim] -> dims 0 .. latent_dim-1 of each row of q_abs [T, H, q_abs_stride] (the
// rest of a row, the q_pe part, is left for the caller to fill), so the result feeds sparse_mla
// directly.
void absorb_query_ref(const MlaAbsorbParams& params, const float* q_nope, float* q_abs);
void absorb_query(const MlaAbsorbParams& params, const float* q_nope, float* q_abs,
                  ThreadPool& pool);

// o_lat [T, H, latent_dim] -> o [T, H, v_dim].
void project_output_ref(const MlaAbsorbParams& params, const float* o_lat, float* o);
void project_output(const MlaAbsorbParams& params, const float* o_lat, float* o, ThreadPool& pool);

}  // namespace dsa

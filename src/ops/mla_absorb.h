// Weight absorption for MLA's MQA mode (dsa-reference.md §5.5), with wkv_b dequantized to bf16
// (REF's weight_dequant) and viewed as [H, 256, 512]: rows 0..127 of a head are W_UK, rows
// 128..255 are W_UV.
//   q_abs[t, h, c] = bf16( Σ_d q_nope[t, h, d] · W_UK[h, d, c] )     (einsum "bshd,hdc->bshc")
//   o[t, h, d]     = bf16( Σ_c o_lat[t, h, c] · W_UV[h, d, c] )      (einsum "bshc,hdc->bshd")
#pragma once

#include <cstdint>

#include "core/float_formats.h"
#include "core/thread_pool.h"

namespace dsa {

constexpr int kMlaNopeDim = 128;          // qk_nope_head_dim
constexpr int kMlaWkvbRowsPerHead = 256;  // qk_nope_head_dim + v_head_dim

struct MlaAbsorbParams {
  const bf16* wkv_b = nullptr;  // [H, 256, 512]
  int64_t num_tokens = 0;       // T
  int64_t num_heads = 0;        // H
};

// Throws dsa::Error on a bad shape or a missing weight.
void validate(const MlaAbsorbParams& params);

// q_nope [T, H, 128] -> dims 0..511 of each row of q_abs [T, H, 576] (the q_pe part, dims
// 512..575, is left for the caller to fill), so the result feeds sparse_mla directly.
void absorb_query_ref(const MlaAbsorbParams& params, const float* q_nope, float* q_abs);
void absorb_query(const MlaAbsorbParams& params, const float* q_nope, float* q_abs,
                  ThreadPool& pool);

// o_lat [T, H, 512] -> o [T, H, 128].
void project_output_ref(const MlaAbsorbParams& params, const float* o_lat, float* o);
void project_output(const MlaAbsorbParams& params, const float* o_lat, float* o, ThreadPool& pool);

}  // namespace dsa

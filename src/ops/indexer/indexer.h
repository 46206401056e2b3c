// The lightning indexer of DeepSeek Sparse Attention (dsa-reference.md §3).
//
// Keys (one per token, shared by all heads), after k = wk(x):
//   k = LayerNorm(k); RoPE "halves" on k[0:r]; Hadamard-128; act_quant ue8m0
//   -> 128 fp8 codes + 1 fp32 power-of-two scale per token: the key cache, 132 B per token.
// Queries, after q = wq_b(qr) (the GEMM is the caller's):
//   per head: RoPE "halves" on q[h, 0:r]; Hadamard-128; act_quant ue8m0 -> codes + q_scale;
//   head_weight[t, h] = weights_proj(x)[t, h] * H^-0.5 * q_scale[t, h] * 128^-0.5 (fp32, in
//   that order).
// Scores over the cache, in exactly REF's order (fp8_index):
//   I[t, s] = ( sum_h ReLU(q^[t, h] . k^[s]) * head_weight[t, h] ) * key_scale[s]
// where q^, k^ are the fp8 VALUES of the codes (the scales are folded in as above). Query row t
// sits at absolute position start_pos + t and sees keys s <= start_pos + t; the others get
// -inf (chunked prefill may start anywhere).
//
// r = qk_rope_head_dim (64 for V3.2), the width of the RoPE table: any even number up to 128. The
// head dim stays 128 (index_head_dim): REF's act_quant gives one query scale per 128 dims, and its
// head weights broadcast over exactly one scale per head.
#pragma once

#include <cstdint>

#include "core/float_formats.h"
#include "core/thread_pool.h"
#include "ops/rope/rope.h"

namespace dsa {

constexpr int kIndexerHeadDim = 128;  // index_head_dim (also the Hadamard and FP8 block size)
constexpr float kIndexerSoftmaxScale = 0.08838834764831845f;  // fl32(128 ** -0.5)

struct IndexerKeyParams {
  const bf16* k = nullptr;             // [T, 128]  wk(x)
  const float* norm_weight = nullptr;  // [128]     k_norm.weight
  const float* norm_bias = nullptr;    // [128]     k_norm.bias
  const RopeTable* rope = nullptr;     // r-dim table (r even, <= 128)
  int64_t tokens = 0;                  // T
  int64_t start_pos = 0;               // absolute position of token 0
  fp8_e4m3* key_codes = nullptr;       // [S, 128]  rows start_pos .. start_pos+T-1 are written
  float* key_scales = nullptr;         // [S]       same rows
  int64_t cache_capacity = 0;          // S
};

struct IndexerQueryParams {
  const bf16* q = nullptr;              // [T, H, 128]  wq_b(qr)
  const float* weights_proj = nullptr;  // [T, H]       weights_proj(x.float()), fp32
  const RopeTable* rope = nullptr;      // r-dim table (r even, <= 128)
  int64_t tokens = 0;                   // T
  int64_t heads = 64;                   // H (index_n_heads)
  int64_t start_pos = 0;                // absolute position of token 0
  fp8_e4m3* q_codes = nullptr;          // [T, H, 128]
  float* head_weights = nullptr;        // [T, H]  weights_proj * H^-0.5 * q_scale * 128^-0.5
};

struct IndexerScoresParams {
  const fp8_e4m3* q_codes = nullptr;    // [T, H, 128]
  const float* head_weights = nullptr;  // [T, H]
  const fp8_e4m3* key_codes = nullptr;  // [S, 128]
  const float* key_scales = nullptr;    // [S]
  float* scores = nullptr;              // [T, S]; -inf where s > start_pos + t
  int64_t tokens = 0;                   // T
  int64_t heads = 64;                   // H
  int64_t keys = 0;                     // S (= start_pos + T for a causal chunk)
  int64_t start_pos = 0;                // absolute position of query row 0
  // Use AVX512-BF16 (vdpbf16ps) where the CPU has it; false forces the Highway fp32 path.
  bool allow_avx512bf16 = true;
};

// Throw dsa::Error naming the bad field.
void validate(const IndexerKeyParams& params);
void validate(const IndexerQueryParams& params);
void validate(const IndexerScoresParams& params);

// Scalar references: compositions of the reference ops plus act_quant, and fp8_index's loops.
void indexer_keys_reference(const IndexerKeyParams& params);
void indexer_queries_reference(const IndexerQueryParams& params);
void indexer_scores_reference(const IndexerScoresParams& params);

// Fast versions over the pool's threads. Keys and queries compose the fast ops (bf16 results
// within one ulp of the reference, so an fp8 code may land one step away). Scores use bf16 dot
// products (vdpbf16ps) on CPUs with AVX512-BF16, else fp32 FMA on Highway vectors: fp8 values are
// exact in bf16 and the products exact in fp32, so only the summation order differs from the
// reference. Codes 0x7F/0xFF (fp8 NaN, never produced by act_quant) are not supported.
void indexer_keys(const IndexerKeyParams& params, ThreadPool& pool);
void indexer_queries(const IndexerQueryParams& params, ThreadPool& pool);
void indexer_scores(const IndexerScoresParams& params, ThreadPool& pool);

}  // namespace dsa

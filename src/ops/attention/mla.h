// MLA attention (dsa-reference.md §5). Two modes:
//
// Absorbed (MQA) mode over the latent cache (§5.5, FlashMLA's sparse kernels): every head of a
// query token attends to the same keys [latent | rope] (cache.dims.key() wide, 576 for V3.2) and
// reads the latent (cache.dims.latent, 512 for V3.2) as its value; W_UK is folded into the query
// and W_UV is applied afterwards (mla_absorb.h).
//   scores[h, j] = (q_abs[h] · latent_j + q_pe[h] · rope_j) * softmax_scale
//   p = softmax over the valid keys; out[h] = Σ_j p[h, j] latent_j; lse[h] = log Σ_j exp(scores)
// Sparse: each query row lists its keys (top-k indices, -1 = no key). Dense: keys 0..n-1.
//
// MHA mode for short prefill (§5.4): per-head q, k [qk_dim] and v [v_dim], causal (192 and 128 for
// V3.2).
//
// Rounding. The references follow REF's bf16 tensors: q·latent and q_pe·rope are separate bf16
// einsums, their sum and the scaling round to bf16, softmax takes and gives bf16, the output is
// bf16. The fast versions keep scores and probabilities in fp32 and round only the output.
//
// Rows without a valid key (all indices -1) give out = 0 and lse = +inf (FlashMLA's rule).
// Duplicate indices are separate keys, as in FlashMLA (REF's mask would count them once); the
// top-k op never produces duplicates, so the two agree on real inputs.
#pragma once

#include <cstdint>

#include "core/thread_pool.h"
#include "ops/attention/latent_cache.h"

namespace dsa {

// The V3.2 softmax scale: 192^-0.5 * mscale^2 with mscale = 0.1 * ln(40) + 1 (§5.2). Other configs
// pass their own (qk_nope_head_dim + qk_rope_head_dim)^-0.5 * mscale^2.
float mla_softmax_scale();

struct SparseMlaParams {
  const float* q = nullptr;  // [T, H, dims.key()] absorbed queries [q_abs | q_pe], bf16 values
  LatentCacheView cache;     // keys and values; its dims give every width here
  const int32_t* indices = nullptr;  // [T, topk] key positions in the cache; -1 = no key
  float* out = nullptr;              // [T, H, dims.latent] latent output o_lat (before W_UV)
  float* lse = nullptr;              // [T, H] natural log-sum-exp of the scaled scores
  int64_t num_queries = 0;           // T (1 for decode)
  int64_t num_heads = 0;             // H (128 for V3.2)
  int64_t topk = 0;
  float softmax_scale = 0.0f;
  bool allow_avx512bf16 = true;  // q·k with vdpbf16ps where the CPU has it; false: Highway fp32
};

struct DenseMlaParams {
  const float* q = nullptr;  // [H, dims.key()] one decode token, absorbed, bf16 values
  LatentCacheView cache;     // keys 0 .. cache.num_tokens-1 are all attended; dims as above
  float* out = nullptr;      // [H, dims.latent]
  float* lse = nullptr;      // [H]
  int64_t num_heads = 0;
  float softmax_scale = 0.0f;
  bool allow_avx512bf16 = true;  // q·k with vdpbf16ps where the CPU has it; false: Highway fp32
};

// Causal MHA over T new queries whose keys are the last T of S keys: query t sees keys
// s <= t + (S - T) (S == T is REF's prefill from position 0). With `indices` (DSA in MHA mode,
// REF's index_mask + causal mask) query t sees only the causal keys that its row lists: a key
// listed twice counts once (a mask), -1 slots are empty, and a row left with no key gives out = 0.
// The fast version still scores every causal key of a 64-key chunk that any of its rows selects
// (the mask is applied to the scores), so it costs up to dense attention.
struct MhaPrefillParams {
  const float* q = nullptr;  // [T, H, qk_dim] [q_nope | q_pe], bf16 values
  const float* k = nullptr;  // [S, H, qk_dim] [k_nope | k_pe]
  const float* v = nullptr;  // [S, H, v_dim]
  float* out = nullptr;      // [T, H, v_dim]
  int64_t num_queries = 0;   // T
  int64_t num_keys = 0;      // S >= T
  int64_t num_heads = 0;     // H
  int64_t qk_dim = 0;        // qk_nope_head_dim + qk_rope_head_dim (192 for V3.2)
  int64_t v_dim = 0;         // v_head_dim (128 for V3.2)
  float softmax_scale = 0.0f;
  const int32_t* indices = nullptr;  // optional [T, topk] key positions 0 .. S-1, -1 = no key
  int64_t topk = 0;                  // slots per row of `indices`
};

// Each throws dsa::Error on bad shapes or out-of-range indices (naming the row and slot).
void sparse_mla_ref(const SparseMlaParams& params);
void sparse_mla(const SparseMlaParams& params, ThreadPool& pool);
void dense_mla_ref(const DenseMlaParams& params);
void dense_mla(const DenseMlaParams& params, ThreadPool& pool);
void mha_prefill_ref(const MhaPrefillParams& params);
void mha_prefill(const MhaPrefillParams& params, ThreadPool& pool);

// Shared by the reference and fast files.
void validate(const SparseMlaParams& params);
void validate(const DenseMlaParams& params);
void validate(const MhaPrefillParams& params);

}  // namespace dsa

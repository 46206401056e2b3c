// MLA with DeepSeek Sparse Attention for one layer (dsa-reference.md §3-§5), over the rows of one
// or more sequences: queries, the FP8 latent written to each cache, the lightning indexer and
// top-k, then attention in the kernel the mode calls for (forward.h), and the output projection.
// The projections and the absorption of wkv_b run once over all rows; positions, caches, the
// indexer's scores and attention are per sequence.
#include <algorithm>
#include <functional>
#include <vector>

#include "core/error.h"
#include "model/forward_internal.h"
#include "ops/attention/mla.h"
#include "ops/attention/mla_absorb.h"
#include "ops/indexer/indexer.h"
#include "ops/norms/norms.h"
#include "ops/topk/topk.h"

namespace dsa::forward_internal {
namespace {

// The shapes of one sequence's part of the call: T rows at positions P .. P+T-1.
struct Dims {
  int64_t T, P, H, nope, rope, qk, v, latent;
};

Dims dims_of(const Step& s, const SequenceRows& seq) {
  const ModelConfig& c = s.config;
  return {.T = seq.tokens,
          .P = seq.start,
          .H = c.num_attention_heads,
          .nope = c.qk_nope_head_dim,
          .rope = c.qk_rope_head_dim,
          .qk = c.qk_head_dim(),
          .v = c.v_head_dim,
          .latent = c.kv_lora_rank};
}

// Runs body(i, pool) for every sequence i. Decode rows (one token each) are spread over the
// pool's threads, each body on a serial pool: a batch of them is many small kernel calls, which
// cost more to dispatch over the pool one by one than they compute. Longer chunks run one after
// another with the whole pool. The kernels give the same results on any pool, so the choice
// changes no number.
void for_each_sequence(const Step& s, const std::function<void(size_t, ThreadPool&)>& body) {
  std::vector<size_t> rows, chunks;
  for (size_t i = 0; i < s.sequences.size(); ++i) {
    (s.sequences[i].tokens == 1 ? rows : chunks).push_back(i);
  }
  if (rows.size() > 1 && s.pool.size() > 1) {
    s.pool.parallel_for(int64_t(rows.size()), 1, [&](int64_t begin, int64_t end) {
      ThreadPool serial(1);
      for (int64_t j = begin; j < end; ++j) body(rows[size_t(j)], serial);
    });
  } else {
    for (const size_t i : rows) body(i, s.pool);
  }
  for (const size_t i : chunks) body(i, s.pool);
}

// RoPE (interleaved, MLA's layout) on the last `rope` dims of rows of `row` floats, each
// sequence's rows at its own positions.
void rope_interleaved(const Step& s, float* x, int64_t heads, int64_t row, int64_t offset) {
  const size_t n = size_t(s.tokens * heads * row);
  std::vector<bf16> b = to_bf16(x, n);
  for_each_sequence(s, [&](size_t i, ThreadPool& pool) {
    const SequenceRows& seq = s.sequences[i];
    apply_rope({.x = b.data() + seq.row * heads * row,
                .tokens = seq.tokens,
                .heads = heads,
                .row = row,
                .offset = offset,
                .start_pos = seq.start,
                .layout = RopeLayout::kInterleaved,
                .table = &s.rope},
               pool);
  });
  to_float(b.data(), n, x);
}

// q [rows, H, nope + rope] after RoPE; q_latent [rows, q_lora_rank] (empty without query
// compression).
void project_queries(const Step& s, const AttentionWeights& w, const float* x,
                     std::vector<float>& q_latent, std::vector<float>& q) {
  const ModelConfig& c = s.config;
  const int64_t R = s.tokens, H = c.num_attention_heads, qk = c.qk_head_dim();
  q.resize(size_t(R * H * qk));
  if (w.wq_a.data) {
    q_latent.resize(size_t(R * w.wq_a.out_features));
    linear(x, R, w.wq_a, q_latent.data(), s.pool);
    rms_norm_rows(q_latent.data(), R, w.q_norm, s.pool);
    s.emit("q_latent", q_latent.data(), {R, w.wq_a.out_features});
    linear(q_latent.data(), R, w.wq_b, q.data(), s.pool);
  } else {
    linear(x, R, w.wq_b, q.data(), s.pool);
  }
  rope_interleaved(s, q.data(), H, qk, c.qk_nope_head_dim);
  s.emit("q", q.data(), {R, H, qk});
}

// wkv_a, kv_norm on the latent, RoPE on k_pe, then the FP8 latent and bf16 k_pe into each
// sequence's cache at its positions (the FP8 round trip of dsa-reference §5.3 happens in the
// packing).
void write_latents(const Step& s, int64_t layer, const AttentionWeights& w, const float* x) {
  const ModelConfig& c = s.config;
  const int64_t R = s.tokens, latent_dim = c.kv_lora_rank, rope_dim = c.qk_rope_head_dim;
  const int64_t row = latent_dim + rope_dim;
  std::vector<float> kv(size_t(R * row));
  linear(x, R, w.wkv_a, kv.data(), s.pool);
  rope_interleaved(s, kv.data(), 1, row, latent_dim);
  std::vector<float> latent(size_t(R * latent_dim));
  for (int64_t r = 0; r < R; ++r) {
    std::copy_n(kv.data() + r * row, latent_dim, latent.data() + r * latent_dim);
  }
  rms_norm_rows(latent.data(), R, w.kv_norm, s.pool);
  for (const SequenceRows& seq : s.sequences) {
    for (int64_t t = 0; t < seq.tokens; ++t) {
      const int64_t r = seq.row + t;
      pack_latent_token({latent.data() + r * latent_dim, size_t(latent_dim)},
                        {kv.data() + r * row + latent_dim, size_t(rope_dim)},
                        LatentCacheFormat::kFp8, ScaleFormat::kUe8m0,
                        seq.cache->latent_token(layer, seq.start + t));
    }
  }
  if (s.dump) {  // a single sequence (Model::forward_batch)
    const SequenceRows& seq = s.sequences[0];
    const LatentCacheView view = seq.cache->latent(layer, seq.start + R);
    std::vector<float> key(static_cast<size_t>(row));
    std::vector<float> cached(static_cast<size_t>(R * latent_dim));
    std::vector<float> k_pe(static_cast<size_t>(R * rope_dim));
    for (int64_t t = 0; t < R; ++t) {
      unpack_latent_token(view.token(seq.start + t), view.format, view.dims, key);
      std::copy_n(key.data(), latent_dim, cached.data() + t * latent_dim);
      std::copy_n(key.data() + latent_dim, rope_dim, k_pe.data() + t * rope_dim);
    }
    s.emit("kv_latent", cached.data(), {R, latent_dim});
    s.emit("k_pe", k_pe.data(), {R, rope_dim});
  }
}

// The lightning indexer: writes each sequence's key-cache rows of the layer, and for the
// sequences with `select` set, scores every causal key and returns their top-k indices [T,
// index_topk] (ascending, -1 padded); the others get an empty list.
std::vector<std::vector<int32_t>> run_indexer(const Step& s, int64_t layer, const IndexerWeights& w,
                                              const float* x, const std::vector<float>& q_latent,
                                              const std::vector<bool>& select) {
  const ModelConfig& c = s.config;
  const int64_t R = s.tokens;
  const int64_t heads = c.index_n_heads;
  const int64_t dim = c.index_head_dim;
  std::vector<float> k(size_t(R * dim));
  linear(x, R, w.wk, k.data(), s.pool);
  const std::vector<bf16> k_bf16 = to_bf16(k.data(), k.size());
  for_each_sequence(s, [&](size_t i, ThreadPool& pool) {
    const SequenceRows& seq = s.sequences[i];
    indexer_keys({.k = k_bf16.data() + seq.row * dim,
                  .norm_weight = w.k_norm_weight.data(),
                  .norm_bias = w.k_norm_bias.data(),
                  .rope = &s.rope,
                  .tokens = seq.tokens,
                  .start_pos = seq.start,
                  .key_codes = seq.cache->index_codes(layer),
                  .key_scales = seq.cache->index_scales(layer),
                  .cache_capacity = seq.cache->capacity()},
                 pool);
  });
  if (s.dump) {  // a single sequence
    const SequenceRows& seq = s.sequences[0];
    std::vector<float> key(size_t(R * dim));
    for (int64_t t = 0; t < R; ++t) {
      const float scale = seq.cache->index_scales(layer)[seq.start + t];
      for (int64_t i = 0; i < dim; ++i) {
        key[t * dim + i] =
            fp8_to_float(seq.cache->index_codes(layer)[(seq.start + t) * dim + i]) * scale;
      }
    }
    s.emit("indexer.key", key.data(), {R, dim});
  }
  std::vector<std::vector<int32_t>> indices(s.sequences.size());
  if (std::find(select.begin(), select.end(), true) == select.end()) return indices;

  // Queries and head weights for every row (the projections read their weights once); the
  // rows of sequences that do not select are not used further.
  std::vector<float> q(size_t(R * heads * dim));
  linear(q_latent.data(), R, w.wq_b, q.data(), s.pool);
  const std::vector<bf16> q_bf16 = to_bf16(q.data(), q.size());
  std::vector<float> weights_proj(size_t(R * heads));
  linear_fp32(x, R, w.weights_proj, weights_proj.data(), s.pool);
  std::vector<fp8_e4m3> q_codes(q.size());
  std::vector<float> head_weights(size_t(R * heads));
  for_each_sequence(s, [&](size_t i, ThreadPool& pool) {
    if (!select[i]) return;
    const SequenceRows& seq = s.sequences[i];
    indexer_queries({.q = q_bf16.data() + seq.row * heads * dim,
                     .weights_proj = weights_proj.data() + seq.row * heads,
                     .rope = &s.rope,
                     .tokens = seq.tokens,
                     .heads = heads,
                     .start_pos = seq.start,
                     .q_codes = q_codes.data() + seq.row * heads * dim,
                     .head_weights = head_weights.data() + seq.row * heads},
                    pool);
    const int64_t keys = seq.start + seq.tokens;
    std::vector<float> scores(size_t(seq.tokens * keys));
    indexer_scores({.q_codes = q_codes.data() + seq.row * heads * dim,
                    .head_weights = head_weights.data() + seq.row * heads,
                    .key_codes = seq.cache->index_codes(layer),
                    .key_scales = seq.cache->index_scales(layer),
                    .scores = scores.data(),
                    .tokens = seq.tokens,
                    .heads = heads,
                    .keys = keys,
                    .start_pos = seq.start},
                   pool);
    indices[i].resize(size_t(seq.tokens * c.index_topk));
    topk_select({.scores = scores.data(),
                 .indices = indices[i].data(),
                 .rows = seq.tokens,
                 .cols = keys,
                 .k = c.index_topk},
                pool);
    s.emit("indexer.weights", head_weights.data(), {R, heads});
    s.emit("indexer.scores", scores.data(), {R, keys});
    s.emit("indexer.topk", indices[i].data(), {R, c.index_topk});
  });
  return indices;
}

// Absorbed (MQA) attention over the latent caches for the sequences listed in `absorbed`: each
// sparse over its `indices` [T, topk], or (indices empty) dense over every causal key. The
// absorption of wkv_b into queries and outputs runs once over all their rows. Writes their rows
// of o [rows, H, v].
void absorbed_attention(const Step& s, int64_t layer, const AttentionWeights& w,
                        const std::vector<float>& q,
                        const std::vector<std::vector<int32_t>>& indices,
                        const std::vector<size_t>& absorbed, float* o) {
  const Dims d = dims_of(s, s.sequences[absorbed[0]]);  // the shapes shared by all
  const int64_t key = d.latent + d.rope;
  // The sequences' rows packed one after another: the identity when all of them are here.
  std::vector<int64_t> packed_row(absorbed.size());
  int64_t A = 0;
  for (size_t i = 0; i < absorbed.size(); ++i) {
    packed_row[i] = A;
    A += s.sequences[absorbed[i]].tokens;
  }
  std::vector<float> q_nope(size_t(A * d.H * d.nope));
  std::vector<float> q_abs(size_t(A * d.H * key));
  for (size_t i = 0; i < absorbed.size(); ++i) {
    const SequenceRows& seq = s.sequences[absorbed[i]];
    for (int64_t r = 0; r < seq.tokens * d.H; ++r) {
      const float* src = q.data() + (seq.row * d.H + r) * d.qk;
      const int64_t dst = packed_row[i] * d.H + r;
      std::copy_n(src, d.nope, q_nope.data() + dst * d.nope);
      std::copy_n(src + d.nope, d.rope, q_abs.data() + dst * key + d.latent);
    }
  }
  const MlaAbsorbParams absorb{.wkv_b = w.wkv_b_bf16.data(),
                               .num_tokens = A,
                               .num_heads = d.H,
                               .nope_dim = d.nope,
                               .v_dim = d.v,
                               .latent_dim = d.latent,
                               .q_abs_stride = key};
  if (s.reference_attention) {
    absorb_query_ref(absorb, q_nope.data(), q_abs.data());
  } else {
    absorb_query(absorb, q_nope.data(), q_abs.data(), s.pool);
  }
  std::vector<float> o_latent(size_t(A * d.H * d.latent));
  std::vector<float> lse(size_t(A * d.H));
  std::vector<size_t> packed_index(s.sequences.size());
  for (size_t i = 0; i < absorbed.size(); ++i) packed_index[absorbed[i]] = i;
  std::vector<bool> is_absorbed(s.sequences.size());
  for (const size_t i : absorbed) is_absorbed[i] = true;
  for_each_sequence(s, [&](size_t index, ThreadPool& pool) {
    if (!is_absorbed[index]) return;
    const size_t i = packed_index[index];
    const SequenceRows& seq = s.sequences[index];
    const int64_t P = seq.start, T = seq.tokens, row = packed_row[i];
    const LatentCacheView cache = seq.cache->latent(layer, P + T);
    const std::vector<int32_t>& selected = indices[index];
    if (!selected.empty()) {
      const SparseMlaParams params{.q = q_abs.data() + row * d.H * key,
                                   .cache = cache,
                                   .indices = selected.data(),
                                   .out = o_latent.data() + row * d.H * d.latent,
                                   .lse = lse.data() + row * d.H,
                                   .num_queries = T,
                                   .num_heads = d.H,
                                   .topk = s.config.index_topk,
                                   .softmax_scale = s.softmax_scale};
      s.reference_attention ? sparse_mla_ref(params) : sparse_mla(params, pool);
      return;
    }
    for (int64_t t = 0; t < T; ++t) {  // row t sees the causal keys 0 .. P+t
      LatentCacheView causal = cache;
      causal.num_tokens = P + t + 1;
      const DenseMlaParams params{.q = q_abs.data() + (row + t) * d.H * key,
                                  .cache = causal,
                                  .out = o_latent.data() + (row + t) * d.H * d.latent,
                                  .lse = lse.data() + (row + t) * d.H,
                                  .num_heads = d.H,
                                  .softmax_scale = s.softmax_scale};
      s.reference_attention ? dense_mla_ref(params) : dense_mla(params, pool);
    }
  });
  const bool identity = A == s.tokens;  // every sequence, in order
  std::vector<float> packed_o(identity ? 0 : size_t(A * d.H * d.v));
  float* out = identity ? o : packed_o.data();
  if (s.reference_attention) {
    project_output_ref(absorb, o_latent.data(), out);
  } else {
    project_output(absorb, o_latent.data(), out, s.pool);
  }
  if (identity) return;
  for (size_t i = 0; i < absorbed.size(); ++i) {
    const SequenceRows& seq = s.sequences[absorbed[i]];
    std::copy_n(packed_o.data() + packed_row[i] * d.H * d.v, seq.tokens * d.H * d.v,
                o + seq.row * d.H * d.v);
  }
}

// REF's prefill ("MHA mode", §5.4) for one sequence over its cached keys 0 .. P+T-1: k_nope and
// v from wkv_b on the cached (FP8 round-tripped) latents, k_pe shared by the heads; each row
// attends to its causal keys, or to those of `indices` [T, topk] when given. Writes the
// sequence's rows of o [rows, H, v].
void mha_attention(const Step& s, int64_t layer, const AttentionWeights& w, const SequenceRows& seq,
                   const std::vector<float>& q, const std::vector<int32_t>& indices, float* o) {
  const Dims d = dims_of(s, seq);
  const int64_t topk = indices.empty() ? 0 : s.config.index_topk;
  const int64_t S = d.P + d.T;
  const LatentCacheView cache = seq.cache->latent(layer, S);
  std::vector<float> latent(size_t(S * d.latent)), k_pe(size_t(S * d.rope));
  std::vector<float> key(size_t(d.latent + d.rope));
  for (int64_t j = 0; j < S; ++j) {
    unpack_latent_token(cache.token(j), cache.format, cache.dims, key);
    std::copy_n(key.data(), d.latent, latent.data() + j * d.latent);
    std::copy_n(key.data() + d.latent, d.rope, k_pe.data() + j * d.rope);
  }
  const int64_t per_head = d.nope + d.v;
  std::vector<float> kv(size_t(S * d.H * per_head));
  linear(latent.data(), S, w.wkv_b, kv.data(), s.pool);
  std::vector<float> k(size_t(S * d.H * d.qk)), v(size_t(S * d.H * d.v));
  for (int64_t j = 0; j < S; ++j) {
    for (int64_t h = 0; h < d.H; ++h) {
      const float* src = kv.data() + (j * d.H + h) * per_head;
      float* kr = k.data() + (j * d.H + h) * d.qk;
      std::copy_n(src, d.nope, kr);
      std::copy_n(k_pe.data() + j * d.rope, d.rope, kr + d.nope);
      std::copy_n(src + d.nope, d.v, v.data() + (j * d.H + h) * d.v);
    }
  }
  const MhaPrefillParams params{.q = q.data() + seq.row * d.H * d.qk,
                                .k = k.data(),
                                .v = v.data(),
                                .out = o + seq.row * d.H * d.v,
                                .num_queries = d.T,
                                .num_keys = S,
                                .num_heads = d.H,
                                .qk_dim = d.qk,
                                .v_dim = d.v,
                                .softmax_scale = s.softmax_scale,
                                .indices = indices.empty() ? nullptr : indices.data(),
                                .topk = topk};
  s.reference_attention ? mha_prefill_ref(params) : mha_prefill(params, s.pool);
}

// Whether a chunk runs in MHA mode rather than the absorbed (MQA) mode. Decode steps are always
// absorbed (REF's decode path). For prefill chunks the multiply-adds decide: MHA expands every
// cached key through wkv_b once per chunk (S x latent x H x (nope + v)) and then attends with
// qk + v wide heads; the absorbed mode folds wkv_b into each query and output (T x H x latent x
// (nope + v)) and attends with 2 x latent + rope wide heads. Long prompts from position 0 favour
// MHA, short chunks deep into a long context favour the absorbed mode. The MHA kernel applies a
// top-k as a mask over the causal keys (mla.h), so it scans them all; the absorbed kernel reads
// only the selected ones — with a top-k much smaller than the context, the absorbed mode wins.
bool use_mha(PrefillKernel kernel, const Dims& d, int64_t topk) {
  if (d.T == 1) return false;
  if (kernel != PrefillKernel::kAuto) return kernel == PrefillKernel::kMha;
  const double S = double(d.P + d.T);
  const double causal_keys = double(d.P) + 0.5 * double(d.T + 1);  // per row, on average
  const double absorbed_keys = topk > 0 ? std::min(double(topk), causal_keys) : causal_keys;
  const double heads = double(d.T) * double(d.H);
  const double mha = S * double(d.latent) * double(d.H) * double(d.nope + d.v) +
                     heads * causal_keys * double(d.qk + d.v);
  const double absorbed = heads * double(d.latent) * double(d.nope + d.v) +
                          heads * absorbed_keys * double(2 * d.latent + d.rope);
  return mha < absorbed;
}

}  // namespace

void attention_block(const Step& s, int64_t layer, const float* x, float* out) {
  const ModelConfig& c = s.config;
  const AttentionWeights& w = s.weights.layers[size_t(layer)].attn;
  const int64_t R = s.tokens, H = c.num_attention_heads, v_dim = c.v_head_dim;

  std::vector<float> q_latent, q;
  project_queries(s, w, x, q_latent, q);
  write_latents(s, layer, w, x);

  // Rows with at most index_topk causal keys attend to all of them either way (forward.h).
  std::vector<bool> select(s.sequences.size());
  for (size_t i = 0; i < s.sequences.size(); ++i) {
    const SequenceRows& seq = s.sequences[i];
    select[i] = w.indexer &&
                (s.attention == AttentionMode::kSparse ||
                 (s.attention == AttentionMode::kAuto && seq.start + seq.tokens > c.index_topk));
  }
  std::vector<std::vector<int32_t>> indices(s.sequences.size());
  if (w.indexer) indices = run_indexer(s, layer, *w.indexer, x, q_latent, select);

  std::vector<float> o(size_t(R * H * v_dim));
  std::vector<size_t> absorbed;
  for (size_t i = 0; i < s.sequences.size(); ++i) {
    const Dims d = dims_of(s, s.sequences[i]);
    if (use_mha(s.prefill_kernel, d, select[i] ? c.index_topk : 0)) {
      mha_attention(s, layer, w, s.sequences[i], q, indices[i], o.data());
    } else {
      absorbed.push_back(i);
    }
  }
  if (!absorbed.empty()) absorbed_attention(s, layer, w, q, indices, absorbed, o.data());
  s.emit("attn_output", o.data(), {R, H, v_dim});
  linear(o.data(), R, w.wo, out, s.pool);
  s.emit("attn", out, {R, c.hidden_size});
}

}  // namespace dsa::forward_internal

// The step: embedding, decoder layers (pre-norm residual blocks), final norm and the fused LM
// head + cross-entropy, then the same in reverse. Each block keeps what its backward reads.
#include "model/train_graph.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "model/train_internal.h"
#include "ops/embedding/embedding_train.h"
#include "ops/gemm/linear_train.h"
#include "ops/loss/cross_entropy.h"
#include "ops/norms/norms_train.h"
#include "ops/rope/rope_train.h"

namespace dsa {
namespace train_internal {

float* Context::grad(const std::string& name) const {
  if (!grads) return nullptr;
  const TrainTensor& t = grads->layout().at(name);
  if (!t.trainable) return nullptr;
  return grads->data(name);
}

std::string layer_prefix(int64_t layer) { return "model.layers." + std::to_string(layer) + "."; }

namespace {

MatmulPrecision matmul_precision(const Context& c, ProductPrecision precision) {
  return precision == ProductPrecision::kFp32 ? MatmulPrecision::kFp32 : c.options.matmul;
}

}  // namespace

void linear(const Context& c, const float* x, int64_t m, const float* w, int64_t n, int64_t k,
            float* y, ProductPrecision precision) {
  linear_train_forward(LinearTrain<float>{.x = x,
                                          .weight = w,
                                          .y = y,
                                          .m = m,
                                          .n = n,
                                          .k = k,
                                          .precision = matmul_precision(c, precision)},
                       c.pool);
}

void linear_back(const Context& c, const float* x, int64_t m, const float* w, int64_t n, int64_t k,
                 const float* dy, float* dx, float* dw, ProductPrecision precision) {
  if (!dx && !dw) return;
  linear_backward(LinearTrain<float>{.x = x,
                                     .weight = w,
                                     .dy = dy,
                                     .dx = dx,
                                     .dweight = dw,
                                     .m = m,
                                     .n = n,
                                     .k = k,
                                     .precision = matmul_precision(c, precision)},
                  c.pool);
}

void rms_norm(const Context& c, const float* x, int64_t m, int64_t d, const float* w, float* y,
              float* rstd) {
  rms_norm_train_forward(RmsNormTrain<float>{.x = x,
                                             .weight = w,
                                             .y = y,
                                             .rstd = const_cast<float*>(rstd),  // read only
                                             .tokens = m,
                                             .dim = d,
                                             .eps = float(c.config.rms_norm_eps)},
                         c.pool);
}

void rms_norm_back(const Context& c, const float* x, int64_t m, int64_t d, const float* w,
                   const float* rstd, const float* dy, float* dx, float* dw) {
  rms_norm_backward(RmsNormTrain<float>{.x = x,
                                        .weight = w,
                                        .rstd = const_cast<float*>(rstd),  // read only
                                        .dy = dy,
                                        .dx = dx,
                                        .dweight = dw,
                                        .tokens = m,
                                        .dim = d,
                                        .eps = float(c.config.rms_norm_eps)},
                    c.pool);
}

void rope(const Context& c, float* x, int64_t heads, int64_t row, int64_t offset, RopeLayout layout,
          bool backward) {
  const int64_t T = c.seq_len;
  for (int64_t b = 0; b < c.sequences; ++b) {
    const RopeTrain<float> p{.x = x + b * T * heads * row,
                             .tokens = T,
                             .heads = heads,
                             .row = row,
                             .offset = offset,
                             .start_pos = 0,
                             .layout = layout,
                             .table = &c.rope};
    backward ? rope_backward(p, c.pool) : rope_train_forward(p, c.pool);
  }
}

}  // namespace train_internal

using namespace train_internal;

namespace {

void check_batch(const ModelConfig& config, const TrainBatch& batch,
                 const TrainStepOptions& options) {
  if (batch.sequences <= 0 || batch.seq_len <= 0) {
    fail("train step: need at least one sequence of at least one token, got {} x {}",
         batch.sequences, batch.seq_len);
  }
  const size_t n = size_t(batch.sequences * batch.seq_len);
  if (batch.tokens.size() != n) {
    fail("train step: {} tokens given for {} sequences of {}", batch.tokens.size(), batch.sequences,
         batch.seq_len);
  }
  if (batch.seq_len > config.max_position_embeddings) {
    fail("sequence length {} is beyond the model's max_position_embeddings ({})", batch.seq_len,
         config.max_position_embeddings);
  }
  for (size_t i = 0; i < n; ++i) {
    if (batch.tokens[i] < 0 || batch.tokens[i] >= config.vocab_size) {
      fail("token {} at position {} of sequence {} is outside the vocabulary (0 .. {})",
           batch.tokens[i], int64_t(i) % batch.seq_len, int64_t(i) / batch.seq_len,
           config.vocab_size - 1);
    }
  }
  if (!batch.targets.empty() && batch.targets.size() != n) {
    fail("train step: {} targets given for {} tokens", batch.targets.size(), n);
  }
  if (options.attention != AttentionMode::kDense && options.attention != AttentionMode::kSparse) {
    fail("train step: attention must be dense or sparse");
  }
  if ((options.attention == AttentionMode::kSparse || options.indexer_loss ||
       options.record_indexer_recall) &&
      !config.has_indexer()) {
    fail(
        "sparse attention and the indexer loss need the lightning indexer, which this {} model "
        "does not have",
        architecture_name(config.architecture));
  }
  if (options.record_indexer_recall && options.attention != AttentionMode::kDense) {
    fail("train step: the indexer's recall is measured against dense attention (attention dense)");
  }
}

// Rows of logits the LM head holds at once: each chunk reads and writes all of the head's
// weight gradient [V, D], so larger chunks make fewer passes over it (at V = 129280, D = 512 the
// 64-row default swept 17 GB per 2048 tokens); about 32 M floats (128 MiB) of logits at most.
// perf/train_bench.cc's GEMM breakdown uses the same rule.
int64_t lm_head_chunk_rows(int64_t vocab) {
  return std::clamp<int64_t>((int64_t(32) << 20) / vocab / 16 * 16, 64, 1024);
}

std::vector<int32_t> next_token_targets(const TrainBatch& batch) {
  if (!batch.targets.empty()) return {batch.targets.begin(), batch.targets.end()};
  const int64_t T = batch.seq_len;
  std::vector<int32_t> targets(size_t(batch.sequences * T), -1);
  for (int64_t b = 0; b < batch.sequences; ++b) {
    for (int64_t t = 0; t + 1 < T; ++t) targets[b * T + t] = batch.tokens[b * T + t + 1];
  }
  return targets;
}

// a[i] += b[i] for i < n, on the pool.
void add_to(ThreadPool& pool, float* a, const float* b, int64_t n) {
  pool.parallel_for(n, 16384, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) a[i] += b[i];
  });
}

struct LayerSaved {
  Buffer h_in, rstd_attn, a;  // residual stream entering the layer, attn_norm output
  Buffer h_mid, rstd_ffn, f;  // after attention, ffn_norm output
  AttentionSaved attention;
  FfnSaved ffn;
};

// Decoder layer l on the residual stream h [N, D] (updated in place), keeping what its backward
// reads in `s`; `branch` is [N, D] scratch.
void layer_forward(const Context& c, int64_t l, Buffer& h, LayerSaved& s, Buffer& branch,
                   TrainStepResult& result) {
  const int64_t N = c.rows(), D = c.config.hidden_size;
  const std::string p = layer_prefix(l);
  s.h_in = h;
  s.rstd_attn.resize(static_cast<size_t>(N));
  s.a.resize(size_t(N * D));
  rms_norm(c, h.data(), N, D, c.param(p + "input_layernorm.weight"), s.a.data(),
           s.rstd_attn.data());
  attention_forward(c, l, s.a.data(), branch.data(), s.attention, result);
  add_to(c.pool, h.data(), branch.data(), N * D);
  s.h_mid = h;
  s.rstd_ffn.resize(static_cast<size_t>(N));
  s.f.resize(size_t(N * D));
  rms_norm(c, h.data(), N, D, c.param(p + "post_attention_layernorm.weight"), s.f.data(),
           s.rstd_ffn.data());
  ffn_forward(c, l, s.f.data(), branch.data(), s.ffn, result);
  add_to(c.pool, h.data(), branch.data(), N * D);
}

// A result to receive what a recomputed layer forward reports (losses, loads, recalls), which
// the first forward already counted.
TrainStepResult scratch_result(const ModelConfig& config, const TrainStepOptions& options) {
  TrainStepResult r;
  const size_t L = static_cast<size_t>(config.num_hidden_layers);
  r.expert_load.resize(L);
  if (options.record_indexer_recall) {
    r.indexer_recall.resize(L);
    r.indexer_oracle_recall.resize(L);
  }
  return r;
}

}  // namespace

TrainStepResult train_step(const ParameterBuffer& params, const TrainBatch& batch,
                           const TrainStepOptions& options, ParameterBuffer* grads,
                           ThreadPool& pool) {
  const ModelConfig& config = params.layout().config();
  check_batch(config, batch, options);
  if (grads) DSA_CHECK(grads->layout().size() == params.layout().size(), "gradient layout");
  const RopeTable rope_table(rope_config(config));
  const Context c{.config = config,
                  .params = params,
                  .grads = grads,
                  .options = options,
                  .rope = rope_table,
                  .softmax_scale = attention_softmax_scale(config),
                  .sequences = batch.sequences,
                  .seq_len = batch.seq_len,
                  .pool = pool};
  const int64_t N = c.rows(), D = config.hidden_size, V = config.vocab_size;
  const int64_t L = config.num_hidden_layers;

  TrainStepResult result;
  result.expert_load.resize(static_cast<size_t>(L));
  if (options.record_topk) result.topk.resize(static_cast<size_t>(L));
  if (options.record_indexer_recall) {
    result.indexer_recall.resize(static_cast<size_t>(L));
    result.indexer_oracle_recall.resize(static_cast<size_t>(L));
  }

  // Forward.
  Buffer h(size_t(N * D));
  embedding_train_forward(EmbeddingTrain<float>{.table = c.param("model.embed_tokens.weight"),
                                                .ids = batch.tokens.data(),
                                                .out = h.data(),
                                                .tokens = N,
                                                .vocab = V,
                                                .dim = D},
                          pool);
  std::vector<LayerSaved> saved(static_cast<size_t>(L));
  Buffer branch(size_t(N * D));
  // With recomputation only each layer's input survives the forward; the backward runs the
  // layer's forward again (the same operations, so the same bits) just before its backward.
  const bool recompute = options.recompute_layers && grads != nullptr;
  // The replayed forward skips what the first one already added: the indexer's loss, whose
  // gradient it writes in the forward (its inputs are detached), and the recall records.
  TrainStepOptions replay_options = options;
  replay_options.indexer_loss = false;
  replay_options.record_indexer_recall = false;
  const Context replay{.config = config,
                       .params = params,
                       .grads = grads,
                       .options = replay_options,
                       .rope = rope_table,
                       .softmax_scale = c.softmax_scale,
                       .sequences = c.sequences,
                       .seq_len = c.seq_len,
                       .pool = pool};
  for (int64_t l = 0; l < L; ++l) {
    LayerSaved& s = saved[static_cast<size_t>(l)];
    layer_forward(c, l, h, s, branch, result);
    if (options.record_topk) result.topk[static_cast<size_t>(l)] = s.attention.indices;
    if (recompute && l + 1 < L) {  // the last layer's backward comes first: keep it whole
      Buffer input = std::move(s.h_in);
      s = LayerSaved{};
      s.h_in = std::move(input);
    }
  }
  Buffer rstd_final(static_cast<size_t>(N)), normed(size_t(N * D));
  rms_norm(c, h.data(), N, D, c.param("model.norm.weight"), normed.data(), rstd_final.data());

  // The LM loss, one position at a time so that per-position losses are reported exactly.
  const std::vector<int32_t> targets = next_token_targets(batch);
  int64_t counted = 0;
  for (int32_t t : targets) counted += t >= 0 ? 1 : 0;
  result.lm_positions = counted;
  const bool main_backward = c.main_backward() && counted > 0;
  Buffer dnormed(main_backward ? size_t(N * D) : 0, 0.0f);
  result.position_losses.assign(static_cast<size_t>(N), 0.0f);
  {
    const float grad_scale = counted > 0 ? options.grad_scale / float(counted) : 0.0f;
    Buffer row_loss(static_cast<size_t>(N), 0.0f);
    LmHeadCrossEntropy<float> ce{.h = normed.data(),
                                 .weight = c.param("lm_head.weight"),
                                 .targets = targets.data(),
                                 .grad_scale = grad_scale,
                                 .row_loss = row_loss.data(),
                                 .dh = main_backward ? dnormed.data() : nullptr,
                                 .dweight = main_backward ? c.grad("lm_head.weight") : nullptr,
                                 .tokens = N,
                                 .dim = D,
                                 .vocab = V,
                                 .chunk_rows = lm_head_chunk_rows(V),
                                 .precision = c.options.matmul};
    float loss_sum = 0.0f;
    ce.loss_sum = &loss_sum;
    lm_head_cross_entropy(ce, pool);
    double total = 0.0;
    for (int64_t i = 0; i < N; ++i) {
      result.position_losses[static_cast<size_t>(i)] = row_loss[static_cast<size_t>(i)];
      total += row_loss[static_cast<size_t>(i)];
    }
    result.lm_loss = counted > 0 ? total / double(counted) : 0.0;
  }
  if (!main_backward) return result;

  // Backward.
  Buffer dh(size_t(N * D)), dtmp(size_t(N * D)), dbranch(size_t(N * D));
  rms_norm_back(c, h.data(), N, D, c.param("model.norm.weight"), rstd_final.data(), dnormed.data(),
                dh.data(), c.grad("model.norm.weight"));
  for (int64_t l = L - 1; l >= 0; --l) {
    LayerSaved& s = saved[static_cast<size_t>(l)];
    const std::string p = layer_prefix(l);
    if (recompute && l + 1 < L) {
      Buffer h_layer = std::move(s.h_in);
      TrainStepResult scratch = scratch_result(config, options);
      layer_forward(replay, l, h_layer, s, dbranch, scratch);
    }
    std::fill(dbranch.begin(), dbranch.end(), 0.0f);
    ffn_backward(c, l, s.f.data(), dh.data(), s.ffn, dbranch.data());
    rms_norm_back(c, s.h_mid.data(), N, D, c.param(p + "post_attention_layernorm.weight"),
                  s.rstd_ffn.data(), dbranch.data(), dtmp.data(),
                  c.grad(p + "post_attention_layernorm.weight"));
    add_to(pool, dh.data(), dtmp.data(), N * D);
    std::fill(dbranch.begin(), dbranch.end(), 0.0f);
    attention_backward(c, l, s.a.data(), dh.data(), s.attention, dbranch.data());
    rms_norm_back(c, s.h_in.data(), N, D, c.param(p + "input_layernorm.weight"), s.rstd_attn.data(),
                  dbranch.data(), dtmp.data(), c.grad(p + "input_layernorm.weight"));
    add_to(pool, dh.data(), dtmp.data(), N * D);
    saved[static_cast<size_t>(l)] =
        LayerSaved{};  // free what the rest of the backward no longer reads
  }
  embedding_backward(EmbeddingTrain<float>{.ids = batch.tokens.data(),
                                           .dout = dh.data(),
                                           .dtable = c.grad("model.embed_tokens.weight"),
                                           .tokens = N,
                                           .vocab = V,
                                           .dim = D},
                     pool);
  return result;
}

}  // namespace dsa

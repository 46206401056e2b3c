#include "model/forward.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "model/forward_internal.h"
#include "ops/norms/norms.h"

namespace dsa {
namespace forward_internal {

void Step::emit(const std::string& name, const float* data, Shape shape) const {
  if (dump) (*dump)(prefix + name, TensorView(const_cast<float*>(data), DType::F32, shape));
}
void Step::emit(const std::string& name, const int32_t* data, Shape shape) const {
  if (dump) (*dump)(prefix + name, TensorView(const_cast<int32_t*>(data), DType::I32, shape));
}

void linear(const float* x, int64_t m, const LinearWeight& w, float* y, ThreadPool& pool) {
  gemm(linear_params(x, w, y, m), pool);
}

void linear_fp32(const float* x, int64_t m, const LinearWeight& w, float* y, ThreadPool& pool) {
  GemmParams p = linear_params(x, w, y, m);
  p.round_output_to_bf16 = false;
  gemm(p, pool);
}

std::vector<bf16> to_bf16(const float* x, size_t n) {
  std::vector<bf16> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = float_to_bf16(x[i]);
  return out;
}

void to_float(const bf16* x, size_t n, float* out) {
  for (size_t i = 0; i < n; ++i) out[i] = bf16_to_float(x[i]);
}

void rms_norm_rows(float* x, int64_t rows, const std::vector<float>& weight, ThreadPool& pool) {
  const int64_t dim = int64_t(weight.size());
  std::vector<bf16> b = to_bf16(x, size_t(rows * dim));
  rms_norm({.x = b.data(), .weight = weight.data(), .out = b.data(), .tokens = rows, .dim = dim},
           pool);
  to_float(b.data(), b.size(), x);
}

}  // namespace forward_internal

using forward_internal::Step;

YarnRopeConfig rope_config(const ModelConfig& c) {
  YarnRopeConfig r;
  r.rope_dim = int(c.qk_rope_head_dim);
  r.theta = float(c.rope_theta);
  r.max_seq_len = c.max_position_embeddings;
  if (c.rope_scaling) {
    r.factor = float(c.rope_scaling->factor);
    r.original_seq_len = c.rope_scaling->original_max_position_embeddings;
    r.beta_fast = float(c.rope_scaling->beta_fast);
    r.beta_slow = float(c.rope_scaling->beta_slow);
  } else {
    r.factor = 1.0f;
    r.original_seq_len = c.max_position_embeddings;  // no YaRN ramp
  }
  return r;
}

// qk_head_dim^-0.5, times mscale^2 when YaRN is on (dsa-reference.md §5.2; Hugging Face takes
// the factor's mscale from mscale_all_dim, 1.0 in DeepSeek's configs, as REF's mscale is).
float attention_softmax_scale(const ModelConfig& c) {
  double scale = 1.0 / std::sqrt(double(c.qk_head_dim()));
  if (c.rope_scaling &&
      c.max_position_embeddings > c.rope_scaling->original_max_position_embeddings &&
      c.rope_scaling->mscale_all_dim != 0.0 && c.rope_scaling->factor > 1.0) {
    const double mscale =
        0.1 * c.rope_scaling->mscale_all_dim * std::log(c.rope_scaling->factor) + 1.0;
    scale *= mscale * mscale;
  }
  return float(scale);
}

namespace {

void check_tokens(const ModelConfig& c, std::span<const int32_t> tokens, const KvCache& cache,
                  AttentionMode mode) {
  if (tokens.empty()) fail("forward: no tokens to run");
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size) {
      fail("token {} (at index {}) is out of range: the vocabulary has {} tokens (0 .. {})",
           tokens[i], i, c.vocab_size, c.vocab_size - 1);
    }
  }
  const int64_t end = cache.size() + int64_t(tokens.size());
  if (end > cache.capacity()) {
    fail("{} tokens at position {} would end at {}, past the context size of {} tokens",
         tokens.size(), cache.size(), end, cache.capacity());
  }
  if (mode == AttentionMode::kSparse && !c.has_indexer()) {
    fail(
        "attention 'sparse' needs the lightning indexer, and this {} model has none (use "
        "'dense' or 'auto')",
        architecture_name(c.architecture));
  }
}

}  // namespace

std::string_view attention_mode_name(AttentionMode mode) {
  switch (mode) {
    case AttentionMode::kAuto:
      return "auto";
    case AttentionMode::kSparse:
      return "sparse";
    case AttentionMode::kDense:
      return "dense";
  }
  return "?";
}

AttentionMode parse_attention_mode(std::string_view name) {
  for (AttentionMode mode : {AttentionMode::kAuto, AttentionMode::kSparse, AttentionMode::kDense}) {
    if (name == attention_mode_name(mode)) return mode;
  }
  fail("unknown attention mode '{}': expected auto, sparse or dense", name);
}

std::string_view prefill_kernel_name(PrefillKernel kernel) {
  switch (kernel) {
    case PrefillKernel::kAuto:
      return "auto";
    case PrefillKernel::kMha:
      return "mha";
    case PrefillKernel::kAbsorbed:
      return "absorbed";
  }
  return "?";
}

PrefillKernel parse_prefill_kernel(std::string_view name) {
  for (PrefillKernel k : {PrefillKernel::kAuto, PrefillKernel::kMha, PrefillKernel::kAbsorbed}) {
    if (name == prefill_kernel_name(k)) return k;
  }
  fail("unknown prefill kernel '{}': expected auto, mha or absorbed", name);
}

Model::Model(std::unique_ptr<ModelWeights> weights)
    : weights_(std::move(weights)),
      rope_(rope_config(weights_->config())),
      softmax_scale_(attention_softmax_scale(weights_->config())) {}

std::unique_ptr<Model> Model::load(const std::filesystem::path& dir, ThreadPool& pool) {
  return std::unique_ptr<Model>(new Model(ModelWeights::load(dir, pool)));
}

void Model::forward(std::span<const int32_t> tokens, KvCache& cache, std::span<float> logits,
                    const ForwardOptions& options, ThreadPool& pool) const {
  const SequenceChunk chunk{.tokens = tokens, .cache = &cache, .logits = logits};
  forward_batch({&chunk, 1}, options, pool);
}

void Model::forward_batch(std::span<const SequenceChunk> chunks, const ForwardOptions& options,
                          ThreadPool& pool) const {
  const ModelConfig& c = config();
  if (chunks.empty()) fail("forward: no sequences to run");
  if (options.dump && chunks.size() > 1) {
    fail("forward: dumping intermediates needs a single sequence, got {}", chunks.size());
  }
  // Every check before any work, so that an error leaves every cache unchanged.
  std::vector<forward_internal::SequenceRows> sequences;
  sequences.reserve(chunks.size());
  int64_t R = 0, logit_rows = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const SequenceChunk& chunk = chunks[i];
    if (!chunk.cache) fail("forward: sequence {} has no cache", i);
    for (size_t j = 0; j < i; ++j) {
      if (chunks[j].cache == chunk.cache) fail("forward: sequences {} and {} share a cache", j, i);
    }
    check_tokens(c, chunk.tokens, *chunk.cache, options.attention);
    const int64_t T = int64_t(chunk.tokens.size());
    const int64_t rows = options.all_logits ? T : 1;
    if (chunk.logits.size() != size_t(rows * c.vocab_size)) {
      fail("forward: the logits buffer of sequence {} holds {} floats, {} x {} needed", i,
           chunk.logits.size(), rows, c.vocab_size);
    }
    sequences.push_back({chunk.cache, chunk.cache->size(), R, T});
    R += T;
    logit_rows += rows;
  }
  const int64_t D = c.hidden_size;
  const ModelWeights& w = weights();
  Step step{.config = c,
            .weights = w,
            .rope = rope_,
            .softmax_scale = softmax_scale_,
            .sequences = sequences,
            .tokens = R,
            .attention = c.has_indexer() ? options.attention : AttentionMode::kDense,
            .prefill_kernel = options.prefill_kernel,
            .reference_attention = options.reference_attention,
            .dump = options.dump ? &options.dump : nullptr,
            .pool = pool,
            .prefix = ""};

  // h: the sub-block output entering the next fused add + norm; residual: the bf16 stream.
  std::vector<bf16> h(size_t(R * D)), residual(size_t(R * D)), normed(size_t(R * D));
  for (size_t i = 0; i < chunks.size(); ++i) {
    for (int64_t t = 0; t < sequences[i].tokens; ++t) {
      const int64_t token = chunks[i].tokens[size_t(t)];
      std::copy_n(w.embedding + token * D, D, h.data() + (sequences[i].row + t) * D);
    }
  }
  std::vector<float> x(size_t(R * D)), y(size_t(R * D));
  const auto norm = [&](const std::vector<float>& weight, bool first) {
    rms_norm({.x = h.data(),
              .residual = first ? nullptr : residual.data(),
              .weight = weight.data(),
              .out = normed.data(),
              .residual_out = residual.data(),
              .tokens = R,
              .dim = D},
             pool);
    if (first) residual = h;
    forward_internal::to_float(normed.data(), normed.size(), x.data());
  };
  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
    Step layer_step = step;
    layer_step.prefix = "layers." + std::to_string(layer) + ".";
    const LayerWeights& lw = w.layers[size_t(layer)];
    norm(lw.attn_norm, layer == 0);
    layer_step.emit("attn_norm", x.data(), {R, D});
    forward_internal::attention_block(layer_step, layer, x.data(), y.data());
    h = forward_internal::to_bf16(y.data(), y.size());
    norm(lw.ffn_norm, false);
    layer_step.emit("ffn_norm", x.data(), {R, D});
    forward_internal::ffn_block(layer_step, layer, x.data(), y.data());
    h = forward_internal::to_bf16(y.data(), y.size());
  }
  norm(w.final_norm, c.num_hidden_layers == 0);
  step.emit("norm", x.data(), {R, D});

  // The LM head once over the rows whose logits are wanted: every row, or each sequence's last.
  const float* head_input = x.data();
  std::vector<float> last_rows;
  if (!options.all_logits) {
    last_rows.resize(size_t(logit_rows * D));
    for (size_t i = 0; i < sequences.size(); ++i) {
      const int64_t last = sequences[i].row + sequences[i].tokens - 1;
      std::copy_n(x.data() + last * D, D, last_rows.data() + int64_t(i) * D);
    }
    head_input = last_rows.data();
  }
  std::vector<float> all_logits;
  float* head_output = chunks.size() == 1 ? chunks[0].logits.data() : nullptr;
  if (!head_output) {
    all_logits.resize(size_t(logit_rows * c.vocab_size));
    head_output = all_logits.data();
  }
  forward_internal::linear_fp32(head_input, logit_rows, w.lm_head, head_output, pool);
  step.emit("logits", head_output, {logit_rows, c.vocab_size});
  if (!all_logits.empty()) {
    size_t at = 0;
    for (const SequenceChunk& chunk : chunks) {
      std::copy_n(all_logits.data() + at, chunk.logits.size(), chunk.logits.data());
      at += chunk.logits.size();
    }
  }
  for (const forward_internal::SequenceRows& seq : sequences) {
    seq.cache->advance_to(seq.start + seq.tokens);
  }
}

std::vector<float> sequence_logits(const Model& model, std::span<const int32_t> tokens,
                                   int64_t prefill, int64_t chunk, const ForwardOptions& options,
                                   ThreadPool& pool) {
  const int64_t T = int64_t(tokens.size());
  if (prefill < 0 || prefill > T)
    fail("prefill {} must be in [0, {}] (the token count)", prefill, T);
  if (chunk < 1) fail("prefill chunk must be at least 1, got {}", chunk);
  const int64_t vocab = model.config().vocab_size;
  KvCache cache(model.config(), T);
  ForwardOptions call = options;
  call.all_logits = true;
  std::vector<float> logits(size_t(T * vocab));
  int64_t pos = 0;
  while (pos < T) {
    const int64_t n = pos < prefill ? std::min(chunk, prefill - pos) : 1;
    model.forward(tokens.subspan(size_t(pos), size_t(n)), cache,
                  {logits.data() + pos * vocab, size_t(n * vocab)}, call, pool);
    pos += n;
  }
  return logits;
}

}  // namespace dsa

// The DeepSeek-V3.2 forward pass on the CPU (dsa-reference.md §2-§6): embedding, decoder layers
// (fused-residual RMSNorm, MLA with the lightning indexer and top-k, dense FFN or MoE), final
// norm, LM head. One call runs a chunk of T tokens at positions cache.size() .. +T-1 of one
// sequence, appending them to its KvCache: a prefill chunk may start anywhere, and T == 1 is a
// decode step.
//
// Attention modes:
//   sparse  DSA, the model's own semantics: each query row attends to the top-k (index_topk) of
//           its causal keys by indexer score; rows with at most index_topk keys attend to all.
//   dense   every causal key (what DeepSeek-V3.1 does; for comparison). The indexer still writes
//           its key cache, so a sequence may switch modes.
//   auto    (default) always sparse's results, but skips the indexer scores and uses the dense
//           kernels for chunks whose rows all have at most index_topk keys, where the two are the
//           same attention.
// Kernels: decode steps run in the absorbed (MQA) mode over the latent cache, as REF and FlashMLA
// do; prefill chunks run either that or MHA mode over k/v expanded from the cached latents (REF's
// prefill path), see PrefillKernel. V3 checkpoints (no indexer) are always dense.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "core/tensor.h"
#include "core/thread_pool.h"
#include "model/kv_cache.h"
#include "model/weights.h"
#include "ops/rope/rope.h"

namespace dsa {

enum class AttentionMode { kAuto, kSparse, kDense };
std::string_view attention_mode_name(AttentionMode mode);  // "auto", "sparse", "dense"
// Throws dsa::Error listing the valid names.
AttentionMode parse_attention_mode(std::string_view name);

// Which attention kernel a prefill chunk (T > 1) uses; decode steps always use the absorbed mode.
//   auto      the one with fewer multiply-adds for this chunk (attention_block.cc)
//   mha       MHA mode, what DeepSeek's reference does for every prefill (closest to its numerics)
//   absorbed  the absorbed (MQA) mode, as FlashMLA's sparse prefill does
enum class PrefillKernel { kAuto, kMha, kAbsorbed };
std::string_view prefill_kernel_name(PrefillKernel kernel);  // "auto", "mha", "absorbed"
PrefillKernel parse_prefill_kernel(std::string_view name);

// Receives every named intermediate of a forward call: `name` such as "layers.3.attn_norm" or
// "logits", `value` a float (bf16 values held exactly) or int32 tensor whose first axis is the
// call's tokens. The view is only valid during the call. Names: docs/model.md.
using IntermediateSink = std::function<void(const std::string& name, const TensorView& value)>;

struct ForwardOptions {
  AttentionMode attention = AttentionMode::kAuto;
  PrefillKernel prefill_kernel = PrefillKernel::kAuto;
  // Run attention with the scalar reference kernels, which round scores, probabilities and
  // outputs to bf16 where DeepSeek's reference does (the fast kernels keep scores and
  // probabilities in fp32). Slow; for parity checks against the reference.
  bool reference_attention = false;
  bool all_logits = false;  // logits of every token of the chunk; false: only the last one
  IntermediateSink dump;    // empty: nothing is dumped (and nothing extra computed)
};

// The RoPE table settings (YaRN when rope_scaling is set) and MLA's softmax scale of a config; the
// training graph uses the same ones.
YarnRopeConfig rope_config(const ModelConfig& config);
float attention_softmax_scale(const ModelConfig& config);

// One sequence's part of a batched forward call (Model::forward_batch).
struct SequenceChunk {
  std::span<const int32_t> tokens;  // run at positions cache->size() ...
  KvCache* cache = nullptr;         // the sequence's own: no two chunks of a call share one
  std::span<float> logits;          // [T, vocab] with all_logits, else [1, vocab]
};

class Model {
 public:
  // Loads config.json and the checkpoint in `dir` (see weights.h for the checks).
  static std::unique_ptr<Model> load(const std::filesystem::path& dir, ThreadPool& pool);

  const ModelConfig& config() const { return weights_->config(); }
  const ModelWeights& weights() const { return *weights_; }
  // See ModelWeights::set_index_topk.
  void set_index_topk(int64_t k) { weights_->set_index_topk(k); }
  float softmax_scale() const { return softmax_scale_; }

  // Runs `tokens` at positions cache.size() ... and appends them to `cache`. `logits` receives
  // [T, vocab] (all_logits) or [1, vocab] floats. Token ids outside the vocabulary, a chunk past
  // the cache's capacity, or "sparse" on a model without an indexer are a dsa::Error (the cache
  // is then unchanged).
  void forward(std::span<const int32_t> tokens, KvCache& cache, std::span<float> logits,
               const ForwardOptions& options, ThreadPool& pool) const;

  // One forward call over chunks of several sequences, each at its own positions in its own
  // cache: decode steps and prefill chunks may mix (chunked prefill). Row-wise work (norms,
  // projections, experts, the LM head) runs once over all rows, so every weight is read once per
  // call rather than once per sequence; RoPE, the cache writes, the indexer, top-k and attention
  // run per sequence. Each sequence's results are those of its own forward() call up to GEMM
  // summation order (a kernel may be picked by the call's row count): bit-identical while the
  // row counts pick the same kernels (tests/model/test_forward_batch.cc). The checks of forward()
  // apply to every chunk; an error leaves every cache unchanged. A dump needs one sequence.
  void forward_batch(std::span<const SequenceChunk> chunks, const ForwardOptions& options,
                     ThreadPool& pool) const;

 private:
  explicit Model(std::unique_ptr<ModelWeights> weights);

  std::unique_ptr<ModelWeights> weights_;
  RopeTable rope_;
  float softmax_scale_ = 0.0f;
};

// Logits [T, vocab] of every position of `tokens` in a fresh cache of `tokens.size()` positions:
// tokens [0, prefill) run as prefill chunks of `chunk` tokens, the rest as decode steps.
// options.all_logits is implied.
std::vector<float> sequence_logits(const Model& model, std::span<const int32_t> tokens,
                                   int64_t prefill, int64_t chunk, const ForwardOptions& options,
                                   ThreadPool& pool);

}  // namespace dsa

// Every tensor of a DeepSeek-V3/V3.2 checkpoint, enumerated once (dsa-reference.md §3.2, §5.1,
// §6, §7). Loading, initialization, gradients, optimizer state and saving all visit this list
// instead of keeping their own.
//
// A *parameter* is one logical weight (a Hugging Face tensor name such as
// "model.layers.3.self_attn.q_a_proj.weight"). An FP8 parameter is stored as F8_E4M3 codes plus a
// companion F32 "<...>.weight_scale_inv" tensor of shape [ceil(out/128), ceil(in/128)]; the
// checkpoint tensor list expands those companions.
//
// Order: model.embed_tokens, then each layer 0..num_hidden_layers-1, then each MTP layer, then
// model.norm and lm_head. Within a layer: norms, attention, indexer, then the FFN (dense MLP, or
// gate, routed experts in index order, shared experts).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/safetensors.h"
#include "core/tensor.h"
#include "model/config.h"

namespace dsa {

// Where a parameter belongs, for accounting (`dsa inspect`) and per-module training choices.
// The MLA-internal norms (q_a_layernorm, kv_a_layernorm) count as attention and the indexer's
// k_norm as indexer; kNorm is the residual-stream norms (input/post-attention, final, MTP).
enum class Module {
  kEmbedding,      // model.embed_tokens (and its MTP copy)
  kAttention,      // MLA projections and their latent norms
  kIndexer,        // lightning indexer (V3.2)
  kDenseMlp,       // FFN of the first first_k_dense_replace layers
  kRoutedExperts,  // mlp.experts.E.*
  kSharedExperts,  // mlp.shared_experts.*
  kGate,           // MoE router weight and e_score_correction_bias
  kNorm,           // residual-stream RMSNorms
  kMtpProjection,  // MTP eh_proj
  kLmHead,         // lm_head (and the MTP shared_head.head copy)
};
constexpr int kModuleCount = 10;
std::string_view module_name(Module module);  // "embedding", "attention", ...

// How init-model fills a parameter (init_weights.h).
enum class InitRule {
  kNormal,  // N(0, init_std^2)
  kOnes,    // norm weights
  kZeros,   // LayerNorm bias, e_score_correction_bias
};

struct ParameterSpec {
  std::string name;  // Hugging Face name
  Shape shape;       // PyTorch order: [out, in] for projections
  DType dtype;       // checkpoint dtype of the values (F8_E4M3 for FP8 parameters)
  Module module;
  int64_t layer = -1;  // decoder layer index; -1 for embedding, final norm and lm_head
  bool mtp = false;    // belongs to a multi-token-prediction layer (layer >= num_hidden_layers)
  InitRule init = InitRule::kNormal;
  double init_std = 0.0;
  // Name whose random values this parameter repeats. MTP's embed_tokens and shared_head.head
  // are copies of model.embed_tokens and lm_head in DeepSeek checkpoints; otherwise == name.
  std::string init_key;

  bool fp8() const { return dtype == DType::F8_E4M3; }
  int64_t numel() const { return shape.numel(); }
  uint64_t nbytes() const { return uint64_t(numel()) * dtype_size(dtype); }
  // The weight_scale_inv companion of an FP8 parameter.
  std::string scale_name() const;
  Shape scale_shape() const;
};

// Calls `visit` for every parameter of `config`, in checkpoint order.
void for_each_parameter(const ModelConfig& config,
                        const std::function<void(const ParameterSpec&)>& visit);
std::vector<ParameterSpec> model_parameters(const ModelConfig& config);

// One tensor of the checkpoint file: a parameter, or the scale of an FP8 parameter.
struct CheckpointTensor {
  std::string name;
  DType dtype;
  Shape shape;
  size_t parameter = 0;  // index into the model_parameters() list it came from
  bool is_scale = false;
  uint64_t nbytes() const { return uint64_t(shape.numel()) * dtype_size(dtype); }
};
// Parameters in order, each FP8 parameter followed by its weight_scale_inv.
std::vector<CheckpointTensor> checkpoint_tensors(const std::vector<ParameterSpec>& parameters);

// Parameter counts (elements, scales excluded).
struct ParameterCounts {
  int64_t by_module[kModuleCount] = {};  // main model only
  int64_t main_model = 0;                // everything outside the MTP layers
  int64_t mtp = 0;                       // the MTP layers, their embedding/head copies included
  int64_t activated_per_token = 0;       // main model, routed experts counted top-k of n
  int64_t total() const { return main_model + mtp; }
};
ParameterCounts count_parameters(const ModelConfig& config);

// Differences between the tensors a config implies and those a checkpoint holds.
struct LayoutMismatch {
  enum class Kind { kMissing, kUnexpected, kWrongShape, kWrongDtype };
  Kind kind;
  std::string name;
  std::string detail;  // "expected [128, 256] BF16, found [128, 255] BF16"
  std::string describe() const;
};
// Every expected tensor absent or different in `checkpoint`, then every tensor it has that the
// layout does not know, sorted by name within each kind.
std::vector<LayoutMismatch> compare_with_checkpoint(const std::vector<CheckpointTensor>& expected,
                                                    const Checkpoint& checkpoint);

// KV-cache bytes per token and layer in the deployment format (dsa-reference.md §3.6, §5.6):
// the FP8 latent (kv_lora_rank codes + one F32 scale per 128) plus the BF16 RoPE key, and for
// V3.2 the indexer key (index_head_dim FP8 codes + one F32 scale per 128).
struct KvCacheBytes {
  int64_t latent = 0;   // 656 for the 671B shapes
  int64_t indexer = 0;  // 132 for V3.2, 0 for V3
  int64_t per_layer() const { return latent + indexer; }
};
KvCacheBytes kv_cache_bytes_per_token(const ModelConfig& config);

}  // namespace dsa

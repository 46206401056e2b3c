// The weights of a DeepSeek-V3/V3.2 checkpoint, ready for the forward pass.
//
// Projections stay where they are: LinearWeight views into the memory-mapped safetensors files
// (FP8 codes plus their weight_scale_inv, or bf16), so an FP8 checkpoint stays FP8 in memory and
// loading costs no copy. Only small tensors are converted: norm weights and biases become fp32
// (REF up-casts them), and wkv_b is dequantized once to bf16 for the absorbed (MQA) attention
// mode, as REF's weight_dequant does (dsa-reference.md §5.5).
//
// Loading first compares every tensor the config implies (tensor_layout.h, MTP layers included)
// with the checkpoint; any missing, unexpected, misshaped or mistyped tensor is a dsa::Error that
// lists them. One exception: a missing mlp.gate.e_score_correction_bias is accepted and means
// REF's gate without bias (group score = the group's largest sigmoid score), which is what
// DeepSeek's reference builds for every hidden size but 7168.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <vector>

#include "core/float_formats.h"
#include "core/safetensors.h"
#include "core/thread_pool.h"
#include "model/config.h"
#include "ops/gemm/gemm.h"
#include "ops/moe/moe.h"

namespace dsa {

struct IndexerWeights {
  LinearWeight wq_b;                 // [index_n_heads * 128, q_lora_rank]
  LinearWeight wk;                   // [128, hidden]
  LinearWeight weights_proj;         // [index_n_heads, hidden] bf16, applied in fp32 (REF)
  std::vector<float> k_norm_weight;  // [128]
  std::vector<float> k_norm_bias;    // [128]
};

struct AttentionWeights {
  LinearWeight wq_a;          // [q_lora_rank, hidden]; absent (data null) without query compression
  std::vector<float> q_norm;  // [q_lora_rank]
  LinearWeight wq_b;   // [H * (nope + rope), q_lora_rank], or q_proj [H * (nope + rope), hidden]
  LinearWeight wkv_a;  // [kv_lora_rank + rope, hidden]
  std::vector<float> kv_norm;             // [kv_lora_rank]
  LinearWeight wkv_b;                     // [H * (nope + v), kv_lora_rank]
  std::vector<bf16> wkv_b_bf16;           // the same, dequantized: [H, nope + v, kv_lora_rank]
  LinearWeight wo;                        // [hidden, H * v]
  std::optional<IndexerWeights> indexer;  // V3.2 only
};

struct FfnWeights {
  bool is_moe = false;
  SwigluExpertWeights dense;  // layers < first_k_dense_replace
  // MoE layers:
  const bf16* gate_weight = nullptr;  // [n_routed_experts, hidden]
  std::vector<float> gate_bias;       // [n_routed_experts] e_score_correction_bias; empty: none
  std::vector<SwigluExpertWeights> experts;
  std::optional<SwigluExpertWeights> shared;
};

struct LayerWeights {
  std::vector<float> attn_norm;  // input_layernorm [hidden]
  AttentionWeights attn;
  std::vector<float> ffn_norm;  // post_attention_layernorm [hidden]
  FfnWeights ffn;
};

// The multi-token-prediction layer's own tensors (a later issue runs it); its embedding and head
// are copies of the main ones in DeepSeek checkpoints and are checked, not kept.
struct MtpWeights {
  std::vector<float> enorm;  // [hidden]
  std::vector<float> hnorm;  // [hidden]
  LinearWeight eh_proj;      // [hidden, 2 * hidden] bf16
  LayerWeights layer;
  std::vector<float> head_norm;  // shared_head.norm [hidden]
};

class ModelWeights {
 public:
  // Reads config.json and the checkpoint in `dir` (a Hugging Face model folder).
  static std::unique_ptr<ModelWeights> load(const std::filesystem::path& dir, ThreadPool& pool);

  const ModelConfig& config() const { return config_; }
  const Checkpoint& checkpoint() const { return *checkpoint_; }
  // Selects `k` keys per row from now on instead of the config's index_topk: no weight depends
  // on it, so one checkpoint can be evaluated at several k (dsa eval --topk). Throws dsa::Error
  // for k < 1 or a model without an indexer.
  void set_index_topk(int64_t k);

  const bf16* embedding = nullptr;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  std::vector<MtpWeights> mtp;
  std::vector<float> final_norm;  // [hidden]
  LinearWeight lm_head;           // [vocab, hidden] bf16, applied in fp32 (REF)

 private:
  ModelConfig config_;
  std::unique_ptr<Checkpoint> checkpoint_;
};

}  // namespace dsa

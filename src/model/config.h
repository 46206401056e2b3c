// The model configuration: Hugging Face `config.json` of DeepseekV32ForCausalLM (DeepSeek-V3.2,
// with the lightning indexer) and DeepseekV3ForCausalLM (the same network without the indexer,
// our dense-attention baseline). Field names and meanings are Hugging Face's
// (dsa-reference.md §1.2); unknown keys are kept in `extra` and written back unchanged.
//
// Required keys: architectures, vocab_size, hidden_size, intermediate_size, moe_intermediate_size,
// num_hidden_layers, num_attention_heads, n_routed_experts, n_shared_experts,
// num_experts_per_tok, kv_lora_rank, q_lora_rank (null = no query compression),
// qk_nope_head_dim, qk_rope_head_dim, v_head_dim, and for V3.2 index_n_heads, index_head_dim,
// index_topk. Every other key has the default of DeepSeek's own configuration class.
//
// What validate() enforces beyond types and ranges, and why:
//  - scoring_func "sigmoid", topk_method "noaux_tc", hidden_act "silu", moe_layer_freq 1,
//    attention_bias false, tie_word_embeddings false: the only variants DeepSeek-V3/V3.2 use and
//    the only ones this engine implements.
//  - num_key_value_heads == num_attention_heads: MLA has no grouped-query sharing.
//  - n_routed_experts divisible by n_group with at least 2 experts per group (the noaux_tc gate
//    scores a group by its top-2 experts), topk_group <= n_group, and num_experts_per_tok no more
//    than the experts of the kept groups.
//  - kv_lora_rank a multiple of 128: the FP8 latent cache quantizes it in groups of 128 (§5.6).
//  - qk_rope_head_dim even (RoPE rotates pairs).
//  - V3.2: q_lora_rank > 0 (the indexer reads the query latent), index_head_dim == 128 (REF's
//    one FP8 query scale per head) and >= qk_rope_head_dim (the RoPE prefix).
//  - With quantization_config (FP8 weights): the input width of every FP8 projection (hidden_size,
//    q_lora_rank, kv_lora_rank, num_attention_heads * v_head_dim, intermediate_size,
//    moe_intermediate_size) is a multiple of 128, because activations are quantized in 128-element
//    groups along it. Output widths may be anything (the last weight block is then smaller).
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace dsa {

enum class Architecture {
  kDeepseekV32,  // "DeepseekV32ForCausalLM", model_type "deepseek_v32"
  kDeepseekV3,   // "DeepseekV3ForCausalLM", model_type "deepseek_v3"
};

std::string_view architecture_name(Architecture arch);
std::string_view model_type_name(Architecture arch);

// YaRN context extension (rope_scaling with type "yarn", dsa-reference.md §2.7).
struct RopeScaling {
  double factor = 40.0;
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 1.0;
};

// quantization_config of a block-FP8 checkpoint. The only accepted values are DeepSeek's:
// fp8 / e4m3 / dynamic activations / 128x128 weight blocks.
struct QuantizationConfig {
  // "ue8m0": activation scales rounded up to powers of two (V3.2); "" (key absent): plain amax/448.
  std::string scale_fmt = "ue8m0";
};

struct ModelConfig {
  Architecture architecture = Architecture::kDeepseekV32;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;      // dense FFN of the first first_k_dense_replace layers
  int64_t moe_intermediate_size = 0;  // per routed expert; shared experts use this * n_shared
  int64_t num_hidden_layers = 0;      // main decoder layers (MTP layers come after them)
  int64_t num_nextn_predict_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t n_shared_experts = 0;
  int64_t n_routed_experts = 0;
  double routed_scaling_factor = 1.0;
  int64_t kv_lora_rank = 0;
  int64_t q_lora_rank = 0;  // 0: no query compression (q_proj instead of q_a_proj/q_b_proj)
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  int64_t qk_nope_head_dim = 0;
  std::string topk_method = "noaux_tc";
  int64_t n_group = 1;
  int64_t topk_group = 1;
  int64_t num_experts_per_tok = 0;
  int64_t moe_layer_freq = 1;
  int64_t first_k_dense_replace = 0;
  bool norm_topk_prob = true;
  std::string scoring_func = "sigmoid";
  std::string hidden_act = "silu";
  int64_t max_position_embeddings = 4096;
  double initializer_range = 0.02;
  double rms_norm_eps = 1e-6;
  bool use_cache = true;
  int64_t bos_token_id = 0;
  int64_t eos_token_id = 1;
  double rope_theta = 10000.0;
  std::optional<RopeScaling> rope_scaling;
  bool attention_bias = false;
  double attention_dropout = 0.0;
  bool tie_word_embeddings = false;
  std::string torch_dtype = "bfloat16";
  std::optional<QuantizationConfig> quantization;  // present: FP8 block-quantized weights
  // Lightning indexer (V3.2 only; 0 for V3).
  int64_t index_n_heads = 0;
  int64_t index_head_dim = 0;
  int64_t index_topk = 0;
  // Keys this engine does not use, kept for writing the config back.
  nlohmann::json extra = nlohmann::json::object();

  bool has_indexer() const { return architecture == Architecture::kDeepseekV32; }
  bool fp8() const { return quantization.has_value(); }
  bool has_q_lora() const { return q_lora_rank > 0; }
  bool is_moe_layer(int64_t layer) const { return layer >= first_k_dense_replace; }
  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  int64_t shared_intermediate_size() const { return moe_intermediate_size * n_shared_experts; }
  int64_t total_layers() const { return num_hidden_layers + num_nextn_predict_layers; }
};

// Parses and validates a config object. `source` names the file in error messages
// ("config.json: 'n_routed_experts' must be divisible by 'n_group' (256 vs 7)").
ModelConfig parse_model_config(const nlohmann::json& json, std::string_view source = "config.json");

// Reads `path`: a config.json file, or a folder holding one.
ModelConfig load_model_config(const std::filesystem::path& path);

// Checks the consistency rules listed at the top of this file; throws dsa::Error naming the key.
void validate_model_config(const ModelConfig& config, std::string_view source = "config.json");

// The Hugging Face config.json object (extra keys included; keys sorted, as transformers writes).
nlohmann::json model_config_to_json(const ModelConfig& config);

}  // namespace dsa

#include "model/presets.h"

#include "core/error.h"

namespace dsa {
namespace {

// The fields every preset shares: DeepSeek's routing, norms, RoPE and FP8 settings.
ModelConfig deepseek_defaults() {
  ModelConfig c;
  c.architecture = Architecture::kDeepseekV32;
  c.routed_scaling_factor = 2.5;
  c.qk_rope_head_dim = 64;
  c.n_shared_experts = 1;
  c.num_nextn_predict_layers = 1;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000.0;
  c.quantization = QuantizationConfig{};
  c.index_n_heads = 64;
  c.index_head_dim = 128;
  c.index_topk = 2048;
  return c;
}

// The vocabulary of DeepSeek-V3/V3.2's tokenizer, so small models can use the real tokenizer.
constexpr int64_t kDeepseekVocab = 129280;

ModelConfig tiny() {
  ModelConfig c = deepseek_defaults();
  c.vocab_size = 1024;
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.moe_intermediate_size = 128;
  c.num_hidden_layers = 2;
  c.first_k_dense_replace = 1;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 4;
  c.q_lora_rank = 128;
  c.kv_lora_rank = 128;  // kv_a_proj_with_mqa has 128 + 64 rows: a 64-row edge block
  c.qk_nope_head_dim = 32;
  c.v_head_dim = 32;
  c.n_routed_experts = 8;
  c.n_group = 2;
  c.topk_group = 1;
  c.num_experts_per_tok = 2;
  c.index_n_heads = 4;
  c.index_topk = 16;
  c.max_position_embeddings = 2048;
  c.rope_scaling = RopeScaling{.factor = 4.0, .original_max_position_embeddings = 512};
  return c;
}

ModelConfig small() {
  ModelConfig c = deepseek_defaults();
  c.vocab_size = kDeepseekVocab;
  c.hidden_size = 512;
  c.intermediate_size = 1536;
  c.moe_intermediate_size = 256;
  c.num_hidden_layers = 8;
  c.first_k_dense_replace = 1;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 8;
  c.q_lora_rank = 256;
  c.kv_lora_rank = 128;
  c.qk_nope_head_dim = 64;
  c.v_head_dim = 64;
  c.n_routed_experts = 16;
  c.n_group = 4;
  c.topk_group = 2;
  c.num_experts_per_tok = 4;
  c.index_n_heads = 8;
  c.index_topk = 256;
  c.max_position_embeddings = 16384;
  c.rope_scaling = RopeScaling{.factor = 4.0, .original_max_position_embeddings = 4096};
  return c;
}

ModelConfig medium() {
  ModelConfig c = deepseek_defaults();
  c.vocab_size = kDeepseekVocab;
  c.hidden_size = 2048;
  c.intermediate_size = 5632;
  c.moe_intermediate_size = 512;
  c.num_hidden_layers = 16;
  c.first_k_dense_replace = 1;
  c.num_attention_heads = 16;
  c.num_key_value_heads = 16;
  c.q_lora_rank = 512;
  c.kv_lora_rank = 256;
  c.qk_nope_head_dim = 128;
  c.v_head_dim = 128;
  c.n_routed_experts = 32;
  c.n_shared_experts = 2;
  c.n_group = 8;
  c.topk_group = 4;
  c.num_experts_per_tok = 6;
  c.index_n_heads = 16;
  c.index_topk = 1024;
  c.max_position_embeddings = 32768;
  c.rope_scaling = RopeScaling{.factor = 8.0, .original_max_position_embeddings = 4096};
  return c;
}

// dsa-reference.md §1.1-§1.2.
ModelConfig deepseek_v32_671b() {
  ModelConfig c = deepseek_defaults();
  c.vocab_size = kDeepseekVocab;
  c.hidden_size = 7168;
  c.intermediate_size = 18432;
  c.moe_intermediate_size = 2048;
  c.num_hidden_layers = 61;
  c.first_k_dense_replace = 3;
  c.num_attention_heads = 128;
  c.num_key_value_heads = 128;
  c.q_lora_rank = 1536;
  c.kv_lora_rank = 512;
  c.qk_nope_head_dim = 128;
  c.v_head_dim = 128;
  c.n_routed_experts = 256;
  c.n_group = 8;
  c.topk_group = 4;
  c.num_experts_per_tok = 8;
  c.max_position_embeddings = 163840;
  c.rope_scaling = RopeScaling{.factor = 40.0, .original_max_position_embeddings = 4096};
  return c;
}

ModelConfig without_indexer(ModelConfig c) {
  c.architecture = Architecture::kDeepseekV3;
  c.index_n_heads = 0;
  c.index_head_dim = 0;
  c.index_topk = 0;
  return c;
}

std::vector<ModelPreset> make_presets() {
  return {
      {"tiny", "test model: every tensor kind, FP8 edge blocks", tiny()},
      {"tiny-v3", "tiny without the indexer (DeepseekV3ForCausalLM)", without_indexer(tiny())},
      {"small", "DeepSeek vocabulary, 8 layers: runs and trains on a small CPU", small()},
      {"medium", "DeepSeek vocabulary, 16 layers, 32 experts: single-GPU experiments", medium()},
      {"v3.2-671b", "DeepSeek-V3.2 (the real shapes)", deepseek_v32_671b()},
      {"v3-671b", "DeepSeek-V3.1 shapes without the indexer: dense-attention baseline",
       without_indexer(deepseek_v32_671b())},
  };
}

}  // namespace

const std::vector<ModelPreset>& model_presets() {
  static const std::vector<ModelPreset> presets = [] {
    std::vector<ModelPreset> all = make_presets();
    for (const ModelPreset& preset : all) validate_model_config(preset.config, preset.name);
    return all;
  }();
  return presets;
}

const ModelPreset& find_model_preset(std::string_view name) {
  std::string known;
  for (const ModelPreset& preset : model_presets()) {
    if (preset.name == name) return preset;
    known += (known.empty() ? "" : ", ") + preset.name;
  }
  fail("unknown model preset '{}' (known: {})", name, known);
}

}  // namespace dsa

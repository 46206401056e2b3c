// ModelConfig: parsing DeepSeek's Hugging Face config.json, writing it back, and every rejection
// naming its key.
#include <gtest/gtest.h>

#include <functional>

#include "core/error.h"
#include "model/config.h"
#include "support/test_util.h"

namespace dsa {
namespace {

using nlohmann::json;

// DeepSeek-V3.2's config.json as dsa-reference.md §1.2 gives it, plus an extra key.
json v32_config() {
  return json::parse(R"({
    "architectures": ["DeepseekV32ForCausalLM"], "model_type": "deepseek_v32",
    "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432,
    "moe_intermediate_size": 2048, "num_hidden_layers": 61, "num_nextn_predict_layers": 1,
    "num_attention_heads": 128, "num_key_value_heads": 128, "n_shared_experts": 1,
    "n_routed_experts": 256, "routed_scaling_factor": 2.5, "kv_lora_rank": 512,
    "q_lora_rank": 1536, "qk_rope_head_dim": 64, "v_head_dim": 128, "qk_nope_head_dim": 128,
    "topk_method": "noaux_tc", "n_group": 8, "topk_group": 4, "num_experts_per_tok": 8,
    "moe_layer_freq": 1, "first_k_dense_replace": 3, "norm_topk_prob": true,
    "scoring_func": "sigmoid", "hidden_act": "silu", "max_position_embeddings": 163840,
    "initializer_range": 0.02, "rms_norm_eps": 1e-06, "use_cache": true, "bos_token_id": 0,
    "eos_token_id": 1, "rope_theta": 10000,
    "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                     "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
    "attention_bias": false, "attention_dropout": 0.0, "tie_word_embeddings": false,
    "torch_dtype": "bfloat16",
    "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                            "weight_block_size": [128, 128], "scale_fmt": "ue8m0"},
    "index_n_heads": 64, "index_head_dim": 128, "index_topk": 2048,
    "transformers_version": "4.46.3"
  })");
}

TEST(ModelConfig, ParsesDeepseekV32) {
  const ModelConfig c = parse_model_config(v32_config());
  EXPECT_EQ(c.architecture, Architecture::kDeepseekV32);
  EXPECT_EQ(c.hidden_size, 7168);
  EXPECT_EQ(c.num_hidden_layers, 61);
  EXPECT_EQ(c.total_layers(), 62);
  EXPECT_EQ(c.q_lora_rank, 1536);
  EXPECT_EQ(c.qk_head_dim(), 192);
  EXPECT_EQ(c.n_group, 8);
  EXPECT_EQ(c.topk_group, 4);
  EXPECT_DOUBLE_EQ(c.routed_scaling_factor, 2.5);
  ASSERT_TRUE(c.rope_scaling.has_value());
  EXPECT_DOUBLE_EQ(c.rope_scaling->factor, 40.0);
  EXPECT_EQ(c.rope_scaling->original_max_position_embeddings, 4096);
  ASSERT_TRUE(c.fp8());
  EXPECT_EQ(c.quantization->scale_fmt, "ue8m0");
  EXPECT_EQ(c.index_n_heads, 64);
  EXPECT_EQ(c.index_head_dim, 128);
  EXPECT_EQ(c.index_topk, 2048);
  EXPECT_FALSE(c.is_moe_layer(2));
  EXPECT_TRUE(c.is_moe_layer(3));
  EXPECT_EQ(c.extra, json({{"transformers_version", "4.46.3"}}));
}

TEST(ModelConfig, RoundTripsThroughJson) {
  const json original = v32_config();
  const json written = model_config_to_json(parse_model_config(original));
  // Every key comes back with an equal value (integers written as floats compare equal).
  for (const auto& [key, value] : original.items()) {
    ASSERT_TRUE(written.contains(key)) << key;
    EXPECT_EQ(written[key], value) << key;
  }
  EXPECT_EQ(model_config_to_json(parse_model_config(written)), written);
}

TEST(ModelConfig, DefaultsAndV3WithoutIndexer) {
  json j = v32_config();
  j["architectures"] = {"DeepseekV3ForCausalLM"};
  j["model_type"] = "deepseek_v3";
  j["q_lora_rank"] = nullptr;
  for (const char* key : {"num_key_value_heads", "topk_method", "n_group", "topk_group",
                          "rope_scaling", "quantization_config", "num_nextn_predict_layers"}) {
    j.erase(key);
  }
  const ModelConfig c = parse_model_config(j);
  EXPECT_FALSE(c.has_indexer());
  EXPECT_FALSE(c.has_q_lora());
  EXPECT_FALSE(c.fp8());
  EXPECT_FALSE(c.rope_scaling.has_value());
  EXPECT_EQ(c.num_key_value_heads, 128);
  EXPECT_EQ(c.n_group, 1);
  EXPECT_EQ(c.num_nextn_predict_layers, 0);
  EXPECT_EQ(c.index_topk, 0);
  // V3 ignores the index_* keys but keeps them for writing back.
  EXPECT_EQ(c.extra["index_topk"], 2048);
  const json written = model_config_to_json(c);
  EXPECT_TRUE(written["q_lora_rank"].is_null());
  EXPECT_FALSE(written.contains("quantization_config"));
}

struct Rejection {
  std::string label;
  std::function<void(json&)> edit;
  std::string message;  // a substring the error must contain
};

class ModelConfigRejects : public ::testing::TestWithParam<Rejection> {};

TEST_P(ModelConfigRejects, NamesTheKey) {
  json j = v32_config();
  GetParam().edit(j);
  try {
    parse_model_config(j);
    FAIL() << "accepted: " << GetParam().label;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(GetParam().message), std::string::npos)
        << "message: " << e.what();
    EXPECT_EQ(std::string(e.what()).rfind("config.json: ", 0), 0u) << e.what();
  }
}

const Rejection kRejections[] = {
    {"no_architectures", [](json& j) { j.erase("architectures"); },
     "missing required key 'architectures'"},
    {"llama", [](json& j) { j["architectures"] = {"LlamaForCausalLM"}; },
     "'architectures' must be"},
    {"model_type", [](json& j) { j["model_type"] = "deepseek_v3"; }, "'model_type' must be"},
    {"hidden_string", [](json& j) { j["hidden_size"] = "7168"; },
     "'hidden_size' must be an integer, got string"},
    {"hidden_fraction", [](json& j) { j["hidden_size"] = 7168.5; },
     "'hidden_size' must be an integer"},
    {"no_vocab", [](json& j) { j.erase("vocab_size"); }, "missing required key 'vocab_size'"},
    {"negative_layers", [](json& j) { j["num_hidden_layers"] = -1; },
     "'num_hidden_layers' must be between 1 and"},
    // Issue 15 item 1: a zero (parsed as unsigned) used to pass every minimum; n_group 0 then
    // divided by zero in the checks below.
    {"zero_groups", [](json& j) { j["n_group"] = 0; }, "'n_group' must be between 1 and"},
    {"zero_layers", [](json& j) { j["num_hidden_layers"] = 0; },
     "'num_hidden_layers' must be between 1 and"},
    {"zero_heads", [](json& j) { j["num_attention_heads"] = 0; },
     "'num_attention_heads' must be between 1 and"},
    {"zero_topk", [](json& j) { j["index_topk"] = 0; }, "'index_topk' must be between 1 and"},
    {"groups", [](json& j) { j["n_group"] = 7; },
     "config.json: 'n_routed_experts' must be divisible by 'n_group' (256 vs 7)"},
    {"group_size", [](json& j) { j["n_group"] = 256; }, "'n_group' must leave at least 2 experts"},
    {"topk_group", [](json& j) { j["topk_group"] = 9; },
     "'topk_group' must be at most 'n_group' (9 vs 8)"},
    {"experts_per_tok", [](json& j) { j["num_experts_per_tok"] = 129; },
     "'num_experts_per_tok' must be at most"},
    {"kv_heads", [](json& j) { j["num_key_value_heads"] = 1; }, "'num_key_value_heads' must equal"},
    {"dense_layers", [](json& j) { j["first_k_dense_replace"] = 62; },
     "'first_k_dense_replace' must be at most 'num_hidden_layers'"},
    {"moe_freq", [](json& j) { j["moe_layer_freq"] = 2; }, "'moe_layer_freq' must be 1"},
    {"scoring", [](json& j) { j["scoring_func"] = "softmax"; },
     "'scoring_func' must be \"sigmoid\", got \"softmax\""},
    {"topk_method", [](json& j) { j["topk_method"] = "greedy"; }, "'topk_method' must be"},
    {"activation", [](json& j) { j["hidden_act"] = "gelu"; }, "'hidden_act' must be"},
    {"norm_topk_type", [](json& j) { j["norm_topk_prob"] = "yes"; },
     "'norm_topk_prob' must be true or false"},
    {"rope_type", [](json& j) { j["rope_scaling"]["type"] = "linear"; },
     "'rope_scaling.type' must be \"yarn\""},
    {"rope_kind", [](json& j) { j["rope_scaling"]["rope_type"] = "dynamic"; },
     "'rope_scaling.rope_type' must be \"yarn\""},
    {"rope_no_kind", [](json& j) { j["rope_scaling"].erase("type"); },
     "missing required key 'rope_scaling.type'"},
    {"rope_factor", [](json& j) { j["rope_scaling"].erase("factor"); },
     "missing required key 'rope_scaling.factor'"},
    {"rope_beta", [](json& j) { j["rope_scaling"]["beta_slow"] = 64; },
     "'rope_scaling.beta_fast' must be greater than 'rope_scaling.beta_slow'"},
    {"quant_method", [](json& j) { j["quantization_config"]["quant_method"] = "int8"; },
     "'quantization_config.quant_method' must be \"fp8\""},
    {"quant_block",
     [](json& j) {
       j["quantization_config"]["weight_block_size"] = {64, 64};
     },
     "'quantization_config.weight_block_size' must be [128, 128]"},
    {"quant_scale_fmt", [](json& j) { j["quantization_config"]["scale_fmt"] = "e8m0"; },
     "'quantization_config.scale_fmt' must be"},
    {"fp8_hidden", [](json& j) { j["hidden_size"] = 7100; },
     "'hidden_size' must be a multiple of 128 with FP8 weights"},
    {"fp8_moe_inter", [](json& j) { j["moe_intermediate_size"] = 2000; },
     "'moe_intermediate_size' must be a multiple of 128"},
    {"kv_lora", [](json& j) { j["kv_lora_rank"] = 500; },
     "'kv_lora_rank' must be a multiple of 128"},
    {"odd_rope", [](json& j) { j["qk_rope_head_dim"] = 63; }, "'qk_rope_head_dim' must be even"},
    {"no_index_topk", [](json& j) { j.erase("index_topk"); }, "missing required key 'index_topk'"},
    {"index_head_dim", [](json& j) { j["index_head_dim"] = 96; }, "'index_head_dim' must be 128"},
    {"index_head_dim_256", [](json& j) { j["index_head_dim"] = 256; },
     "'index_head_dim' must be 128 (DeepSeek's reference quantizes"},
    {"index_vs_rope", [](json& j) { j["qk_rope_head_dim"] = 256; },
     "'index_head_dim' must be at least 'qk_rope_head_dim' (128 vs 256)"},
    {"no_q_lora", [](json& j) { j["q_lora_rank"] = nullptr; }, "'q_lora_rank' must be positive"},
    {"missing_q_lora", [](json& j) { j.erase("q_lora_rank"); },
     "missing required key 'q_lora_rank'"},
    {"tied", [](json& j) { j["tie_word_embeddings"] = true; },
     "'tie_word_embeddings' must be false"},
    {"bias", [](json& j) { j["attention_bias"] = true; }, "'attention_bias' must be false"},
    {"eos", [](json& j) { j["eos_token_id"] = 129280; },
     "'eos_token_id' must be below 'vocab_size'"},
    {"dtype", [](json& j) { j["torch_dtype"] = "int8"; }, "'torch_dtype' must be"},
    {"not_object", [](json& j) { j = json::array({1}); }, "expected a JSON object, got array"},
};

INSTANTIATE_TEST_SUITE_P(Cases, ModelConfigRejects, ::testing::ValuesIn(kRejections),
                         [](const auto& test_info) { return test_info.param.label; });

TEST(ModelConfig, LoadsFromFolderAndNamesBadFiles) {
  test::TempDir dir;
  test::write_text_file(dir / "config.json", v32_config().dump());
  EXPECT_EQ(load_model_config(dir.path()).hidden_size, 7168);
  EXPECT_EQ(load_model_config(dir / "config.json").index_topk, 2048);

  test::write_text_file(dir / "config.json", "{\"hidden_size\": 1, \"hidden_size\": 2}");
  try {
    load_model_config(dir.path());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("config.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("hidden_size"), std::string::npos) << e.what();
  }
  test::write_text_file(dir / "config.json", "{\"vocab_size\": ");
  EXPECT_THROW(load_model_config(dir.path()), Error);
  EXPECT_THROW(load_model_config(dir / "absent.json"), Error);
}

}  // namespace
}  // namespace dsa

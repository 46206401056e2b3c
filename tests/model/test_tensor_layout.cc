// The tensor layout: names, shapes and dtypes against a hand-derived list (tiny preset), the
// variants (BF16, no q_lora, V3), and parameter counts of the real 671B shapes.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>

#include "model/presets.h"
#include "model/tensor_layout.h"
#include "support/test_util.h"

namespace dsa {
namespace {

std::string describe(const std::string& name, DType dtype, const Shape& shape) {
  std::string dims;
  for (int64_t d : shape.dims()) dims += (dims.empty() ? "" : ",") + std::to_string(d);
  return name + " " + std::string(dtype_name(dtype)) + " " + dims;
}

// tests/data/model/tiny_tensors.txt, written by tiny_tensors.py from the naming rules.
std::vector<std::string> expected_tiny_tensors() {
  std::ifstream in(test::data_dir() / "model" / "tiny_tensors.txt");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<std::string> layout_lines(const ModelConfig& config) {
  std::vector<std::string> lines;
  for (const CheckpointTensor& t : checkpoint_tensors(model_parameters(config))) {
    lines.push_back(describe(t.name, t.dtype, t.shape));
  }
  return lines;
}

TEST(TensorLayout, TinyMatchesTheHandDerivedList) {
  const std::vector<std::string> expected = expected_tiny_tensors();
  ASSERT_EQ(expected.size(), 190u);
  EXPECT_EQ(layout_lines(find_model_preset("tiny").config), expected);
}

TEST(TensorLayout, Bf16HasNoScales) {
  ModelConfig config = find_model_preset("tiny").config;
  config.quantization.reset();
  std::vector<std::string> expected;
  for (std::string line : expected_tiny_tensors()) {
    if (line.find("weight_scale_inv") != std::string::npos) continue;
    const size_t at = line.find(" F8_E4M3 ");
    if (at != std::string::npos) line.replace(at, 9, " BF16 ");
    expected.push_back(line);
  }
  EXPECT_EQ(layout_lines(config), expected);
}

TEST(TensorLayout, QueryWithoutLoraUsesQProj) {
  ModelConfig config = find_model_preset("tiny-v3").config;
  config.q_lora_rank = 0;
  std::map<std::string, Shape> shapes;
  for (const ParameterSpec& p : model_parameters(config)) shapes[p.name] = p.shape;
  EXPECT_EQ(shapes.count("model.layers.0.self_attn.q_a_proj.weight"), 0u);
  EXPECT_EQ(shapes.count("model.layers.0.self_attn.q_b_proj.weight"), 0u);
  ASSERT_EQ(shapes.count("model.layers.0.self_attn.q_proj.weight"), 1u);
  EXPECT_EQ(shapes["model.layers.0.self_attn.q_proj.weight"], (Shape{4 * 96, 256}));
}

TEST(TensorLayout, V3HasNoIndexer) {
  const std::vector<std::string> v3 = layout_lines(find_model_preset("tiny-v3").config);
  size_t indexer_lines = 0;
  for (const std::string& line : expected_tiny_tensors()) {
    indexer_lines += line.find(".indexer.") != std::string::npos;
  }
  EXPECT_EQ(indexer_lines, 3u * 7u);  // 3 layers x (wq_b, wk + scales, k_norm x2, weights_proj)
  EXPECT_EQ(v3.size(), expected_tiny_tensors().size() - indexer_lines);
  for (const std::string& line : v3) EXPECT_EQ(line.find(".indexer."), std::string::npos) << line;
}

TEST(TensorLayout, InitRules) {
  const ModelConfig config = find_model_preset("tiny").config;
  std::map<std::string, ParameterSpec> specs;
  for (const ParameterSpec& p : model_parameters(config)) specs.emplace(p.name, p);
  const auto& q_b = specs.at("model.layers.0.self_attn.q_b_proj.weight");
  EXPECT_EQ(q_b.init, InitRule::kNormal);
  EXPECT_DOUBLE_EQ(q_b.init_std, 1.0 / std::sqrt(128.0));
  // Output projections are scaled by 1/sqrt(2 * layers) = 1/2 for 2 layers.
  EXPECT_DOUBLE_EQ(specs.at("model.layers.0.self_attn.o_proj.weight").init_std,
                   0.5 / std::sqrt(128.0));
  EXPECT_DOUBLE_EQ(specs.at("model.layers.1.mlp.experts.3.down_proj.weight").init_std,
                   0.5 / std::sqrt(128.0));
  EXPECT_EQ(specs.at("model.layers.1.input_layernorm.weight").init, InitRule::kOnes);
  EXPECT_EQ(specs.at("model.layers.1.self_attn.indexer.k_norm.bias").init, InitRule::kZeros);
  EXPECT_EQ(specs.at("model.layers.1.mlp.gate.e_score_correction_bias").init, InitRule::kZeros);
  EXPECT_EQ(specs.at("model.layers.2.embed_tokens.weight").init_key, "model.embed_tokens.weight");
  EXPECT_EQ(specs.at("model.layers.2.shared_head.head.weight").init_key, "lm_head.weight");
  EXPECT_TRUE(specs.at("model.layers.2.eh_proj.weight").mtp);
  EXPECT_FALSE(specs.at("model.layers.1.mlp.gate.weight").mtp);
  EXPECT_EQ(specs.at("model.layers.1.mlp.gate.weight").module, Module::kGate);
  EXPECT_EQ(specs.at("model.layers.1.self_attn.indexer.wk.weight").module, Module::kIndexer);
}

// Parameter counts of DeepSeek-V3.2 from the module shapes in dsa-reference.md §3.2, §5.1, §6.
TEST(TensorLayout, Counts671B) {
  const int64_t h = 7168, vocab = 129280, layers = 61, dense = 3;
  const int64_t attention =
      1536 * h + 1536 + 24576 * 1536 + 576 * h + 512 + 32768 * 512 + h * 16384;
  const int64_t indexer = 8192 * 1536 + 128 * h + 2 * 128 + 64 * h;
  EXPECT_EQ(indexer, 13959424);  // §3.2
  const int64_t norms = 2 * h;
  const int64_t dense_mlp = 3 * 18432 * h;
  const int64_t expert = 3 * 2048 * h;
  const int64_t moe = 256 * h + 256 + 256 * expert + expert;
  const int64_t embed = vocab * h;
  const int64_t v3_main =
      embed + layers * (attention + norms) + dense * dense_mlp + (layers - dense) * moe + h + embed;
  const int64_t v32_main = v3_main + layers * indexer;
  const int64_t v32_mtp = attention + indexer + norms + moe + embed + 2 * h + 2 * h * h + h + embed;

  const ParameterCounts v32 = count_parameters(find_model_preset("v3.2-671b").config);
  EXPECT_EQ(v32.main_model, v32_main);
  EXPECT_EQ(v32.mtp, v32_mtp);
  EXPECT_EQ(v32.by_module[int(Module::kIndexer)], layers * indexer);
  EXPECT_EQ(v32.by_module[int(Module::kRoutedExperts)], (layers - dense) * 256 * expert);
  // "671B" main model, "685B" with the MTP module, "37B activated" (DeepSeek's figures).
  EXPECT_NEAR(double(v3_main), 671e9, 1e9);
  EXPECT_NEAR(double(v32.total()), 685e9, 2e9);
  EXPECT_NEAR(double(v32.activated_per_token), 37.5e9, 1.5e9);
  const ParameterCounts v3 = count_parameters(find_model_preset("v3-671b").config);
  EXPECT_EQ(v3.main_model, v3_main);
  EXPECT_EQ(v3.by_module[int(Module::kIndexer)], 0);
}

TEST(TensorLayout, ScaleShapes671B) {
  std::map<std::string, Shape> shapes;
  for (const CheckpointTensor& t :
       checkpoint_tensors(model_parameters(find_model_preset("v3.2-671b").config))) {
    if (t.name.starts_with("model.layers.3.")) shapes[t.name.substr(15)] = t.shape;
  }
  // dsa-reference.md §3.2 and §5.1.
  EXPECT_EQ(shapes.at("self_attn.q_a_proj.weight_scale_inv"), (Shape{12, 56}));
  EXPECT_EQ(shapes.at("self_attn.q_b_proj.weight_scale_inv"), (Shape{192, 12}));
  EXPECT_EQ(shapes.at("self_attn.kv_a_proj_with_mqa.weight_scale_inv"), (Shape{5, 56}));
  EXPECT_EQ(shapes.at("self_attn.kv_b_proj.weight_scale_inv"), (Shape{256, 4}));
  EXPECT_EQ(shapes.at("self_attn.o_proj.weight_scale_inv"), (Shape{56, 128}));
  EXPECT_EQ(shapes.at("self_attn.indexer.wq_b.weight_scale_inv"), (Shape{64, 12}));
  EXPECT_EQ(shapes.at("self_attn.indexer.wk.weight_scale_inv"), (Shape{1, 56}));
  EXPECT_EQ(shapes.at("mlp.experts.255.down_proj.weight_scale_inv"), (Shape{56, 16}));
  EXPECT_EQ(shapes.at("mlp.gate.weight"), (Shape{256, 7168}));
}

TEST(TensorLayout, KvCacheBytes) {
  // dsa-reference.md §5.6 and §3.6: 656 B of latent and 132 B of indexer key per token and layer.
  const KvCacheBytes v32 = kv_cache_bytes_per_token(find_model_preset("v3.2-671b").config);
  EXPECT_EQ(v32.latent, 656);
  EXPECT_EQ(v32.indexer, 132);
  EXPECT_EQ(v32.per_layer() * 61, 48068);
  const KvCacheBytes v3 = kv_cache_bytes_per_token(find_model_preset("v3-671b").config);
  EXPECT_EQ(v3.per_layer(), 656);
}

TEST(ModelPresets, AllValidAndFindable) {
  for (const ModelPreset& preset : model_presets()) {
    EXPECT_NO_THROW(validate_model_config(preset.config, preset.name)) << preset.name;
    EXPECT_EQ(&find_model_preset(preset.name), &preset);
  }
  const int64_t small = count_parameters(find_model_preset("small").config).main_model;
  EXPECT_GT(small, 100'000'000);
  EXPECT_LT(small, 300'000'000);
  try {
    find_model_preset("huge");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown model preset 'huge' (known: tiny"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace dsa

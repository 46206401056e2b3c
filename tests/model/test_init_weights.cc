// Random initialization: the counter-based normal stream, determinism across threads and seeds,
// the init rules, and FP8 weights that dequantize to the intended distribution.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/fp8_quant.h"
#include "core/safetensors.h"
#include "model/init_weights.h"
#include "model/presets.h"
#include "support/test_util.h"

namespace dsa {
namespace {

struct Moments {
  double mean = 0, std = 0;
};

Moments moments(const std::vector<float>& values) {
  double sum = 0, sum_sq = 0;
  for (float v : values) sum += v;
  const double mean = sum / double(values.size());
  for (float v : values) sum_sq += (v - mean) * (v - mean);
  return {mean, std::sqrt(sum_sq / double(values.size()))};
}

TEST(InitWeights, StandardNormalStream) {
  const uint64_t key = init_stream_key(7, "some.tensor");
  constexpr int kSamples = 200000;
  std::vector<float> values(kSamples);
  int beyond_3_sigma = 0;
  for (int i = 0; i < kSamples; ++i) {
    values[i] = init_standard_normal(key, uint64_t(i));
    ASSERT_TRUE(std::isfinite(values[i]));
    beyond_3_sigma += std::fabs(values[i]) > 3.0f;
  }
  const Moments m = moments(values);
  // Five standard errors: mean 1/sqrt(n) = 0.0022, std sqrt(1/(2n)) = 0.0016.
  EXPECT_NEAR(m.mean, 0.0, 0.011);
  EXPECT_NEAR(m.std, 1.0, 0.008);
  // P(|z| > 3) = 0.0027; binomial standard error sqrt(p/n) = 0.00012, five of them.
  EXPECT_NEAR(double(beyond_3_sigma) / kSamples, 0.0027, 0.0006);
  // Counter-based: any element can be computed alone, and keys separate streams.
  EXPECT_EQ(init_standard_normal(key, 12345), values[12345]);
  EXPECT_NE(init_standard_normal(init_stream_key(8, "some.tensor"), 0), values[0]);
  EXPECT_NE(init_standard_normal(init_stream_key(7, "other.tensor"), 0), values[0]);
}

TEST(InitWeights, ValuesIndependentOfThreads) {
  ParameterSpec spec;
  spec.name = spec.init_key = "w";
  spec.shape = Shape{300, 1000};
  spec.dtype = DType::BF16;
  spec.module = Module::kAttention;
  spec.init_std = 0.5;
  std::vector<float> one(300000), two(300000);
  ThreadPool pool1(1), pool2(2);
  init_parameter_values(spec, 3, one, pool1);
  init_parameter_values(spec, 3, two, pool2);
  EXPECT_EQ(one, two);
  EXPECT_NEAR(moments(one).std, 0.5, 0.5 * 0.01);  // 5 standard errors of sqrt(1/(2n)) = 0.13%
}

class TinyCheckpoint : public ::testing::Test {
 protected:
  static void write(const std::filesystem::path& dir, uint64_t seed, int threads) {
    ThreadPool pool(threads);
    SafetensorsWriter writer;
    add_initial_weights(model_parameters(find_model_preset("tiny").config), seed, pool, writer);
    writer.write_checkpoint(dir, uint64_t(1) << 40);
  }

  static std::vector<float> dequantized(const Checkpoint& ckpt, const std::string& name) {
    const TensorView w = ckpt.view(name + ".weight");
    const TensorView s = ckpt.view(name + ".weight_scale_inv");
    std::vector<float> out(size_t(w.numel()));
    dequantize_weight_fp8(w.data<fp8_e4m3>(), s.data<float>(), w.shape()[0], w.shape()[1],
                          out.data());
    return out;
  }

  static std::vector<float> bf16_values(const Checkpoint& ckpt, const std::string& name) {
    const TensorView view = ckpt.view(name);
    std::vector<float> out(size_t(view.numel()));
    for (size_t i = 0; i < out.size(); ++i) out[i] = bf16_to_float(view.data<bf16>()[i]);
    return out;
  }

  test::TempDir dir_;
};

TEST_F(TinyCheckpoint, SameBytesForAnyThreadCount) {
  write(dir_ / "a", 5, 1);
  write(dir_ / "b", 5, 2);
  write(dir_ / "c", 6, 2);
  const std::string a = test::read_text_file(dir_ / "a" / "model.safetensors");
  EXPECT_EQ(a, test::read_text_file(dir_ / "b" / "model.safetensors"));
  EXPECT_NE(a, test::read_text_file(dir_ / "c" / "model.safetensors"));
}

TEST_F(TinyCheckpoint, DistributionsFollowTheRules) {
  write(dir_.path(), 11, 2);
  const Checkpoint ckpt(dir_.path());

  // FP8 projection: std 1/sqrt(fan_in). Tolerance: sampling error sqrt(1/(2n)) = 0.3% for
  // n = 49152 plus FP8 rounding (relative error <= 2^-4, which moves the std by < 0.1%): 3%.
  const std::vector<float> q_b = dequantized(ckpt, "model.layers.0.self_attn.q_b_proj");
  EXPECT_NEAR(moments(q_b).std, 1.0 / std::sqrt(128.0), 0.03 / std::sqrt(128.0));
  EXPECT_NEAR(moments(q_b).mean, 0.0, 5.0 / std::sqrt(128.0 * 49152.0));
  // Output projection scaled by 1/sqrt(2 * 2 layers); n = 32768.
  const std::vector<float> o = dequantized(ckpt, "model.layers.1.self_attn.o_proj");
  EXPECT_NEAR(moments(o).std, 0.5 / std::sqrt(128.0), 0.03 * 0.5 / std::sqrt(128.0));

  // Each 128x128 block's scale is amax / 448, so its largest code is +-448 exactly.
  const TensorView codes = ckpt.view("model.layers.0.self_attn.kv_a_proj_with_mqa.weight");
  const TensorView scales =
      ckpt.view("model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv");
  ASSERT_EQ(codes.shape(), (Shape{192, 256}));
  ASSERT_EQ(scales.shape(), (Shape{2, 2}));
  for (int64_t br = 0; br < 2; ++br) {
    for (int64_t bc = 0; bc < 2; ++bc) {
      float block_max = 0;
      for (int64_t r = br * 128; r < std::min<int64_t>(192, br * 128 + 128); ++r) {
        for (int64_t c = bc * 128; c < bc * 128 + 128; ++c) {
          block_max =
              std::max(block_max, std::fabs(fp8_to_float(codes.data<fp8_e4m3>()[r * 256 + c])));
        }
      }
      EXPECT_EQ(block_max, 448.0f) << br << "," << bc;
      EXPECT_GT(scales.data<float>()[br * 2 + bc], 0.0f);
    }
  }

  // BF16 embedding with unit std (n = 262144), copied exactly into the MTP layer.
  const std::vector<float> embed = bf16_values(ckpt, "model.embed_tokens.weight");
  EXPECT_NEAR(moments(embed).std, 1.0, 0.01);
  EXPECT_EQ(embed, bf16_values(ckpt, "model.layers.2.embed_tokens.weight"));
  EXPECT_EQ(bf16_values(ckpt, "lm_head.weight"),
            bf16_values(ckpt, "model.layers.2.shared_head.head.weight"));
  EXPECT_NE(embed, bf16_values(ckpt, "lm_head.weight"));

  for (float v : bf16_values(ckpt, "model.layers.1.post_attention_layernorm.weight")) {
    ASSERT_EQ(v, 1.0f);
  }
  for (float v : bf16_values(ckpt, "model.layers.0.self_attn.indexer.k_norm.bias")) {
    ASSERT_EQ(v, 0.0f);
  }
  const TensorView bias = ckpt.view("model.layers.1.mlp.gate.e_score_correction_bias");
  ASSERT_EQ(bias.dtype(), DType::F32);
  for (int i = 0; i < 8; ++i) ASSERT_EQ(bias.data<float>()[i], 0.0f);
}

}  // namespace
}  // namespace dsa

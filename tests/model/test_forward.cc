// The forward pass on random tiny models: schedules that must agree (chunked prefill from any
// position, prefill vs decode, auto vs sparse), a case where sparse and dense must differ, the
// cache, and the errors a user can cause. Parity with the independent Python reference is in
// test_reference_parity.cc.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <set>

#include "core/error.h"
#include "core/safetensors_writer.h"
#include "core/thread_pool.h"
#include "model/forward.h"
#include "support/model_fixture.h"
#include "support/test_util.h"

namespace dsa {
namespace {

using test::TempDir;

struct Difference {
  double max_abs = 0;
  double rms_relative = 0;  // rms(a - b) / rms(b)
};

Difference compare(const std::vector<float>& a, const std::vector<float>& b, size_t begin = 0,
                   size_t end = SIZE_MAX) {
  end = std::min(end, a.size());
  double diff2 = 0, ref2 = 0, max_abs = 0;
  for (size_t i = begin; i < end; ++i) {
    const double d = double(a[i]) - double(b[i]);
    diff2 += d * d;
    ref2 += double(b[i]) * double(b[i]);
    max_abs = std::max(max_abs, std::abs(d));
  }
  return {max_abs, std::sqrt(diff2 / ref2)};
}

// Two schedules of the same computation differ only where a different summation order (GEMM
// kernels chosen by row count, MQA vs MHA attention) flips a bf16 rounding. One flip moves a
// value by one bf16 ulp (2^-7 relative at most); through a couple of layers a few such flips
// reach each logit, so agreement within 2^-5 of the logits' RMS is what bf16 allows, while a
// real semantic difference (a missing key, a wrong position) shows up as tens of percent.
constexpr double kScheduleTolerance = 1.0 / 32;

std::vector<int32_t> test_tokens(int64_t count, int64_t vocab) {
  std::vector<int32_t> tokens(static_cast<size_t>(count));
  uint64_t state = 12345;
  for (int32_t& t : tokens) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    t = int32_t((state >> 33) % uint64_t(vocab));
  }
  return tokens;
}

class ForwardTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    test::write_random_model(dir_->path() / "tiny", test::preset_config("tiny"), 7);
    test::write_random_model(dir_->path() / "tiny-bf16", test::preset_config("tiny", false), 7);
    test::write_random_model(dir_->path() / "tiny-v3", test::preset_config("tiny-v3"), 7);
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::filesystem::path model_dir(const std::string& name) { return dir_->path() / name; }

  ThreadPool pool_{2};
  static TempDir* dir_;
};
TempDir* ForwardTest::dir_ = nullptr;

std::vector<float> run(const Model& model, const std::vector<int32_t>& tokens, int64_t prefill,
                       int64_t chunk, AttentionMode mode, ThreadPool& pool,
                       PrefillKernel kernel = PrefillKernel::kAuto) {
  ForwardOptions options;
  options.attention = mode;
  options.prefill_kernel = kernel;
  return sequence_logits(model, tokens, prefill, chunk, options, pool);
}

// Discrete steps amplify rounding differences on these random tiny models: FP8 models
// re-quantize every projection input to 3 mantissa bits, and top-k and MoE routing switch keys
// and experts at near-ties. So schedules are compared with the same attention kernel (they then
// differ only in GEMM batch sizes, i.e. summation order), and the two kernels, which round
// differently, are compared on the bf16 model with dense attention.
TEST_F(ForwardTest, ChunkedPrefillFromAnyPositionMatchesWholePrefill) {
  for (const char* name : {"tiny", "tiny-bf16"}) {
    for (PrefillKernel kernel : {PrefillKernel::kAbsorbed, PrefillKernel::kMha}) {
      const auto model = Model::load(model_dir(name), pool_);
      const auto tokens = test_tokens(40, model->config().vocab_size);
      const auto whole = run(*model, tokens, 40, 40, AttentionMode::kSparse, pool_, kernel);
      for (int64_t chunk : {2, 7, 10, 16}) {
        const auto chunked = run(*model, tokens, 40, chunk, AttentionMode::kSparse, pool_, kernel);
        EXPECT_LT(compare(chunked, whole).rms_relative, kScheduleTolerance)
            << name << ", " << prefill_kernel_name(kernel) << ", chunk " << chunk;
      }
    }
  }
}

TEST_F(ForwardTest, DecodeMatchesPrefill) {
  for (const char* name : {"tiny", "tiny-bf16", "tiny-v3"}) {
    const auto model = Model::load(model_dir(name), pool_);
    const auto tokens = test_tokens(30, model->config().vocab_size);
    const AttentionMode mode =
        model->config().has_indexer() ? AttentionMode::kSparse : AttentionMode::kDense;
    const auto prefill = run(*model, tokens, 30, 30, mode, pool_, PrefillKernel::kAbsorbed);
    const auto decode = run(*model, tokens, 0, 1, mode, pool_);
    EXPECT_LT(compare(decode, prefill).rms_relative, kScheduleTolerance) << name;
  }
}

TEST_F(ForwardTest, MhaAndAbsorbedKernelsAgree) {
  const auto model = Model::load(model_dir("tiny-bf16"), pool_);
  const auto tokens = test_tokens(40, model->config().vocab_size);
  const auto mha = run(*model, tokens, 40, 40, AttentionMode::kDense, pool_, PrefillKernel::kMha);
  const auto absorbed =
      run(*model, tokens, 40, 40, AttentionMode::kDense, pool_, PrefillKernel::kAbsorbed);
  EXPECT_LT(compare(mha, absorbed).rms_relative, kScheduleTolerance);
}

TEST_F(ForwardTest, AutoGivesSparseResults) {
  const auto model = Model::load(model_dir("tiny"), pool_);
  const auto tokens = test_tokens(40, model->config().vocab_size);
  // Chunks of 8: the first two (positions < 16 = index_topk) take the dense kernels under auto.
  const auto sparse =
      run(*model, tokens, 24, 8, AttentionMode::kSparse, pool_, PrefillKernel::kAbsorbed);
  const auto automatic =
      run(*model, tokens, 24, 8, AttentionMode::kAuto, pool_, PrefillKernel::kAbsorbed);
  EXPECT_LT(compare(automatic, sparse).rms_relative, kScheduleTolerance);
}

TEST_F(ForwardTest, SparseEqualsDenseUpToTopkAndDiffersBeyond) {
  const auto model = Model::load(model_dir("tiny"), pool_);
  const int64_t topk = model->config().index_topk;  // 16
  const int64_t vocab = model->config().vocab_size;
  const auto tokens = test_tokens(48, vocab);
  const auto sparse = run(*model, tokens, 48, 48, AttentionMode::kSparse, pool_);
  const auto dense = run(*model, tokens, 48, 48, AttentionMode::kDense, pool_);
  // Rows 0 .. topk-1 see at most topk keys: the same attention.
  EXPECT_LT(compare(sparse, dense, 0, size_t(topk * vocab)).rms_relative, kScheduleTolerance);
  // Rows 32 .. 47 see 33..48 keys of which sparse keeps 16: selection must change the result.
  EXPECT_GT(compare(sparse, dense, size_t(32 * vocab)).rms_relative, 4 * kScheduleTolerance);
}

TEST_F(ForwardTest, LastRowLogitsEqualTheAllRowsRun) {
  const auto model = Model::load(model_dir("tiny"), pool_);
  const int64_t vocab = model->config().vocab_size;
  const auto tokens = test_tokens(12, vocab);
  KvCache all_cache(model->config(), 12), last_cache(model->config(), 12);
  std::vector<float> all(static_cast<size_t>(12 * vocab));
  std::vector<float> last(static_cast<size_t>(vocab));
  ForwardOptions options;
  options.all_logits = true;
  model->forward(tokens, all_cache, all, options, pool_);
  options.all_logits = false;
  model->forward(tokens, last_cache, last, options, pool_);
  EXPECT_EQ(all_cache.size(), 12);
  EXPECT_EQ(last_cache.size(), 12);
  for (int64_t v = 0; v < vocab; ++v) ASSERT_EQ(last[size_t(v)], all[size_t(11 * vocab + v)]);
}

TEST_F(ForwardTest, DumpNamesEveryIntermediate) {
  const auto model = Model::load(model_dir("tiny"), pool_);
  const auto tokens = test_tokens(20, model->config().vocab_size);
  std::set<std::string> names;
  ForwardOptions options;
  options.attention = AttentionMode::kSparse;
  options.dump = [&](const std::string& name, const TensorView& value) {
    names.insert(name);
    EXPECT_EQ(value.shape()[0], name == "logits" ? 1 : 20) << name;
  };
  KvCache cache(model->config(), 20);
  std::vector<float> logits(size_t(model->config().vocab_size));
  model->forward(tokens, cache, logits, options, pool_);
  for (const char* name :
       {"layers.0.attn_norm", "layers.0.q_latent", "layers.0.q", "layers.0.kv_latent",
        "layers.0.k_pe", "layers.0.indexer.key", "layers.0.indexer.weights",
        "layers.0.indexer.scores", "layers.0.indexer.topk", "layers.0.attn_output", "layers.0.attn",
        "layers.0.ffn_norm", "layers.0.ffn", "layers.1.moe.expert_ids",
        "layers.1.moe.expert_weights", "layers.1.ffn", "norm", "logits"}) {
    EXPECT_TRUE(names.count(name)) << name;
  }
}

// --- errors a user can cause -------------------------------------------------------------------

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST_F(ForwardTest, TokenOutOfRangeIsAnError) {
  const auto model = Model::load(model_dir("tiny"), pool_);
  KvCache cache(model->config(), 8);
  std::vector<float> logits(size_t(model->config().vocab_size));
  const std::vector<int32_t> tokens = {1, 2, 1024};
  const std::string message = error_of([&] { model->forward(tokens, cache, logits, {}, pool_); });
  EXPECT_NE(message.find("token 1024 (at index 2) is out of range"), std::string::npos) << message;
  EXPECT_EQ(cache.size(), 0);
  const std::vector<int32_t> negative = {-3};
  EXPECT_NE(error_of([&] { model->forward(negative, cache, logits, {}, pool_); }).find("-3"),
            std::string::npos);
}

TEST_F(ForwardTest, ContextLimitsAreErrors) {
  const auto model = Model::load(model_dir("tiny"), pool_);
  const int64_t max_positions = model->config().max_position_embeddings;
  EXPECT_NE(error_of([&] {
              KvCache(model->config(), max_positions + 1);
            }).find("max_position_embeddings"),
            std::string::npos);
  KvCache cache(model->config(), 4);
  std::vector<float> logits(size_t(model->config().vocab_size));
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5};
  EXPECT_NE(error_of([&] {
              model->forward(tokens, cache, logits, {}, pool_);
            }).find("past the context size of 4 tokens"),
            std::string::npos);
}

TEST_F(ForwardTest, SparseOnAModelWithoutIndexerIsAnError) {
  const auto model = Model::load(model_dir("tiny-v3"), pool_);
  KvCache cache(model->config(), 4);
  std::vector<float> logits(size_t(model->config().vocab_size));
  ForwardOptions options;
  options.attention = AttentionMode::kSparse;
  const std::vector<int32_t> tokens = {1};
  EXPECT_NE(error_of([&] {
              model->forward(tokens, cache, logits, options, pool_);
            }).find("needs the lightning indexer"),
            std::string::npos);
}

TEST(ModelLoad, ConfigThatDisagreesWithTheTensorsIsAnError) {
  TempDir dir;
  ModelConfig config = test::preset_config("tiny");
  test::write_random_model(dir.path(), config, 1);
  config.hidden_size = 384;  // the tensors say 256
  write_file_atomically(dir / "config.json", model_config_to_json(config).dump(2));
  ThreadPool pool(1);
  const std::string message = error_of([&] { Model::load(dir.path(), pool); });
  EXPECT_NE(message.find("does not match config.json"), std::string::npos) << message;
  EXPECT_NE(message.find("model.embed_tokens.weight"), std::string::npos) << message;
}

TEST(ModelLoad, MissingShardIsAnError) {
  TempDir dir;
  test::write_random_model(dir.path(), test::preset_config("tiny"), 1, 1 << 20);
  std::filesystem::path shard;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    if (entry.path().filename().string().starts_with("model-00002")) shard = entry.path();
  }
  ASSERT_FALSE(shard.empty()) << "expected a sharded checkpoint";
  std::filesystem::remove(shard);
  ThreadPool pool(1);
  const std::string message = error_of([&] { Model::load(dir.path(), pool); });
  EXPECT_NE(message.find(shard.filename().string()), std::string::npos) << message;
}

TEST(ModelLoad, GateWithoutCorrectionBiasIsAccepted) {
  // DeepSeek's reference builds the gate bias only for hidden size 7168; checkpoints made from it
  // have none, and the gate then scores groups by their best expert.
  TempDir dir;
  test::write_random_model(dir.path(), test::preset_config("tiny"), 1);
  // Rewrite the checkpoint without the bias tensor.
  const Checkpoint original(dir.path());
  SafetensorsWriter writer;
  std::vector<std::string> names = original.tensor_names();
  for (const std::string& name : names) {
    if (!name.ends_with("e_score_correction_bias")) writer.add(name, original.view(name));
  }
  TempDir copy;
  std::filesystem::copy_file(dir / "config.json", copy / "config.json");
  writer.write_checkpoint(copy.path(), UINT64_MAX);
  ThreadPool pool(1);
  const auto model = Model::load(copy.path(), pool);
  EXPECT_TRUE(model->weights().layers[1].ffn.gate_bias.empty());
  KvCache cache(model->config(), 4);
  std::vector<float> logits(size_t(model->config().vocab_size));
  const std::vector<int32_t> tokens = {5, 6, 7};
  model->forward(tokens, cache, logits, {}, pool);
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));
}

TEST(AttentionMode, NamesRoundTripAndUnknownIsAnError) {
  for (AttentionMode mode : {AttentionMode::kAuto, AttentionMode::kSparse, AttentionMode::kDense}) {
    EXPECT_EQ(parse_attention_mode(attention_mode_name(mode)), mode);
  }
  EXPECT_NE(error_of([] { parse_attention_mode("flash"); }).find("auto, sparse or dense"),
            std::string::npos);
}

}  // namespace
}  // namespace dsa

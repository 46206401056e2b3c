// The forward pass on random tiny models: schedules that must agree (chunked prefill from any
// position, prefill vs decode, auto vs sparse), a case where sparse and dense must differ, the
// cache, and the errors a user can cause. Parity with the independent Python reference is in
// test_reference_parity.cc.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <set>

#include "core/error.h"
#include "core/safetensors_writer.h"
#include "core/thread_pool.h"
#include "model/forward.h"
#include "model/intermediate_recorder.h"
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

// How close two schedules of the same computation must be.
//
// A schedule changes GEMM batch sizes (so fp32 summation order, the kernel picked by row count)
// and, between the MHA and absorbed attention kernels, where bf16 rounding happens. Either moves
// a bf16 value by one ulp (2^-8 relative, rounding to nearest) now and then. Up to the first
// attention output nothing else can differ, so there the schedules agree to well within one ulp
// in RMS: kFirstLayerTolerance = 2^-8. Further on, discrete steps can amplify a flip: on FP8
// models every projection input is re-quantized to 3 mantissa bits (an FP8 code flip is 2^-4
// for that element) and top-k and MoE routing switch at near-ties, which on these random tiny
// models reaches the logits of a few tokens. So logits are compared on the bf16 model, where
// the flips propagate without FP8 re-quantization: a few ulps per token, kLogitsTolerance =
// 2^-5 in RMS; while a semantic difference (a missing key, a wrong position) is tens of percent.
constexpr double kFirstLayerTolerance = 1.0 / 256;
constexpr double kLogitsTolerance = 1.0 / 32;

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

struct Outputs {
  std::vector<float> logits;       // [T, vocab]
  std::vector<float> first_layer;  // layers.0.attn_output [T, H, v]
};

Outputs run(const Model& model, const std::vector<int32_t>& tokens, int64_t prefill, int64_t chunk,
            AttentionMode mode, ThreadPool& pool, PrefillKernel kernel = PrefillKernel::kAuto) {
  ForwardOptions options;
  options.attention = mode;
  options.prefill_kernel = kernel;
  IntermediateRecorder recorder;
  options.dump = recorder.sink();
  Outputs out;
  out.logits = sequence_logits(model, tokens, prefill, chunk, options, pool);
  const Tensor first = recorder.tensor("layers.0.attn_output");
  out.first_layer.assign(first.data<float>(), first.data<float>() + first.numel());
  return out;
}

// Schedules agree at the first attention output on every model, and in the logits on bf16.
void expect_same(const Outputs& a, const Outputs& b, bool bf16_model, const std::string& what) {
  EXPECT_LT(compare(a.first_layer, b.first_layer).rms_relative, kFirstLayerTolerance) << what;
  if (bf16_model) {
    EXPECT_LT(compare(a.logits, b.logits).rms_relative, kLogitsTolerance) << what;
  }
}

TEST_F(ForwardTest, ChunkedPrefillFromAnyPositionMatchesWholePrefill) {
  for (const char* name : {"tiny", "tiny-bf16"}) {
    const auto model = Model::load(model_dir(name), pool_);
    const auto tokens = test_tokens(40, model->config().vocab_size);
    for (PrefillKernel kernel : {PrefillKernel::kAbsorbed, PrefillKernel::kMha}) {
      const auto whole = run(*model, tokens, 40, 40, AttentionMode::kSparse, pool_, kernel);
      for (int64_t chunk : {2, 7, 10, 16}) {
        expect_same(run(*model, tokens, 40, chunk, AttentionMode::kSparse, pool_, kernel), whole,
                    !model->config().fp8(),
                    fmt::format("{}, {}, chunk {}", name, prefill_kernel_name(kernel), chunk));
      }
    }
  }
}

// Decode steps use the absorbed kernel. Against an absorbed prefill only batch sizes differ;
// against an MHA prefill the rounding differs too, and the comparison runs dense so that top-k
// near-ties (which the sparse tests above exercise) cannot switch keys.
TEST_F(ForwardTest, DecodeMatchesPrefill) {
  for (const char* name : {"tiny", "tiny-bf16", "tiny-v3"}) {
    const auto model = Model::load(model_dir(name), pool_);
    const auto tokens = test_tokens(30, model->config().vocab_size);
    const AttentionMode sparse =
        model->config().has_indexer() ? AttentionMode::kSparse : AttentionMode::kDense;
    expect_same(run(*model, tokens, 0, 1, sparse, pool_),
                run(*model, tokens, 30, 30, sparse, pool_, PrefillKernel::kAbsorbed),
                !model->config().fp8(), fmt::format("{}, absorbed", name));
    expect_same(run(*model, tokens, 0, 1, AttentionMode::kDense, pool_),
                run(*model, tokens, 30, 30, AttentionMode::kDense, pool_, PrefillKernel::kMha),
                !model->config().fp8(), fmt::format("{}, mha", name));
  }
}

TEST_F(ForwardTest, AutoGivesSparseResults) {
  const auto tokens = test_tokens(40, 1024);
  // Chunks of 8: the first two (positions < 16 = index_topk) take the dense kernels under auto.
  for (const char* name : {"tiny", "tiny-bf16"}) {
    const auto m = Model::load(model_dir(name), pool_);
    expect_same(run(*m, tokens, 24, 8, AttentionMode::kAuto, pool_),
                run(*m, tokens, 24, 8, AttentionMode::kSparse, pool_), !m->config().fp8(), name);
  }
}

TEST_F(ForwardTest, SparseEqualsDenseUpToTopkAndDiffersBeyond) {
  const auto model = Model::load(model_dir("tiny-bf16"), pool_);
  const int64_t topk = model->config().index_topk;  // 16
  const int64_t vocab = model->config().vocab_size;
  const int64_t row = model->config().num_attention_heads * model->config().v_head_dim;
  const auto tokens = test_tokens(48, vocab);
  const auto sparse = run(*model, tokens, 48, 48, AttentionMode::kSparse, pool_);
  const auto dense = run(*model, tokens, 48, 48, AttentionMode::kDense, pool_);
  // Rows 0 .. topk-1 see at most topk keys: the same attention.
  EXPECT_LT(compare(sparse.logits, dense.logits, 0, size_t(topk * vocab)).rms_relative,
            kLogitsTolerance);
  // Rows 32 .. 47 see 33..48 keys of which sparse keeps 16: selection must change the result,
  // from the first attention output on.
  EXPECT_GT(compare(sparse.first_layer, dense.first_layer, size_t(32 * row)).rms_relative,
            16 * kFirstLayerTolerance);
  EXPECT_GT(compare(sparse.logits, dense.logits, size_t(32 * vocab)).rms_relative,
            4 * kLogitsTolerance);
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

// Model::forward_batch: several sequences in one call, each at its own positions in its own
// cache, must give each sequence what its own forward() calls give. While the call's row counts
// pick the same GEMM kernels as the solo calls (small batches), that is bit for bit; a large
// batch may switch a GEMM to the blocked kernel, which sums in another order, and is compared
// within the forward tests' tolerance. Also: decode rows and prefill chunks mixed, every
// attention mode and prefill kernel, and the errors.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "core/error.h"
#include "core/thread_pool.h"
#include "model/forward.h"
#include "support/model_fixture.h"
#include "support/test_util.h"

namespace dsa {
namespace {

using test::TempDir;

std::vector<int32_t> test_tokens(int64_t count, int64_t vocab, uint64_t state) {
  std::vector<int32_t> tokens(static_cast<size_t>(count));
  for (int32_t& t : tokens) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    t = int32_t((state >> 33) % uint64_t(vocab));
  }
  return tokens;
}

class ForwardBatchTest : public ::testing::Test {
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
  static std::unique_ptr<Model> load(const std::string& name, ThreadPool& pool) {
    return Model::load(dir_->path() / name, pool);
  }

  ThreadPool pool_{2};
  static TempDir* dir_;
};
TempDir* ForwardBatchTest::dir_ = nullptr;

// One sequence's plan: a prompt prefilled alone, then steps of `step` tokens each (1: decode).
struct Plan {
  int64_t prompt;
  int64_t step;
};

// Runs every plan's prompt alone, then its steps either batched together (one forward_batch per
// round) or alone (one forward per sequence and round). Returns each sequence's logits of every
// round, [rounds, vocab] for its last row.
std::vector<std::vector<float>> run_rounds(const Model& model, const std::vector<Plan>& plans,
                                           int64_t rounds, bool batched,
                                           const ForwardOptions& options, ThreadPool& pool) {
  const int64_t vocab = model.config().vocab_size;
  std::vector<KvCache> caches;
  std::vector<std::vector<int32_t>> tokens;
  for (size_t i = 0; i < plans.size(); ++i) {
    const int64_t total = plans[i].prompt + rounds * plans[i].step;
    caches.emplace_back(model.config(), total);
    tokens.push_back(test_tokens(total, vocab, 100 + i));
    std::vector<float> logits(static_cast<size_t>(vocab));
    model.forward(std::span(tokens[i]).first(size_t(plans[i].prompt)), caches[i], logits, options,
                  pool);
  }
  std::vector<std::vector<float>> out(plans.size());
  for (int64_t round = 0; round < rounds; ++round) {
    std::vector<std::vector<float>> logits(plans.size(), std::vector<float>(size_t(vocab)));
    std::vector<SequenceChunk> chunks;
    for (size_t i = 0; i < plans.size(); ++i) {
      const int64_t at = plans[i].prompt + round * plans[i].step;
      chunks.push_back(
          {std::span(tokens[i]).subspan(size_t(at), size_t(plans[i].step)), &caches[i], logits[i]});
    }
    if (batched) {
      model.forward_batch(chunks, options, pool);
    } else {
      for (const SequenceChunk& chunk : chunks) {
        model.forward(chunk.tokens, *chunk.cache, chunk.logits, options, pool);
      }
    }
    for (size_t i = 0; i < plans.size(); ++i) {
      out[i].insert(out[i].end(), logits[i].begin(), logits[i].end());
    }
  }
  for (size_t i = 0; i < plans.size(); ++i) {
    EXPECT_EQ(caches[i].size(), plans[i].prompt + rounds * plans[i].step);
  }
  return out;
}

double rms_relative(const std::vector<float>& a, const std::vector<float>& b) {
  double diff2 = 0, ref2 = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff2 += (double(a[i]) - double(b[i])) * (double(a[i]) - double(b[i]));
    ref2 += double(b[i]) * double(b[i]);
  }
  return std::sqrt(diff2 / ref2);
}

// Positions below and above index_topk (16 in the tiny presets), so auto runs some sequences
// dense and some sparse in the same call.
const std::vector<Plan> kDecodePlans = {{3, 1}, {14, 1}, {27, 1}, {40, 1}};
// Decode rows with prefill chunks of 9 and 5 tokens.
const std::vector<Plan> kMixedPlans = {{20, 1}, {2, 9}, {33, 5}, {11, 1}};

TEST_F(ForwardBatchTest, SmallBatchesAreBitIdenticalToSoloCalls) {
  for (const char* name : {"tiny", "tiny-bf16", "tiny-v3"}) {
    const auto model = load(name, pool_);
    for (const AttentionMode mode :
         {AttentionMode::kAuto, AttentionMode::kSparse, AttentionMode::kDense}) {
      if (mode == AttentionMode::kSparse && !model->config().has_indexer()) continue;
      for (const PrefillKernel kernel : {PrefillKernel::kAbsorbed, PrefillKernel::kMha}) {
        ForwardOptions options;
        options.attention = mode;
        options.prefill_kernel = kernel;
        for (const auto* plans : {&kDecodePlans, &kMixedPlans}) {
          const auto solo = run_rounds(*model, *plans, 6, false, options, pool_);
          const auto batch = run_rounds(*model, *plans, 6, true, options, pool_);
          for (size_t i = 0; i < plans->size(); ++i) {
            ASSERT_EQ(batch[i], solo[i]) << fmt::format(
                "{}, {}, {}, sequence {} of the {} plans", name, attention_mode_name(mode),
                prefill_kernel_name(kernel), i, plans == &kDecodePlans ? "decode" : "mixed");
          }
        }
      }
    }
  }
}

// 40 decode rows and a prefill chunk: past the row counts where the GEMMs switch kernels.
TEST_F(ForwardBatchTest, LargeBatchesAgreeWithSoloCallsWithinTolerance) {
  const auto model = load("tiny-bf16", pool_);
  std::vector<Plan> plans;
  for (int64_t i = 0; i < 40; ++i) plans.push_back({1 + (i * 7) % 30, 1});
  plans.push_back({5, 24});
  ForwardOptions options;
  options.attention = AttentionMode::kDense;  // no top-k near-ties to amplify a rounding flip
  const auto solo = run_rounds(*model, plans, 3, false, options, pool_);
  const auto batch = run_rounds(*model, plans, 3, true, options, pool_);
  for (size_t i = 0; i < plans.size(); ++i) {
    EXPECT_LT(rms_relative(batch[i], solo[i]), 1.0 / 32) << "sequence " << i;
  }
}

TEST_F(ForwardBatchTest, AllLogitsAreEachSequencesRows) {
  const auto model = load("tiny", pool_);
  const int64_t vocab = model->config().vocab_size;
  const auto a = test_tokens(7, vocab, 1), b = test_tokens(12, vocab, 2);
  ForwardOptions options;
  options.all_logits = true;
  KvCache solo_a(model->config(), 7), solo_b(model->config(), 12);
  std::vector<float> want_a(size_t(7 * vocab)), want_b(size_t(12 * vocab));
  model->forward(a, solo_a, want_a, options, pool_);
  model->forward(b, solo_b, want_b, options, pool_);
  KvCache cache_a(model->config(), 7), cache_b(model->config(), 12);
  std::vector<float> got_a(want_a.size()), got_b(want_b.size());
  const std::vector<SequenceChunk> chunks = {{a, &cache_a, got_a}, {b, &cache_b, got_b}};
  model->forward_batch(chunks, options, pool_);
  EXPECT_EQ(got_a, want_a);
  EXPECT_EQ(got_b, want_b);
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST_F(ForwardBatchTest, ErrorsLeaveEveryCacheUnchanged) {
  const auto model = load("tiny", pool_);
  const int64_t vocab = model->config().vocab_size;
  KvCache first(model->config(), 8), second(model->config(), 8);
  std::vector<float> l1(static_cast<size_t>(vocab)), l2(static_cast<size_t>(vocab));
  const std::vector<int32_t> good = {1, 2}, bad = {3, int32_t(vocab)};
  std::vector<SequenceChunk> chunks = {{good, &first, l1}, {bad, &second, l2}};
  EXPECT_NE(error_of([&] { model->forward_batch(chunks, {}, pool_); }).find("out of range"),
            std::string::npos);
  EXPECT_EQ(first.size(), 0);
  EXPECT_EQ(second.size(), 0);

  chunks = {{good, &first, l1}, {good, &first, l2}};
  EXPECT_NE(error_of([&] { model->forward_batch(chunks, {}, pool_); }).find("share a cache"),
            std::string::npos);
  EXPECT_EQ(first.size(), 0);

  chunks = {{good, &first, l1}, {good, &second, std::span(l2).first(3)}};
  EXPECT_NE(error_of([&] { model->forward_batch(chunks, {}, pool_); }).find("sequence 1 holds 3"),
            std::string::npos);

  ForwardOptions dump;
  dump.dump = [](const std::string&, const TensorView&) {};
  chunks = {{good, &first, l1}, {good, &second, l2}};
  EXPECT_NE(error_of([&] { model->forward_batch(chunks, dump, pool_); }).find("single sequence"),
            std::string::npos);
  EXPECT_NE(error_of([&] { model->forward_batch({}, {}, pool_); }).find("no sequences"),
            std::string::npos);
  EXPECT_EQ(first.size(), 0);
  EXPECT_EQ(second.size(), 0);
}

}  // namespace
}  // namespace dsa

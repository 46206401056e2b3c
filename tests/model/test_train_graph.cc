// The training graph as a whole: directional finite differences of every loss against the
// backward pass, causality, batching and the errors. (Op-level finite differences in fp64 are in
// tests/ops/test_*_train.cc; the comparison with the independent PyTorch reference is in
// tests/cli/test_grad.cc.)
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/error.h"
#include "model/presets.h"
#include "model/train_graph.h"
#include "model/train_parameters.h"

namespace dsa {
namespace {

// A micro V3.2 model: 2 layers (dense FFN, then MoE with 4 experts), 2 heads, an indexer with
// index_topk 8, so that sequences of 24 tokens have rows with more keys than the top-k.
ModelConfig micro_config() {
  ModelConfig c = find_model_preset("tiny").config;
  c.quantization.reset();
  c.vocab_size = 256;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.moe_intermediate_size = 32;
  c.num_hidden_layers = 2;
  c.num_nextn_predict_layers = 0;
  c.first_k_dense_replace = 1;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 2;
  c.q_lora_rank = 32;
  c.kv_lora_rank = 128;
  c.qk_nope_head_dim = 16;
  c.qk_rope_head_dim = 16;
  c.v_head_dim = 16;
  c.n_routed_experts = 4;
  c.n_group = 2;
  c.topk_group = 1;
  c.num_experts_per_tok = 2;
  c.index_n_heads = 2;
  c.index_topk = 8;
  c.max_position_embeddings = 64;
  c.rope_scaling = RopeScaling{.factor = 4.0, .original_max_position_embeddings = 16};
  validate_model_config(c, "micro");
  return c;
}

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> pick(0, int32_t(vocab - 1));
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& v : t) v = pick(rng);
  return t;
}

double step_loss(const ParameterBuffer& params, const TrainBatch& batch,
                 const TrainStepOptions& options, ThreadPool& pool) {
  const TrainStepResult r = train_step(params, batch, options, nullptr, pool);
  return options.lm_loss ? r.lm_loss + r.balance_loss : r.indexer_loss;
}

// Checks g·d against (L(θ + εd) − L(θ − εd)) / 2ε for a random direction d over the tensors the
// loss trains. fp32 forward: the loss (~5) is computed to ~1e-6 absolute, so with ε = 1e-3 and
// |d| = 1 per tensor the difference quotient is good to ~1e-3; second-order terms are ε² ~ 1e-6.
void expect_directional_derivative(const TrainStepOptions& options, uint32_t seed,
                                   int64_t sequences = 1, int64_t seq_len = 24) {
  ThreadPool pool(2);
  const ModelConfig config = micro_config();
  ParameterBuffer params = initial_parameters(config, seed, pool);
  const std::vector<int32_t> tokens = random_tokens(sequences * seq_len, config.vocab_size, seed);
  const TrainBatch batch{.tokens = tokens, .sequences = sequences, .seq_len = seq_len};
  ParameterBuffer grads(params.shared_layout());
  train_step(params, batch, options, &grads, pool);

  std::mt19937 rng(seed + 1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  ParameterBuffer direction(params.shared_layout());
  double predicted = 0.0;
  for (const TrainTensor& t : params.layout().tensors()) {
    // The indexer loss trains the indexer only: its target p moves with the other parameters,
    // but by design (detached) passes them no gradient, so only indexer tensors are perturbed.
    const bool trained = options.lm_loss ? true : t.spec.module == Module::kIndexer;
    if (!t.trainable || !trained) continue;
    std::span<float> d = direction.tensor(t);
    double norm = 0.0;
    for (float& v : d) norm += double(v = normal(rng)) * v;
    const float inv = float(1.0 / std::sqrt(norm));
    const std::span<const float> g = grads.tensor(t);
    for (size_t i = 0; i < d.size(); ++i) {
      d[i] *= inv;
      predicted += double(g[i]) * d[i];
    }
  }
  const float eps = 1e-3f;
  ParameterBuffer plus = params, minus = params;
  for (int64_t i = 0; i < params.layout().size(); ++i) {
    plus.values()[static_cast<size_t>(i)] += eps * direction.values()[static_cast<size_t>(i)];
    minus.values()[static_cast<size_t>(i)] -= eps * direction.values()[static_cast<size_t>(i)];
  }
  const double measured =
      (step_loss(plus, batch, options, pool) - step_loss(minus, batch, options, pool)) /
      (2.0 * eps);
  EXPECT_NEAR(predicted, measured, 2e-3 + 2e-2 * std::fabs(measured))
      << "directional derivative: backward " << predicted << ", finite difference " << measured;
  EXPECT_GT(std::fabs(predicted), 1e-3) << "a gradient this small tests nothing";
}

TEST(TrainGraph, DenseLmGradientMatchesFiniteDifferences) {
  expect_directional_derivative({.attention = AttentionMode::kDense}, 11);
}

TEST(TrainGraph, SparseLmGradientMatchesFiniteDifferences) {
  expect_directional_derivative({.attention = AttentionMode::kSparse}, 12);
}

TEST(TrainGraph, BatchOfTwoSequences) { expect_directional_derivative({}, 13, 2, 16); }

TEST(TrainGraph, BalanceLossGradient) {
  expect_directional_derivative({.attention = AttentionMode::kDense, .balance_alpha = 0.1f}, 14);
}

TEST(TrainGraph, WarmupIndexerGradientMatchesFiniteDifferences) {
  expect_directional_derivative(
      {.attention = AttentionMode::kDense, .lm_loss = false, .indexer_loss = true}, 15);
}

TEST(TrainGraph, SparseIndexerGradientMatchesFiniteDifferences) {
  expect_directional_derivative(
      {.attention = AttentionMode::kSparse, .lm_loss = false, .indexer_loss = true}, 16);
}

TEST(TrainGraph, IndexerLossTouchesOnlyIndexerParameters) {
  ThreadPool pool(2);
  const ModelConfig config = micro_config();
  const ParameterBuffer params = initial_parameters(config, 3, pool);
  const std::vector<int32_t> tokens = random_tokens(24, config.vocab_size, 3);
  ParameterBuffer grads(params.shared_layout());
  train_step(params, {.tokens = tokens, .sequences = 1, .seq_len = 24},
             {.lm_loss = false, .indexer_loss = true}, &grads, pool);
  for (const TrainTensor& t : params.layout().tensors()) {
    double sum = 0.0;
    for (float g : grads.tensor(t)) sum += std::fabs(g);
    if (t.spec.module == Module::kIndexer) {
      EXPECT_GT(sum, 0.0) << t.spec.name;
    } else {
      EXPECT_EQ(sum, 0.0) << t.spec.name;
    }
  }
}

// Changing token j leaves everything before it bit-identical: the per-position losses before
// j − 1 (which predicts token j), the selected keys of earlier rows, and the gradient of the loss
// restricted to those positions.
void expect_causal(AttentionMode mode) {
  ThreadPool pool(2);
  const ModelConfig config = micro_config();
  const ParameterBuffer params = initial_parameters(config, 5, pool);
  const int64_t T = 24, j = 17;
  std::vector<int32_t> a = random_tokens(T, config.vocab_size, 5), b = a;
  b[static_cast<size_t>(j)] = (a[static_cast<size_t>(j)] + 1) % int32_t(config.vocab_size);
  std::vector<int32_t> targets(static_cast<size_t>(T), -1);
  for (int64_t t = 0; t + 1 < j; ++t) targets[static_cast<size_t>(t)] = a[size_t(t + 1)];
  const TrainStepOptions options{.attention = mode, .record_topk = true};
  ParameterBuffer ga(params.shared_layout()), gb(params.shared_layout());
  const TrainStepResult ra =
      train_step(params, {.tokens = a, .sequences = 1, .seq_len = T}, options, nullptr, pool);
  const TrainStepResult rb =
      train_step(params, {.tokens = b, .sequences = 1, .seq_len = T}, options, nullptr, pool);
  for (int64_t t = 0; t + 1 < j; ++t) {
    EXPECT_EQ(ra.position_losses[static_cast<size_t>(t)],
              rb.position_losses[static_cast<size_t>(t)])
        << "position " << t;
  }
  if (mode == AttentionMode::kSparse) {
    for (size_t l = 0; l < ra.topk.size(); ++l) {
      const int64_t k = config.index_topk;
      for (int64_t i = 0; i < j * k; ++i) {
        ASSERT_EQ(ra.topk[l][static_cast<size_t>(i)], rb.topk[l][static_cast<size_t>(i)])
            << "layer " << l << " row " << i / k;
      }
    }
  }
  train_step(params, {.tokens = a, .sequences = 1, .seq_len = T, .targets = targets}, options, &ga,
             pool);
  train_step(params, {.tokens = b, .sequences = 1, .seq_len = T, .targets = targets}, options, &gb,
             pool);
  for (const TrainTensor& t : params.layout().tensors()) {
    const std::span<const float> x = ga.tensor(t), y = gb.tensor(t);
    for (size_t i = 0; i < x.size(); ++i) {
      // Token j's embedding row gets no gradient in either run; every other value must agree.
      ASSERT_EQ(x[i], y[i]) << t.spec.name << " element " << i;
    }
  }
}

TEST(TrainGraph, CausalDense) { expect_causal(AttentionMode::kDense); }
TEST(TrainGraph, CausalSparse) { expect_causal(AttentionMode::kSparse); }

// Every product runs in blocks fixed by the shapes and every reduction sums in a fixed order,
// so a step's losses and gradients are bit-identical for any thread count (and a run may be
// resumed with another -t). 2 × 300 tokens: more than one 256-row block of every product.
void expect_thread_count_independent(const TrainStepOptions& options) {
  ModelConfig config = micro_config();
  config.max_position_embeddings = 512;
  config.rope_scaling->original_max_position_embeddings = 128;
  validate_model_config(config, "micro-512");
  const int64_t sequences = 2, T = 300;
  const std::vector<int32_t> tokens = random_tokens(sequences * T, config.vocab_size, 21);
  const TrainBatch batch{.tokens = tokens, .sequences = sequences, .seq_len = T};
  std::vector<TrainStepResult> results;
  std::vector<ParameterBuffer> grads;
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    const ParameterBuffer params = initial_parameters(config, 9, pool);
    grads.emplace_back(params.shared_layout());
    results.push_back(train_step(params, batch, options, &grads.back(), pool));
  }
  for (size_t r = 1; r < results.size(); ++r) {
    EXPECT_EQ(results[r].lm_loss, results[0].lm_loss) << "thread run " << r;
    EXPECT_EQ(results[r].indexer_loss, results[0].indexer_loss) << "thread run " << r;
    EXPECT_EQ(results[r].position_losses, results[0].position_losses) << "thread run " << r;
    const std::span<const float> a = grads[0].values();
    const std::span<const float> b = grads[r].values();
    ASSERT_EQ(a.size(), b.size());
    size_t differing = 0;
    for (size_t i = 0; i < a.size(); ++i) differing += a[i] != b[i];
    EXPECT_EQ(differing, 0u) << "gradient values that differ, thread run " << r;
  }
}

TEST(TrainGraph, DenseStepIsTheSameForAnyThreadCount) { expect_thread_count_independent({}); }
TEST(TrainGraph, SparseStepIsTheSameForAnyThreadCount) {
  expect_thread_count_independent(
      {.attention = AttentionMode::kSparse, .lm_loss = true, .indexer_loss = true});
}
TEST(TrainGraph, WarmupStepIsTheSameForAnyThreadCount) {
  expect_thread_count_independent({.lm_loss = false, .indexer_loss = true});
}

TEST(TrainGraph, Bf16ComputeStepIsTheSameForAnyThreadCount) {
  expect_thread_count_independent({.attention = AttentionMode::kSparse,
                                   .lm_loss = true,
                                   .indexer_loss = true,
                                   .matmul = MatmulPrecision::kBf16});
}

// bf16 compute rounds the products' operands (ops/gemm/sgemm.h): the step differs from fp32, by
// about bf16's relative precision (2^-8) in the loss and in the direction of the gradient.
TEST(TrainGraph, Bf16ComputeStaysCloseToFp32) {
  ThreadPool pool(2);
  const ModelConfig config = micro_config();
  const ParameterBuffer params = initial_parameters(config, 17, pool);
  const std::vector<int32_t> tokens = random_tokens(2 * 24, config.vocab_size, 17);
  const TrainBatch batch{.tokens = tokens, .sequences = 2, .seq_len = 24};
  ParameterBuffer fp32_grads(params.shared_layout()), bf16_grads(params.shared_layout());
  const TrainStepResult fp32 = train_step(params, batch, {}, &fp32_grads, pool);
  const TrainStepResult bf16 =
      train_step(params, batch, {.matmul = MatmulPrecision::kBf16}, &bf16_grads, pool);
  EXPECT_NE(bf16.lm_loss, fp32.lm_loss);
  EXPECT_NEAR(bf16.lm_loss, fp32.lm_loss, 1e-2 * fp32.lm_loss);
  const std::span<const float> a = fp32_grads.values(), b = bf16_grads.values();
  double dot = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    dot += double(a[i]) * double(b[i]);
    aa += double(a[i]) * double(a[i]);
    bb += double(b[i]) * double(b[i]);
  }
  const double cosine = dot / std::sqrt(aa * bb);
  EXPECT_GT(cosine, 0.99);
  EXPECT_LT(cosine, 1.0 - 1e-9) << "bf16 compute changed nothing";
}

// Recomputing each layer's forward in the backward runs the same operations on the same
// inputs: losses, loads, top-k and gradients are bit-identical, and nothing is counted twice.
void expect_recomputation_changes_nothing(TrainStepOptions options) {
  ThreadPool pool(2);
  const ModelConfig config = micro_config();
  const ParameterBuffer params = initial_parameters(config, 13, pool);
  const std::vector<int32_t> tokens = random_tokens(2 * 24, config.vocab_size, 13);
  const TrainBatch batch{.tokens = tokens, .sequences = 2, .seq_len = 24};
  options.record_topk = options.attention == AttentionMode::kSparse;
  ParameterBuffer plain_grads(params.shared_layout()), recomputed_grads(params.shared_layout());
  const TrainStepResult plain = train_step(params, batch, options, &plain_grads, pool);
  options.recompute_layers = true;
  const TrainStepResult recomputed = train_step(params, batch, options, &recomputed_grads, pool);
  EXPECT_EQ(recomputed.lm_loss, plain.lm_loss);
  EXPECT_EQ(recomputed.indexer_loss, plain.indexer_loss);
  EXPECT_EQ(recomputed.indexer_rows, plain.indexer_rows);
  EXPECT_EQ(recomputed.balance_loss, plain.balance_loss);
  EXPECT_EQ(recomputed.expert_load, plain.expert_load);
  EXPECT_EQ(recomputed.topk, plain.topk);
  const std::span<const float> a = plain_grads.values(), b = recomputed_grads.values();
  size_t differing = 0, nonzero = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    differing += a[i] != b[i];
    nonzero += a[i] != 0.0f;
  }
  EXPECT_EQ(differing, 0u);
  EXPECT_GT(nonzero, size_t(100)) << "a gradient this empty tests nothing";
}

TEST(TrainGraph, RecomputationChangesNoBitDense) {
  expect_recomputation_changes_nothing({.balance_alpha = 0.01f});
}
TEST(TrainGraph, RecomputationChangesNoBitSparse) {
  expect_recomputation_changes_nothing(
      {.attention = AttentionMode::kSparse, .lm_loss = true, .indexer_loss = true});
}
TEST(TrainGraph, RecomputationChangesNoBitWarmup) {
  expect_recomputation_changes_nothing({.lm_loss = false, .indexer_loss = true});
}

TEST(TrainGraph, SparseWithTopkCoveringEveryKeyEqualsDense) {
  ThreadPool pool(2);
  ModelConfig config = micro_config();
  config.index_topk = 32;  // > T: every row attends to all its causal keys
  const ParameterBuffer params = initial_parameters(config, 6, pool);
  const std::vector<int32_t> tokens = random_tokens(24, config.vocab_size, 6);
  const TrainBatch batch{.tokens = tokens, .sequences = 1, .seq_len = 24};
  const double dense =
      train_step(params, batch, {.attention = AttentionMode::kDense}, nullptr, pool).lm_loss;
  const double sparse =
      train_step(params, batch, {.attention = AttentionMode::kSparse}, nullptr, pool).lm_loss;
  // The sparse kernel visits the same keys in the same order; allow only fp32 reassociation.
  EXPECT_NEAR(dense, sparse, 1e-5 * std::fabs(dense));
}

TEST(TrainGraph, BadInputIsAClearError) {
  ThreadPool pool(1);
  const ModelConfig config = micro_config();
  const ParameterBuffer params = initial_parameters(config, 7, pool);
  std::vector<int32_t> tokens = random_tokens(8, config.vocab_size, 7);
  tokens[3] = int32_t(config.vocab_size);
  try {
    train_step(params, {.tokens = tokens, .sequences = 1, .seq_len = 8}, {}, nullptr, pool);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("outside the vocabulary"), std::string::npos) << e.what();
  }
  const std::vector<int32_t> long_seq = random_tokens(65, config.vocab_size, 7);
  EXPECT_THROW(
      train_step(params, {.tokens = long_seq, .sequences = 1, .seq_len = 65}, {}, nullptr, pool),
      Error);
  ModelConfig v3 = config;
  v3.architecture = Architecture::kDeepseekV3;
  v3.index_n_heads = v3.index_head_dim = v3.index_topk = 0;
  const ParameterBuffer v3_params = initial_parameters(v3, 7, pool);
  const std::vector<int32_t> ok = random_tokens(8, config.vocab_size, 8);
  EXPECT_THROW(train_step(v3_params, {.tokens = ok, .sequences = 1, .seq_len = 8},
                          {.attention = AttentionMode::kSparse}, nullptr, pool),
               Error);
}

}  // namespace
}  // namespace dsa

// MoE: the gate's selection on hand-made logits (group limiting, bias, ties), the combine order,
// and the fast MoE against the reference on random FP8 and bf16 experts.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/float_formats.h"
#include "core/fp8_quant.h"
#include "ops/moe/moe.h"

namespace dsa {
namespace {

float sigmoid(double x) { return float(1 / (1 + std::exp(-x))); }

// A gate whose weight is the identity (D = E), so the logits are exactly x.
struct IdentityGate {
  MoeGateConfig config;
  std::vector<bf16> weight;
  explicit IdentityGate(MoeGateConfig c)
      : config(c), weight(size_t(c.num_experts * c.num_experts)) {
    for (int64_t e = 0; e < c.num_experts; ++e) weight[e * c.num_experts + e] = float_to_bf16(1.0f);
  }
  // Runs both gate versions on one token and checks they agree; returns ids and weights.
  std::pair<std::vector<int32_t>, std::vector<float>> route(const std::vector<float>& logits,
                                                            const std::vector<float>* bias) {
    std::vector<int32_t> ids[2];
    std::vector<float> weights[2];
    for (int version = 0; version < 2; ++version) {
      ids[version].resize(size_t(config.experts_per_token));
      weights[version].resize(size_t(config.experts_per_token));
      MoeGateParams p{logits.data(),
                      weight.data(),
                      bias ? bias->data() : nullptr,
                      ids[version].data(),
                      weights[version].data(),
                      1,
                      config.num_experts,
                      config};
      ThreadPool pool(2);
      version == 0 ? moe_gate_ref(p) : moe_gate(p, pool);
    }
    EXPECT_EQ(ids[0], ids[1]);
    EXPECT_EQ(weights[0], weights[1]);  // identical logits, identical selection code
    return {ids[0], weights[0]};
  }
};

MoeGateConfig small_config() {
  // 4 groups of 4 experts, keep 2 groups, 3 experts per token.
  return MoeGateConfig{16, 4, 2, 3, 2.5f, true};
}

TEST(MoeGate, GroupLimitingChangesTheChoice) {
  IdentityGate gate(small_config());
  // Group 0 holds the single best expert (3.0) but its second best is poor; groups 1 and 2 have
  // two good experts each, so their top-2 sums win and expert 0 is not selectable.
  std::vector<float> logits(16, -4.0f);
  logits[0] = 3.0f;
  logits[5] = 2.0f, logits[6] = 1.5f;
  logits[9] = 1.0f, logits[10] = 0.75f;
  const auto [ids, weights] = gate.route(logits, nullptr);
  // Without a bias the group score is the group max: groups 0 (3.0) and 1 (2.0) are kept.
  EXPECT_EQ(ids, (std::vector<int32_t>{0, 5, 6}));
  std::vector<float> bias(16, 0.0f);
  const auto [biased_ids, biased_weights] = gate.route(logits, &bias);
  // With a (zero) bias the group score is the top-2 sum: group 0 = σ(3)+σ(-4) = 0.97,
  // group 1 = σ(2)+σ(1.5) = 1.70, group 2 = σ(1)+σ(.75) = 1.41: expert 0 is dropped.
  EXPECT_EQ(biased_ids, (std::vector<int32_t>{5, 6, 9}));
  const double sum = sigmoid(2.0) + sigmoid(1.5) + sigmoid(1.0);
  EXPECT_NEAR(biased_weights[0], 2.5 * sigmoid(2.0) / sum, 1e-6);
  EXPECT_NEAR(biased_weights[2], 2.5 * sigmoid(1.0) / sum, 1e-6);
}

TEST(MoeGate, BiasChangesSelectionButNotWeights) {
  IdentityGate gate(small_config());
  std::vector<float> logits = {0.5f,  0.25f, 0.0f,  -0.5f, 0.4f,  0.3f,  0.2f,  0.1f,
                               -1.0f, -1.0f, -1.0f, -1.0f, -2.0f, -2.0f, -2.0f, -2.0f};
  std::vector<float> bias(16, 0.0f);
  const auto [plain_ids, plain_weights] = gate.route(logits, &bias);
  EXPECT_EQ(plain_ids, (std::vector<int32_t>{0, 4, 5}));
  bias[3] = 1.0f;  // expert 3 now ranks first by biased score...
  const auto [ids, weights] = gate.route(logits, &bias);
  EXPECT_EQ(ids, (std::vector<int32_t>{3, 0, 4}));
  // ...but its weight comes from the unbiased sigmoid.
  const double sum = sigmoid(-0.5) + sigmoid(0.5) + sigmoid(0.4);
  EXPECT_NEAR(weights[0], 2.5 * sigmoid(-0.5) / sum, 1e-6);
  EXPECT_NEAR(weights[1], 2.5 * sigmoid(0.5) / sum, 1e-6);
}

TEST(MoeGate, TiesGoToTheLowerIndex) {
  IdentityGate gate(small_config());
  const std::vector<float> logits(16, 0.0f);  // every score and every group ties
  std::vector<float> bias(16, 0.0f);
  const auto [ids, weights] = gate.route(logits, &bias);
  EXPECT_EQ(ids, (std::vector<int32_t>{0, 1, 2}));
  for (float w : weights) EXPECT_NEAR(w, 2.5 / 3, 1e-6);
}

TEST(MoeGate, RejectsBadConfigs) {
  IdentityGate gate(small_config());
  const std::vector<float> logits(16, 0.0f);
  std::vector<int32_t> ids(8);
  std::vector<float> weights(8);
  auto expect_error = [&](MoeGateConfig config, const std::string& message) {
    MoeGateParams p{logits.data(), gate.weight.data(), nullptr, ids.data(), weights.data(), 1, 16,
                    config};
    try {
      moe_gate_ref(p);
      FAIL() << message;
    } catch (const Error& error) {
      EXPECT_NE(std::string(error.what()).find(message), std::string::npos) << error.what();
    }
  };
  expect_error({16, 3, 2, 3, 2.5f, true}, "16 experts do not split into 3 groups");
  expect_error({16, 4, 5, 3, 2.5f, true}, "topk_groups 5 must be in [1, 4]");
  expect_error({16, 4, 2, 9, 2.5f, true}, "experts_per_token 9 must be in [1, 8]");
}

// Random experts stored as `dtype` (quantized from the same fp32 values for FP8).
struct Experts {
  std::vector<std::vector<float>> f32;
  std::vector<std::vector<bf16>> b16;
  std::vector<std::vector<fp8_e4m3>> codes;
  std::vector<std::vector<float>> scales;
  std::vector<SwigluExpertWeights> weights;

  LinearWeight add(DType dtype, int64_t out, int64_t in, std::mt19937& rng) {
    std::normal_distribution<float> dist(0.0f, 1.0f / std::sqrt(float(in)));
    f32.emplace_back(size_t(out * in));
    for (float& w : f32.back()) w = round_to_bf16(dist(rng));
    if (dtype == DType::BF16) {
      b16.emplace_back(f32.back().size());
      for (size_t i = 0; i < f32.back().size(); ++i) b16.back()[i] = float_to_bf16(f32.back()[i]);
      return {b16.back().data(), dtype, nullptr, out, in};
    }
    codes.emplace_back(f32.back().size());
    scales.emplace_back(size_t(weight_scale_rows(out) * weight_scale_cols(in)));
    quantize_weight_fp8(f32.back().data(), out, in, codes.back().data(), scales.back().data());
    return {codes.back().data(), dtype, scales.back().data(), out, in};
  }

  Experts(int64_t count, DType dtype, int64_t dim, int64_t inter, uint32_t seed) {
    std::mt19937 rng(seed);
    f32.reserve(3 * count);
    b16.reserve(3 * count);
    codes.reserve(3 * count);
    scales.reserve(3 * count);
    for (int64_t e = 0; e < count; ++e) {
      SwigluExpertWeights w;
      w.w1 = add(dtype, inter, dim, rng);
      w.w2 = add(dtype, dim, inter, rng);
      w.w3 = add(dtype, inter, dim, rng);
      weights.push_back(w);
    }
  }
};

struct MoeCase {
  MoeGateConfig config;
  int64_t tokens, dim, inter;
  DType dtype;
  std::vector<bf16> gate_weight;
  std::vector<float> bias, x;
  Experts routed, shared;

  MoeCase(int64_t t, DType type)
      : config{8, 4, 2, 3, 2.5f, true},
        tokens(t),
        dim(256),
        inter(96),
        dtype(type),
        gate_weight(size_t(8 * 256)),
        bias(8),
        x(size_t(t * 256)),
        routed(8, type, 256, 96, 5),
        shared(1, type, 256, 96, 6) {
    std::mt19937 rng(7);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    for (bf16& w : gate_weight) w = float_to_bf16(dist(rng) * 0.06f);
    for (float& b : bias) b = 0.05f * dist(rng);
    for (float& v : x) v = round_to_bf16(dist(rng));
  }
  MoeParams params(float* y) const {
    MoeParams p;
    p.gate = {x.data(), gate_weight.data(), bias.data(), nullptr, nullptr, tokens, dim, config};
    p.experts = routed.weights.data();
    p.shared = shared.weights.data();
    p.y = y;
    return p;
  }
};

TEST(Moe, ReferenceIsGatePlusExpertsInAscendingOrderThenShared) {
  // The combine written out from its definition with the tested building blocks; moe_ref must
  // reproduce it bit for bit (same operations in the same order).
  const MoeCase c(5, DType::F8_E4M3);
  std::vector<float> y(size_t(c.tokens * c.dim));
  moe_ref(c.params(y.data()));
  const int64_t K = c.config.experts_per_token;
  std::vector<int32_t> ids(size_t(c.tokens * K));
  std::vector<float> weights(ids.size());
  MoeGateParams gate = c.params(nullptr).gate;
  gate.expert_ids = ids.data();
  gate.expert_weights = weights.data();
  moe_gate_ref(gate);
  std::vector<float> out(size_t(c.dim));
  for (int64_t t = 0; t < c.tokens; ++t) {
    std::vector<float> acc(size_t(c.dim), 0.0f);
    for (int32_t e = 0; e < c.config.num_experts; ++e) {
      for (int64_t i = 0; i < K; ++i) {
        if (ids[t * K + i] != e) continue;
        swiglu_expert_ref(c.x.data() + t * c.dim, 1, c.routed.weights[e], out.data());
        for (int64_t d = 0; d < c.dim; ++d) acc[d] += out[d] * weights[t * K + i];
      }
    }
    swiglu_expert_ref(c.x.data() + t * c.dim, 1, c.shared.weights[0], out.data());
    for (int64_t d = 0; d < c.dim; ++d) {
      ASSERT_EQ(y[t * c.dim + d], round_to_bf16(acc[d] + out[d])) << "token " << t << " dim " << d;
    }
  }
}

TEST(Moe, FastMatchesReference) {
  // Fast and reference differ only in the fp32 summation order inside the GEMMs (selection and
  // combine code are shared; gate logits move by fp32 roundings, far below this bound). That can
  // move a bf16 rounding of h1, h3, h or of an expert output by one unit, u = 2^-8 relative. With
  // these data (x ~ N(0, 1), weight rows of unit norm) every intermediate and expert output is
  // O(1), so a unit move changes y by at most u·(|y| + 1); we allow 8 such moves (3 experts +
  // shared, each through h and its output).
  for (DType dtype : {DType::F8_E4M3, DType::BF16}) {
    for (int64_t tokens : {1, 6, 40}) {  // 40 tokens take the OpenBLAS path for the shared expert
      const MoeCase c(tokens, dtype);
      std::vector<float> expected(size_t(tokens * c.dim)), actual(expected.size());
      moe_ref(c.params(expected.data()));
      for (int threads : {1, 2}) {
        ThreadPool pool(threads);
        moe(c.params(actual.data()), pool);
        for (size_t i = 0; i < actual.size(); ++i) {
          ASSERT_NEAR(actual[i], expected[i], 8.0 / 256 * (std::fabs(expected[i]) + 1))
              << dtype_name(dtype) << " tokens " << tokens << " threads " << threads << " at " << i;
        }
      }
    }
  }
}

}  // namespace
}  // namespace dsa

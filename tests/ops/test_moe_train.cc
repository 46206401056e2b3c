// The router's training ops: the gate forward against select_experts and the formula, the gate
// backward and the balance loss against central finite differences of the fp64 references, the
// fast versions against the fp32 references (several thread counts, every SIMD target), the
// expert-load count and the aux-loss-free bias update, and bad parameters.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "ops/moe/moe_train.h"
#include "simd_targets.h"

namespace dsa {
namespace {

constexpr double kEps64 = std::numeric_limits<double>::epsilon();  // 2^-52
const double kUlp32 = std::ldexp(1.0, -24);                        // fp32 unit roundoff

std::vector<double> normal_doubles(size_t n, uint32_t seed, double mean, double stddev) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(mean, stddev);
  std::vector<double> out(n);
  for (auto& v : out) v = normal(rng);
  return out;
}

std::vector<float> to_floats(const std::vector<double>& v) { return {v.begin(), v.end()}; }

double sigmoid(double x) { return 1 / (1 + std::exp(-x)); }

// k distinct experts per token out of E (a partial shuffle per row).
std::vector<int32_t> random_ids(int64_t tokens, int64_t experts, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(size_t(tokens * k)), all(static_cast<size_t>(experts));
  for (int64_t t = 0; t < tokens; ++t) {
    std::iota(all.begin(), all.end(), 0);
    for (int64_t i = 0; i < k; ++i) {
      std::uniform_int_distribution<int64_t> pick(i, experts - 1);
      std::swap(all[i], all[pick(rng)]);
      ids[t * k + i] = all[i];
    }
  }
  return ids;
}

struct GateCase {
  MoeGateConfig config;
  bool with_bias;
  std::string name() const {
    return "E=" + std::to_string(config.num_experts) +
           " groups=" + std::to_string(config.num_groups) + "/" +
           std::to_string(config.topk_groups) + " k=" + std::to_string(config.experts_per_token) +
           (config.norm_topk_prob ? " norm" : " no-norm") + (with_bias ? " bias" : " no-bias");
  }
};

// The group-limited configs of the brief, one without groups, and DeepSeek-V3's own; each with
// and without norm_topk_prob and bias.
std::vector<GateCase> gate_cases(bool with_full_size) {
  std::vector<MoeGateConfig> configs = {
      {8, 4, 2, 2, 2.5f, true}, {16, 4, 2, 4, 2.5f, true}, {6, 1, 1, 3, 1.5f, true}};
  if (with_full_size) configs.push_back({256, 8, 4, 8, 2.5f, true});
  std::vector<GateCase> cases;
  for (MoeGateConfig c : configs) {
    for (bool norm : {true, false}) {
      for (bool bias : {false, true}) {
        c.norm_topk_prob = norm;
        cases.push_back({c, bias});
      }
    }
  }
  return cases;
}

// The e_score_correction_bias is small next to the scores (DeepSeek's is O(1e-2)), but large
// enough to change the selection now and then.
std::vector<float> gate_bias(int64_t experts, uint32_t seed) {
  return to_floats(normal_doubles(size_t(experts), seed, 0.0, 0.05));
}

TEST(MoeGateTrain, FloatForwardIsSelectExperts) {
  const int64_t T = 7;
  for (const GateCase& c : gate_cases(true)) {
    SCOPED_TRACE(c.name());
    const int64_t E = c.config.num_experts, K = c.config.experts_per_token;
    const std::vector<float> logits = to_floats(normal_doubles(size_t(T * E), 1, 0.0, 1.5));
    const std::vector<float> bias = gate_bias(E, 2);
    std::vector<int32_t> want_ids(size_t(T * K));
    std::vector<float> want_weights(size_t(T * K));
    for (int64_t t = 0; t < T; ++t) {
      select_experts(logits.data() + t * E, c.with_bias ? bias.data() : nullptr, c.config,
                     want_ids.data() + t * K, want_weights.data() + t * K);
    }
    for (int version = 0; version < 4; ++version) {  // reference, then fast on 1, 2, 3 threads
      std::vector<int32_t> ids(size_t(T * K), -1);
      std::vector<float> weights(size_t(T * K), -1.0f);
      const MoeGateTrainParams p{.logits = logits.data(),
                                 .bias = c.with_bias ? bias.data() : nullptr,
                                 .config = c.config,
                                 .tokens = T,
                                 .expert_ids = ids.data(),
                                 .expert_weights = weights.data()};
      if (version == 0) {
        moe_gate_train_forward_reference(p);
      } else {
        ThreadPool pool(version);
        moe_gate_train_forward(p, pool);
      }
      EXPECT_EQ(ids, want_ids) << "version " << version;
      EXPECT_EQ(weights, want_weights) << "version " << version;  // bit-identical
    }
  }
}

TEST(MoeGateTrain, DoubleForwardSelectsOnFloatLogitsAndWeighsInDouble) {
  const int64_t T = 5;
  for (const GateCase& c : gate_cases(true)) {
    SCOPED_TRACE(c.name());
    const int64_t E = c.config.num_experts, K = c.config.experts_per_token;
    const std::vector<double> logits = normal_doubles(size_t(T * E), 3, 0.0, 1.5);
    const std::vector<float> logits32 = to_floats(logits);
    const std::vector<float> bias = gate_bias(E, 4);
    std::vector<int32_t> ids(size_t(T * K));
    std::vector<double> weights(size_t(T * K));
    moe_gate_train_forward_reference(
        MoeGateTrain<double>{.logits = logits.data(),
                             .bias = c.with_bias ? bias.data() : nullptr,
                             .config = c.config,
                             .tokens = T,
                             .expert_ids = ids.data(),
                             .expert_weights = weights.data()});
    std::vector<int32_t> want_ids(static_cast<size_t>(K));
    std::vector<float> weights32(static_cast<size_t>(K));
    for (int64_t t = 0; t < T; ++t) {
      select_experts(logits32.data() + t * E, c.with_bias ? bias.data() : nullptr, c.config,
                     want_ids.data(), weights32.data());
      ASSERT_EQ(std::vector<int32_t>(ids.begin() + t * K, ids.begin() + (t + 1) * K), want_ids);
      double sum = 0;
      double largest = 0;  // the largest |logit| among the selected
      for (int64_t i = 0; i < K; ++i) {
        sum += sigmoid(logits[t * E + want_ids[i]]);
        largest = std::max(largest, std::fabs(logits[t * E + want_ids[i]]));
      }
      for (int64_t i = 0; i < K; ++i) {
        const double s = sigmoid(logits[t * E + want_ids[i]]);
        const double g = (c.config.norm_topk_prob ? s / sum : s) * c.config.routed_scaling_factor;
        // Same formula, fp64 steps in the same order: a few fp64 ulps (exp, divisions, k adds).
        EXPECT_NEAR(weights[t * K + i], g, 16 * kEps64 * g);
        // The fp32 weights carry the fp32 rounding of each selected logit (u |l| absolute,
        // which moves log σ by at most u |l|; the normalized g depends on all k of them: 2 k u
        // |l|max relative) and of their own k + 6 steps (exp, add, division; k-term sum).
        EXPECT_NEAR(weights32[i], g, (double(K) + 6 + 2 * double(K) * largest) * kUlp32 * g);
      }
    }
  }
}

// Central differences of L_t = Σ_i dy[t, i] g[t, i] in fp64, logit by logit. h = 1e-6 · max(1, |l|)
// moves no selection (checked: the ids at ±h must equal the base ids; the random logits have
// gaps of order 1e-2). Error of the difference: rounding (k + 4)·eps·S per evaluation, S =
// Σ_i |dy_i g_i|, divided by 2h, twice over: 2 (k + 4) eps S / h (~3e-8 here); truncation
// h²/6 · |L'''| with |L'''| ≤ Σ|dy| · r (σ's derivatives are below 1). The gradients are O(0.1).
TEST(MoeGateTrain, BackwardMatchesFiniteDifferences) {
  const int64_t T = 5;
  for (const GateCase& c : gate_cases(false)) {
    SCOPED_TRACE(c.name());
    const int64_t E = c.config.num_experts, K = c.config.experts_per_token;
    const double r = c.config.routed_scaling_factor;
    std::vector<double> logits = normal_doubles(size_t(T * E), 5, 0.0, 1.5);
    const std::vector<double> dy = normal_doubles(size_t(T * K), 6, 0.0, 1.0);
    const std::vector<float> bias = gate_bias(E, 7);
    std::vector<int32_t> ids(size_t(T * K)), moved_ids(size_t(T * K));
    std::vector<double> weights(size_t(T * K)), moved_weights(size_t(T * K));
    MoeGateTrain<double> p{.logits = logits.data(),
                           .bias = c.with_bias ? bias.data() : nullptr,
                           .config = c.config,
                           .tokens = T,
                           .expert_ids = ids.data(),
                           .expert_weights = weights.data(),
                           .dweights = dy.data()};
    moe_gate_train_forward_reference(p);
    std::vector<double> dlogits(size_t(T * E), 0.0);
    p.dlogits = dlogits.data();
    moe_gate_backward_reference(p);

    MoeGateTrain<double> moved = p;
    moved.expert_ids = moved_ids.data();
    moved.expert_weights = moved_weights.data();
    const auto token_loss = [&](int64_t t) {
      moe_gate_train_forward_reference(moved);
      EXPECT_EQ(moved_ids, ids) << "a perturbation changed the selection";
      double loss = 0;
      for (int64_t i = 0; i < K; ++i) loss += dy[t * K + i] * moved_weights[t * K + i];
      return loss;
    };
    int selected_nonzero = 0;
    for (int64_t t = 0; t < T; ++t) {
      double scale = 0, dy_sum = 0;
      for (int64_t i = 0; i < K; ++i) {
        scale += std::fabs(dy[t * K + i] * weights[t * K + i]);
        dy_sum += std::fabs(dy[t * K + i]);
      }
      for (int64_t e = 0; e < E; ++e) {
        const double base = logits[t * E + e];
        const double h = 1e-6 * std::max(1.0, std::fabs(base));
        logits[t * E + e] = base + h;
        const double plus = token_loss(t);
        logits[t * E + e] = base - h;
        const double minus = token_loss(t);
        logits[t * E + e] = base;
        const double fd = (plus - minus) / (2 * h);
        const double tol = 2 * (double(K) + 4) * kEps64 * scale / h + h * h * dy_sum * r;
        const double analytic = dlogits[t * E + e];
        EXPECT_NEAR(analytic, fd, tol) << "token " << t << " expert " << e;
        bool selected = false;
        for (int64_t i = 0; i < K; ++i) selected |= ids[t * K + i] == e;
        if (!selected) {
          EXPECT_EQ(analytic, 0.0) << "an unselected expert got a gradient";
        }
        selected_nonzero += selected && std::fabs(analytic) > 1e3 * tol;
      }
    }
    // Without norm_topk_prob every selected expert has a gradient; with it the k = 2 rows can
    // cancel only by a measure-zero accident.
    EXPECT_GT(selected_nonzero, T * K / 2) << "the test must exercise real gradients";
  }
}

TEST(MoeGateTrain, BackwardAccumulatesIntoDlogits) {
  const MoeGateConfig config{16, 4, 2, 4, 2.5f, true};
  const int64_t T = 3, E = 16, K = 4;
  const std::vector<float> logits = to_floats(normal_doubles(size_t(T * E), 8, 0.0, 1.5));
  const std::vector<float> dy = to_floats(normal_doubles(size_t(T * K), 9, 0.0, 1.0));
  const std::vector<float> initial = to_floats(normal_doubles(size_t(T * E), 10, 0.0, 1.0));
  std::vector<int32_t> ids(size_t(T * K));
  std::vector<float> weights(size_t(T * K)), from_zero(size_t(T * E), 0.0f), added = initial;
  MoeGateTrainParams p{.logits = logits.data(),
                       .config = config,
                       .tokens = T,
                       .expert_ids = ids.data(),
                       .expert_weights = weights.data(),
                       .dweights = dy.data(),
                       .dlogits = from_zero.data()};
  moe_gate_train_forward_reference(p);
  moe_gate_backward_reference(p);
  p.dlogits = added.data();
  moe_gate_backward_reference(p);
  // Each element receives at most one add (distinct ids), so the sum is exactly one fp32 add.
  for (int64_t i = 0; i < T * E; ++i) ASSERT_EQ(added[i], initial[i] + from_zero[i]) << i;
}

TEST(MoeGateTrain, FastIsBitIdenticalToReference) {
  const int64_t T = 37;
  for (const GateCase& c : gate_cases(true)) {
    SCOPED_TRACE(c.name());
    const int64_t E = c.config.num_experts, K = c.config.experts_per_token;
    const std::vector<float> logits = to_floats(normal_doubles(size_t(T * E), 11, 0.0, 2.0));
    const std::vector<float> dy = to_floats(normal_doubles(size_t(T * K), 12, 0.0, 1.0));
    const std::vector<float> initial = to_floats(normal_doubles(size_t(T * E), 13, 0.0, 0.1));
    const std::vector<float> bias = gate_bias(E, 14);
    std::vector<int32_t> ids(size_t(T * K));
    std::vector<float> weights(size_t(T * K)), want = initial;
    MoeGateTrainParams p{.logits = logits.data(),
                         .bias = c.with_bias ? bias.data() : nullptr,
                         .config = c.config,
                         .tokens = T,
                         .expert_ids = ids.data(),
                         .expert_weights = weights.data(),
                         .dweights = dy.data(),
                         .dlogits = want.data()};
    moe_gate_train_forward_reference(p);
    moe_gate_backward_reference(p);
    for (int threads : {1, 2, 3}) {
      ThreadPool pool(threads);
      std::vector<float> got = initial;
      p.dlogits = got.data();
      moe_gate_backward(p, pool);
      // The same per-token arithmetic on disjoint rows: bit-identical, run to run too.
      EXPECT_EQ(got, want) << threads << " threads";
    }
  }
}

// The loss straight from DeepSeek-V3's definition, per token and in fp64, in another order than
// the reference (token by token rather than expert by expert).
double balance_loss_formula(const std::vector<double>& logits, const std::vector<int32_t>& ids,
                            int64_t T, int64_t E, int64_t K, double alpha) {
  std::vector<double> count(size_t(E), 0.0);
  for (int32_t id : ids) count[id] += 1;
  double loss = 0;
  for (int64_t t = 0; t < T; ++t) {
    double z = 0, share = 0;
    for (int64_t e = 0; e < E; ++e) z += sigmoid(logits[t * E + e]);
    for (int64_t e = 0; e < E; ++e) {
      const double f = double(E) / double(K * T) * count[e];
      share += f * sigmoid(logits[t * E + e]) / z / double(T);
    }
    loss += share;
  }
  return alpha * loss;
}

TEST(MoeBalanceLoss, ReferenceMatchesTheFormula) {
  for (const auto& [T, E, K] :
       {std::tuple<int64_t, int64_t, int64_t>{1, 4, 1}, {5, 9, 3}, {13, 16, 4}, {7, 256, 8}}) {
    const std::vector<double> logits = normal_doubles(size_t(T * E), 20, 0.0, 2.0);
    const std::vector<int32_t> ids = random_ids(T, E, K, 21);
    double loss = -1;
    moe_balance_loss_reference(MoeBalanceLoss<double>{.logits = logits.data(),
                                                      .expert_ids = ids.data(),
                                                      .tokens = T,
                                                      .experts = E,
                                                      .k = K,
                                                      .alpha = 0.3,
                                                      .loss = &loss});
    // Sums of T·E positive terms in two orders: each within (T + E + 8) eps relative.
    const double want = balance_loss_formula(logits, ids, T, E, K, 0.3);
    EXPECT_NEAR(loss, want, 2 * double(T + E + 8) * kEps64 * want) << T << " " << E << " " << K;
  }
}

// With every expert routed equally often f_e = 1, so loss = alpha Σ_e P_e = alpha for any logits,
// and its gradient (f_j − Σ_e f_e s'_e) vanishes.
TEST(MoeBalanceLoss, BalancedRoutingGivesAlphaAndNoGradient) {
  const int64_t T = 9, E = 6, K = 2;
  std::vector<int32_t> ids(size_t(T * K));
  for (int64_t t = 0; t < T; ++t) {
    ids[t * K] = int32_t(2 * t % E);
    ids[t * K + 1] = int32_t((2 * t + 1) % E);
  }
  const std::vector<double> logits = normal_doubles(size_t(T * E), 22, 0.0, 2.0);
  std::vector<double> dlogits(size_t(T * E), 0.0);
  double loss = -1;
  moe_balance_loss_reference(MoeBalanceLoss<double>{.logits = logits.data(),
                                                    .expert_ids = ids.data(),
                                                    .tokens = T,
                                                    .experts = E,
                                                    .k = K,
                                                    .alpha = 0.5,
                                                    .loss = &loss,
                                                    .dlogits = dlogits.data()});
  EXPECT_NEAR(loss, 0.5, 0.5 * double(T + E + 8) * kEps64);
  // f_j − Σ f s' = 1 − Σ s' is a rounding residue of E terms; the factor in front is
  // alpha / T / Z · s(1 − s) ≤ 0.5 / 9 / Z / 4.
  for (double v : dlogits) EXPECT_LE(std::fabs(v), double(E + 4) * kEps64);
}

// Central differences of the fp64 reference's loss, for every logit, with grad_scale applied.
// The ids (hence f) are inputs, so no selection can move. Error: each loss evaluation rounds
// within (T + E + 8) eps |loss| (sums of positive terms), so the difference is within
// (T + E + 8) eps |loss| / h; truncation h²/6 · |loss'''| ≤ h² alpha (σ's derivatives below 1,
// f / (T Z) ≤ 1). The gradients are O(alpha / (T·E)) ~ 5e-3, the tolerance ~1e-9.
TEST(MoeBalanceLoss, GradientMatchesFiniteDifferences) {
  const int64_t T = 6, E = 9, K = 3;
  const double alpha = 0.3, grad_scale = 0.5;
  std::vector<double> logits = normal_doubles(size_t(T * E), 23, 0.0, 1.5);
  const std::vector<int32_t> ids = random_ids(T, E, K, 24);
  std::vector<double> dlogits(size_t(T * E), 0.0);
  double loss = 0;
  MoeBalanceLoss<double> p{.logits = logits.data(),
                           .expert_ids = ids.data(),
                           .tokens = T,
                           .experts = E,
                           .k = K,
                           .alpha = alpha,
                           .grad_scale = grad_scale,
                           .loss = &loss,
                           .dlogits = dlogits.data()};
  moe_balance_loss_reference(p);
  MoeBalanceLoss<double> loss_only = p;
  loss_only.dlogits = nullptr;
  int nonzero = 0;
  for (int64_t i = 0; i < T * E; ++i) {
    const double base = logits[i];
    const double h = 1e-6 * std::max(1.0, std::fabs(base));
    double plus = 0, minus = 0;
    logits[i] = base + h;
    loss_only.loss = &plus;
    moe_balance_loss_reference(loss_only);
    logits[i] = base - h;
    loss_only.loss = &minus;
    moe_balance_loss_reference(loss_only);
    logits[i] = base;
    const double fd = grad_scale * (plus - minus) / (2 * h);
    const double tol = grad_scale * (double(T + E + 8) * kEps64 * loss / h + h * h * alpha);
    EXPECT_NEAR(dlogits[i], fd, tol) << "token " << i / E << " expert " << i % E;
    nonzero += std::fabs(dlogits[i]) > 1e3 * tol;
  }
  EXPECT_GT(nonzero, T * E / 2) << "the test must exercise real gradients";
}

TEST(MoeBalanceLoss, GradientIsScaledAndAccumulated) {
  const int64_t T = 4, E = 8, K = 2;
  const std::vector<double> logits = normal_doubles(size_t(T * E), 25, 0.0, 1.5);
  const std::vector<int32_t> ids = random_ids(T, E, K, 26);
  const std::vector<double> initial = normal_doubles(size_t(T * E), 27, 0.0, 1.0);
  std::vector<double> unit(size_t(T * E), 0.0), scaled = initial;
  double loss_unit = 0, loss_scaled = 0;
  MoeBalanceLoss<double> p{.logits = logits.data(),
                           .expert_ids = ids.data(),
                           .tokens = T,
                           .experts = E,
                           .k = K,
                           .alpha = 0.2,
                           .loss = &loss_unit,
                           .dlogits = unit.data()};
  moe_balance_loss_reference(p);
  p.grad_scale = 0.25;
  p.loss = &loss_scaled;
  p.dlogits = scaled.data();
  moe_balance_loss_reference(p);
  EXPECT_EQ(loss_scaled, loss_unit) << "grad_scale must not scale the loss";
  // 0.25 is a power of two, so the scaled gradient is exact; one add of the initial value.
  for (int64_t i = 0; i < T * E; ++i) ASSERT_EQ(scaled[i], initial[i] + 0.25 * unit[i]) << i;
}

TEST(MoeBalanceLoss, NoTokensGiveZeroLoss) {
  double loss = -1;
  for (const bool fast : {false, true}) {
    float loss32 = -1;
    ThreadPool pool(2);
    if (fast) {
      moe_balance_loss({.experts = 4, .k = 2, .alpha = 1, .loss = &loss32}, pool);
      EXPECT_EQ(loss32, 0.0f);
    } else {
      moe_balance_loss_reference(
          MoeBalanceLoss<double>{.experts = 4, .k = 2, .alpha = 1, .loss = &loss});
      EXPECT_EQ(loss, 0.0);
    }
  }
}

// Fast vs the fp32 reference. With u = 2^-24: the sigmoid is within 3u (hn::Exp is 1 ulp,
// std::exp 0.5, plus the add and division), each of Z and Σ coef s is a sum of E positive terms
// (E u each), the reference sums P over T tokens (T u) and the loss over E experts (E u). So the
// loss is within (4E + T + 16) u relative. In a gradient element grad_scale (c_j − m) / Z ·
// s (1 − s) the difference c_j − m (c = alpha f / T, m = Σ c s') is within (2E + 8) u (c_j + m)
// absolutely, 1/Z within (2E + 4) u relative, and s (1 − s) within 8 u s absolutely (the
// sigmoid's error is relative to s, not to 1 − s): at most (4E + 24) u |grad_scale| (c_j + m) s /
// Z, plus one rounding of the accumulating add (2u of the result).
TEST(MoeBalanceLoss, FastMatchesReference) {
  const float alpha = 0.1f, grad_scale = 0.75f;
  for (const auto& [T, E, K] : {std::tuple<int64_t, int64_t, int64_t>{1, 7, 1},
                                {5, 16, 3},
                                {37, 33, 4},
                                {37, 256, 8},
                                {64, 8, 2}}) {
    SCOPED_TRACE("T=" + std::to_string(T) + " E=" + std::to_string(E) + " k=" + std::to_string(K));
    const std::vector<double> logits64 = normal_doubles(size_t(T * E), 30, 0.0, 2.5);
    const std::vector<float> logits = to_floats(logits64);
    const std::vector<int32_t> ids = random_ids(T, E, K, 31);
    const std::vector<float> initial = to_floats(normal_doubles(size_t(T * E), 32, 0.0, 1e-6));
    std::vector<float> want = initial;
    float want_loss = -1;
    MoeBalanceLossParams p{.logits = logits.data(),
                           .expert_ids = ids.data(),
                           .tokens = T,
                           .experts = E,
                           .k = K,
                           .alpha = alpha,
                           .grad_scale = grad_scale,
                           .loss = &want_loss,
                           .dlogits = want.data()};
    moe_balance_loss_reference(p);
    // The scale of each gradient element's error, from fp64 values of its factors.
    std::vector<double> count(size_t(E), 0.0), bound(size_t(T * E));
    for (int32_t id : ids) count[id] += 1;
    for (int64_t t = 0; t < T; ++t) {
      double z = 0, m = 0;
      for (int64_t e = 0; e < E; ++e) z += sigmoid(logits[t * E + e]);
      const auto c = [&](int64_t e) { return alpha * double(E) * count[e] / double(K * T * T); };
      for (int64_t e = 0; e < E; ++e) m += c(e) * sigmoid(logits[t * E + e]) / z;
      for (int64_t e = 0; e < E; ++e) {
        bound[t * E + e] =
            double(4 * E + 24) * kUlp32 * grad_scale * (c(e) + m) * sigmoid(logits[t * E + e]) / z +
            2 * kUlp32 * std::fabs(want[t * E + e]);
      }
    }
    std::vector<float> first;
    float first_loss = 0;
    test::for_each_simd_target([&] {
      for (int threads : {1, 2, 3}) {
        ThreadPool pool(threads);
        std::vector<float> got = initial;
        float got_loss = -1;
        MoeBalanceLossParams q = p;
        q.loss = &got_loss;
        q.dlogits = got.data();
        moe_balance_loss(q, pool);
        EXPECT_NEAR(got_loss, want_loss, double(4 * E + T + 16) * kUlp32 * want_loss) << threads;
        for (int64_t i = 0; i < T * E; ++i) {
          ASSERT_NEAR(got[i], want[i], bound[i]) << threads << " threads, element " << i;
        }
        // Per-token rows and a token-order sum: the same bits for every thread count and run.
        if (threads == 1) {
          first = got;
          first_loss = got_loss;
        } else {
          EXPECT_EQ(got, first) << threads << " threads";
          EXPECT_EQ(got_loss, first_loss) << threads << " threads";
        }
      }
    });
  }
}

TEST(MoeBalanceLoss, FastIsDeterministic) {
  const int64_t T = 41, E = 64, K = 6;
  const std::vector<float> logits = to_floats(normal_doubles(size_t(T * E), 40, 0.0, 2.0));
  const std::vector<int32_t> ids = random_ids(T, E, K, 41);
  ThreadPool pool(3);
  std::vector<float> runs[2];
  float losses[2];
  for (int run = 0; run < 2; ++run) {
    runs[run].assign(size_t(T * E), 0.0f);
    moe_balance_loss({.logits = logits.data(),
                      .expert_ids = ids.data(),
                      .tokens = T,
                      .experts = E,
                      .k = K,
                      .alpha = 0.01f,
                      .loss = &losses[run],
                      .dlogits = runs[run].data()},
                     pool);
  }
  EXPECT_EQ(runs[0], runs[1]);
  EXPECT_EQ(losses[0], losses[1]);
}

TEST(RouterBias, CountExpertLoadAccumulates) {
  const std::vector<int32_t> ids = {0, 2, 2, 3, 0, 1};  // 3 tokens, k = 2
  std::vector<int64_t> load = {10, 0, 0, 0};
  count_expert_load(ids.data(), 3, 2, 4, load.data());
  EXPECT_EQ(load, (std::vector<int64_t>{12, 1, 2, 1}));
  count_expert_load(ids.data(), 0, 2, 4, load.data());  // no tokens: unchanged
  EXPECT_EQ(load, (std::vector<int64_t>{12, 1, 2, 1}));
}

TEST(RouterBias, UpdateMovesTowardsBalance) {
  // Mean load 6: expert 0 is overloaded (bias down), 1 underloaded (up), 2 and 3 at the mean.
  const std::vector<int64_t> load = {10, 2, 6, 6};
  std::vector<float> bias = {0.5f, -0.25f, 0.125f, 0.0f};
  update_router_bias(load.data(), 4, 0.001f, bias.data());
  EXPECT_EQ(bias, (std::vector<float>{0.5f - 0.001f, -0.25f + 0.001f, 0.125f, 0.0f}));
  // A mean that is not an integer (7/3): the sign is still exact.
  const std::vector<int64_t> uneven = {2, 3, 2};
  std::vector<float> b = {0, 0, 0};
  update_router_bias(uneven.data(), 3, 0.5f, b.data());
  EXPECT_EQ(b, (std::vector<float>{0.5f, -0.5f, 0.5f}));
  // Balanced: unchanged.
  const std::vector<int64_t> balanced = {4, 4, 4};
  update_router_bias(balanced.data(), 3, 0.5f, b.data());
  EXPECT_EQ(b, (std::vector<float>{0.5f, -0.5f, 0.5f}));
}

TEST(MoeTrainOps, BadParametersThrow) {
  const MoeGateConfig good{8, 4, 2, 2, 2.5f, true};
  std::vector<float> logits(16, 0.0f), weights(4), dy(4), dlogits(16), bias(8, 0.0f);
  std::vector<int32_t> ids = {0, 1, 2, 3};
  ThreadPool pool(2);
  const MoeGateTrainParams gate{.logits = logits.data(),
                                .config = good,
                                .tokens = 2,
                                .expert_ids = ids.data(),
                                .expert_weights = weights.data(),
                                .dweights = dy.data(),
                                .dlogits = dlogits.data()};
  const auto forward_throws = [&](MoeGateTrainParams p) {
    EXPECT_THROW(moe_gate_train_forward_reference(p), Error);
    EXPECT_THROW(moe_gate_train_forward(p, pool), Error);
  };
  const auto backward_throws = [&](MoeGateTrainParams p) {
    EXPECT_THROW(moe_gate_backward_reference(p), Error);
    EXPECT_THROW(moe_gate_backward(p, pool), Error);
  };
  moe_gate_train_forward(gate, pool);  // the good params pass
  moe_gate_backward(gate, pool);
  MoeGateTrainParams p = gate;
  p.config.num_groups = 3;  // 8 experts do not split into 3 groups
  forward_throws(p);
  backward_throws(p);
  p = gate;
  p.config.topk_groups = 5;
  forward_throws(p);
  p = gate;
  p.config.experts_per_token = 5;  // more than the 2 kept groups of 2 hold
  forward_throws(p);
  p = gate;
  p.config = {4, 4, 2, 2, 2.5f, true};  // groups of 1 expert cannot take a top-2 score
  p.bias = bias.data();
  forward_throws(p);
  p = gate;
  p.tokens = -1;
  forward_throws(p);
  p = gate;
  p.logits = nullptr;
  forward_throws(p);
  backward_throws(p);
  p = gate;
  p.dlogits = nullptr;
  backward_throws(p);
  p = gate;
  p.dweights = nullptr;
  backward_throws(p);
  ids = {0, 8, 2, 3};  // expert 8 of 8
  backward_throws(gate);
  ids = {0, 1, 2, 2};  // expert 2 twice in token 1
  backward_throws(gate);
  ids = {0, -1, 2, 3};
  backward_throws(gate);

  ids = {0, 1, 2, 3};
  float loss = 0;
  const MoeBalanceLossParams balance{.logits = logits.data(),
                                     .expert_ids = ids.data(),
                                     .tokens = 2,
                                     .experts = 8,
                                     .k = 2,
                                     .alpha = 0.1f,
                                     .loss = &loss};
  const auto balance_throws = [&](MoeBalanceLossParams q) {
    EXPECT_THROW(moe_balance_loss_reference(q), Error);
    EXPECT_THROW(moe_balance_loss(q, pool), Error);
  };
  moe_balance_loss(balance, pool);
  MoeBalanceLossParams q = balance;
  q.k = 9;
  balance_throws(q);
  q = balance;
  q.experts = 0;
  balance_throws(q);
  q = balance;
  q.alpha = -1;
  balance_throws(q);
  q = balance;
  q.grad_scale = std::numeric_limits<float>::infinity();
  balance_throws(q);
  q = balance;
  q.loss = nullptr;
  balance_throws(q);
  q = balance;
  q.expert_ids = nullptr;
  balance_throws(q);
  ids = {0, 1, 3, 3};
  balance_throws(balance);
  ids = {0, 1, 2, 8};
  balance_throws(balance);

  std::vector<int64_t> load(8, 0);
  EXPECT_THROW(count_expert_load(ids.data(), 2, 2, 8, load.data()), Error);  // id 8
  EXPECT_THROW(count_expert_load(ids.data(), 2, 0, 8, load.data()), Error);
  EXPECT_THROW(count_expert_load(ids.data(), 2, 2, 8, nullptr), Error);
  EXPECT_THROW(update_router_bias(load.data(), 0, 0.001f, bias.data()), Error);
  EXPECT_THROW(update_router_bias(load.data(), 8, -0.001f, bias.data()), Error);
  EXPECT_THROW(update_router_bias(load.data(), 8, 0.001f, nullptr), Error);
  load[3] = -1;
  EXPECT_THROW(update_router_bias(load.data(), 8, 0.001f, bias.data()), Error);
}

}  // namespace
}  // namespace dsa

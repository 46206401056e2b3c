// MHA-mode MLA for short prefill (REF §5.4): causal attention with per-head q, k [qk_dim] and
// v [v_dim], reference and fast (1 and 2 threads) against an exact (double) attention, causal
// alone and with DSA's selected keys (indices). Widths:
// V3.2's 192 / 128, smaller configs' 96 / 32 (nope 32 + rope 64) and 80 / 16 (nope 48 + rope 32),
// and 19 / 5 (nope 17 + rope 2), narrower than one SIMD vector.
//
// Tolerance, u = 2^-8: the reference rounds q·k and then the scaled score to bf16, so a score is
// off by Δ_j <= u |raw_j| scale + u |scaled_j|; probabilities move by at most e^{2Δ}(1 + u) - 1
// (their bf16 rounding adds u), so |out - exact| <= (e^{2Δ}(1 + u) - 1) max|v| + u |exact|.
// The fast version has Δ = scale qk_dim 2^-24 Σ|q k| (fp32 dot), doubled for the exp
// approximation, and rounds only the output.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/float_formats.h"
#include "ops/attention/mla.h"
#include "simd_targets.h"

namespace dsa {
namespace {

constexpr double kU = 1.0 / 256;

std::vector<float> random_bf16(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> out(n);
  for (float& x : out) x = round_to_bf16(dist(rng));
  return out;
}

struct Widths {
  int64_t qk_dim, v_dim;
};
constexpr Widths kV32{192, 128};
const Widths kWidths[] = {kV32, {96, 32}, {80, 16}, {19, 5}};

// `indices` [T, topk] (empty: none) restricts each row to the causal keys it lists.
void check_mha(int64_t T, int64_t S, int64_t H, Widths widths = kV32,
               const std::vector<int32_t>& indices = {}, int64_t topk = 0) {
  const int64_t qk_dim = widths.qk_dim, v_dim = widths.v_dim;
  const std::vector<float> q = random_bf16(size_t(T * H * qk_dim), 1);
  const std::vector<float> k = random_bf16(size_t(S * H * qk_dim), 2);
  const std::vector<float> v = random_bf16(size_t(S * H * v_dim), 3);
  MhaPrefillParams p{q.data(), k.data(), v.data(), nullptr, T,
                     S,        H,        qk_dim,   v_dim,   mla_softmax_scale()};
  if (!indices.empty()) {
    p.indices = indices.data();
    p.topk = topk;
  }
  const auto sees = [&](int64_t t, int64_t s) {  // causal, and listed when there are indices
    if (s > t + S - T) return false;
    if (indices.empty()) return true;
    return std::find(indices.begin() + t * topk, indices.begin() + (t + 1) * topk, s) !=
           indices.begin() + (t + 1) * topk;
  };
  for (int version = 0; version < 3; ++version) {
    std::vector<float> out(size_t(T * H * v_dim), -3.0f);
    p.out = out.data();
    if (version == 0) {
      mha_prefill_ref(p);
    } else {
      ThreadPool pool(version);
      mha_prefill(p, pool);
    }
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t h = 0; h < H; ++h) {
        const float* qr = &q[(t * H + h) * qk_dim];
        std::vector<double> scores;
        std::vector<int64_t> seen;  // the key of each score
        double delta = 0, max_v = 0;
        for (int64_t s = 0; s <= t + S - T; ++s) {
          if (!sees(t, s)) continue;
          seen.push_back(s);
          const float* kr = &k[(s * H + h) * qk_dim];
          double raw = 0, magnitude = 0;
          for (int d = 0; d < qk_dim; ++d) {
            raw += double(qr[d]) * kr[d];
            magnitude += std::fabs(double(qr[d]) * kr[d]);
          }
          const double scaled = raw * p.softmax_scale;
          scores.push_back(scaled);
          delta = std::max(
              delta, version == 0 ? kU * std::fabs(raw) * p.softmax_scale + kU * std::fabs(scaled)
                                  : 2 * p.softmax_scale * qk_dim * 0x1p-24 * magnitude + 1e-6);
          for (int d = 0; d < v_dim; ++d) {
            max_v = std::max(max_v, std::fabs(double(v[(s * H + h) * v_dim + d])));
          }
        }
        if (scores.empty()) {  // no key: out = 0
          for (int d = 0; d < v_dim; ++d) ASSERT_EQ(out[(t * H + h) * v_dim + d], 0.0f) << t;
          continue;
        }
        double max_score = scores[0], sum = 0;
        for (double s : scores) max_score = std::max(max_score, s);
        for (double s : scores) sum += std::exp(s - max_score);
        const double p_error = std::exp(2 * delta) * (1 + (version == 0 ? kU : 0)) - 1;
        for (int d = 0; d < v_dim; ++d) {
          double exact = 0;
          for (size_t s = 0; s < scores.size(); ++s) {
            exact += std::exp(scores[s] - max_score) / sum * v[(seen[s] * H + h) * v_dim + d];
          }
          ASSERT_NEAR(out[(t * H + h) * v_dim + d], exact,
                      p_error * max_v + kU * std::fabs(exact) + 1e-6)
              << "T=" << T << " S=" << S << " H=" << H << " qk_dim " << qk_dim << " v_dim " << v_dim
              << " version " << version << " t=" << t << " h=" << h << " d=" << d;
        }
      }
    }
  }
}

TEST(MhaPrefill, MatchesExactCausalAttention) {
  for (const Widths& widths : kWidths) {
    // Query counts around the 4-row block, key counts around the 64-key chunk.
    for (int64_t T : {1, 3, 4, 5, 9}) check_mha(T, T, 3, widths);
    check_mha(70, 70, 2, widths);
    check_mha(5, 130, 2, widths);  // chunked prefill: 125 earlier keys
  }
}

TEST(MhaPrefill, IndicesSelectAmongTheCausalKeys) {
  // REF's index mask in MHA mode: 9 rows from position 121 over 130 keys, 24 slots per row with
  // keys spread over the two 64-key chunks, some beyond the row's causal limit, -1 slots and a
  // duplicate; row 4 lists only future keys and -1, so it sees none (out = 0).
  const int64_t T = 9, S = 130, topk = 24;
  std::vector<int32_t> indices(size_t(T * topk), -1);
  std::mt19937 rng(5);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < topk - 3; ++i) indices[size_t(t * topk + i)] = int32_t(rng() % S);
    indices[size_t(t * topk + topk - 3)] = indices[size_t(t * topk)];  // a duplicate
  }
  for (int64_t i = 0; i < topk; ++i) {
    indices[size_t(4 * topk + i)] = i % 2 ? -1 : int32_t(S - 1);  // after row 4's position 125
  }
  for (const Widths& widths : kWidths) check_mha(T, S, 3, widths, indices, topk);
  test::for_each_simd_target([&] { check_mha(T, S, 2, {19, 5}, indices, topk); });
}

TEST(MhaPrefill, EverySimdTarget) {
  test::for_each_simd_target([] {
    for (const Widths& widths : kWidths) check_mha(5, 67, 2, widths);
  });
}

TEST(MhaPrefill, RejectsMoreQueriesThanKeys) {
  const std::vector<float> x(4 * kV32.qk_dim);
  std::vector<float> out(4 * kV32.v_dim);
  MhaPrefillParams p{x.data(), x.data(), x.data(), out.data(), 3, 2, 1, 192, 128, 1.0f};
  try {
    mha_prefill_ref(p);
    FAIL();
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("got 3 queries and 2 keys"), std::string::npos)
        << error.what();
  }
  ThreadPool pool(1);
  EXPECT_THROW(mha_prefill(p, pool), Error);
}

TEST(MhaPrefill, RejectsIndicesOutsideTheKeys) {
  const std::vector<float> x(4 * kV32.qk_dim);
  std::vector<float> out(4 * kV32.v_dim);
  const std::vector<int32_t> indices = {0, 1, -1, 2};
  MhaPrefillParams p{x.data(), x.data(), x.data(), out.data(), 2, 2, 1, 192, 128, 1.0f};
  p.indices = indices.data();
  p.topk = 2;
  try {
    mha_prefill_ref(p);
    FAIL();
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("indices[1, 1] = 2 is outside the 2 keys"),
              std::string::npos)
        << error.what();
  }
  ThreadPool pool(1);
  EXPECT_THROW(mha_prefill(p, pool), Error);
}

TEST(MhaPrefill, RejectsMissingWidths) {
  const std::vector<float> x(4 * kV32.qk_dim);
  std::vector<float> out(4 * kV32.v_dim);
  MhaPrefillParams p{x.data(), x.data(), x.data(), out.data(), 1, 1, 1, 192, 0, 1.0f};
  try {
    mha_prefill_ref(p);
    FAIL();
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("qk_dim and v_dim must be positive, got 192 and 0"),
              std::string::npos)
        << error.what();
  }
  ThreadPool pool(1);
  EXPECT_THROW(mha_prefill(p, pool), Error);
}

}  // namespace
}  // namespace dsa

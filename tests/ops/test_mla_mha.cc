// MHA-mode MLA for short prefill (REF §5.4): causal attention with per-head q, k [192] and
// v [128], reference and fast (1 and 2 threads) against an exact (double) attention.
//
// Tolerance, u = 2^-8: the reference rounds q·k and then the scaled score to bf16, so a score is
// off by Δ_j <= u |raw_j| scale + u |scaled_j|; probabilities move by at most e^{2Δ}(1 + u) - 1
// (their bf16 rounding adds u), so |out - exact| <= (e^{2Δ}(1 + u) - 1) max|v| + u |exact|.
// The fast version has Δ = scale 192 2^-24 Σ|q k| (fp32 dot), doubled for the exp
// approximation, and rounds only the output.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/float_formats.h"
#include "ops/mla.h"
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

void check_mha(int64_t T, int64_t S, int64_t H) {
  const std::vector<float> q = random_bf16(size_t(T * H * kMhaQkDim), 1);
  const std::vector<float> k = random_bf16(size_t(S * H * kMhaQkDim), 2);
  const std::vector<float> v = random_bf16(size_t(S * H * kMhaVDim), 3);
  MhaPrefillParams p{q.data(), k.data(), v.data(), nullptr, T, S, H, mla_softmax_scale()};
  for (int version = 0; version < 3; ++version) {
    std::vector<float> out(size_t(T * H * kMhaVDim), -3.0f);
    p.out = out.data();
    if (version == 0) {
      mha_prefill_ref(p);
    } else {
      ThreadPool pool(version);
      mha_prefill(p, pool);
    }
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t h = 0; h < H; ++h) {
        const float* qr = &q[(t * H + h) * kMhaQkDim];
        std::vector<double> scores;
        double delta = 0, max_v = 0;
        for (int64_t s = 0; s <= t + S - T; ++s) {
          const float* kr = &k[(s * H + h) * kMhaQkDim];
          double raw = 0, magnitude = 0;
          for (int d = 0; d < kMhaQkDim; ++d) {
            raw += double(qr[d]) * kr[d];
            magnitude += std::fabs(double(qr[d]) * kr[d]);
          }
          const double scaled = raw * p.softmax_scale;
          scores.push_back(scaled);
          delta = std::max(
              delta, version == 0 ? kU * std::fabs(raw) * p.softmax_scale + kU * std::fabs(scaled)
                                  : 2 * p.softmax_scale * kMhaQkDim * 0x1p-24 * magnitude + 1e-6);
          for (int d = 0; d < kMhaVDim; ++d) {
            max_v = std::max(max_v, std::fabs(double(v[(s * H + h) * kMhaVDim + d])));
          }
        }
        double max_score = scores[0], sum = 0;
        for (double s : scores) max_score = std::max(max_score, s);
        for (double s : scores) sum += std::exp(s - max_score);
        const double p_error = std::exp(2 * delta) * (1 + (version == 0 ? kU : 0)) - 1;
        for (int d = 0; d < kMhaVDim; ++d) {
          double exact = 0;
          for (size_t s = 0; s < scores.size(); ++s) {
            exact += std::exp(scores[s] - max_score) / sum * v[(s * H + h) * kMhaVDim + d];
          }
          ASSERT_NEAR(out[(t * H + h) * kMhaVDim + d], exact,
                      p_error * max_v + kU * std::fabs(exact) + 1e-6)
              << "T=" << T << " S=" << S << " H=" << H << " version " << version << " t=" << t
              << " h=" << h << " d=" << d;
        }
      }
    }
  }
}

TEST(MhaPrefill, MatchesExactCausalAttention) {
  // Query counts around the 4-row block, key counts around the 64-key chunk.
  for (int64_t T : {1, 3, 4, 5, 9}) check_mha(T, T, 3);
  check_mha(70, 70, 2);
  check_mha(5, 130, 2);  // chunked prefill: 125 earlier keys
}

TEST(MhaPrefill, EverySimdTarget) {
  test::for_each_simd_target([] { check_mha(5, 67, 2); });
}

TEST(MhaPrefill, RejectsMoreQueriesThanKeys) {
  const std::vector<float> x(4 * kMhaQkDim);
  std::vector<float> out(4 * kMhaVDim);
  MhaPrefillParams p{x.data(), x.data(), x.data(), out.data(), 3, 2, 1, 1.0f};
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

}  // namespace
}  // namespace dsa

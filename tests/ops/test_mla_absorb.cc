// MLA weight absorption: q_abs = q_nope · W_UK and o = o_lat · W_UVᵀ per head, reference and
// fast, against exact double sums. Tolerance: an fp32 sum of K terms is within
// γ_K Σ|terms| (γ_K = K 2^-24 / (1 - K 2^-24)); the bf16 output adds u = 2^-8 relative.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/float_formats.h"
#include "ops/latent_cache.h"
#include "ops/mla_absorb.h"
#include "simd_targets.h"

namespace dsa {
namespace {

double tolerance(double exact, double magnitude, int terms) {
  const double gamma = terms * 0x1p-24 / (1 - terms * 0x1p-24);
  return gamma * magnitude + 0x1p-8 * (std::fabs(exact) + gamma * magnitude);
}

struct Case {
  int64_t T = 3, H = 5;
  std::vector<bf16> wkv_b;
  std::vector<float> q_nope, o_lat;
  Case()
      : wkv_b(size_t(H * kMlaWkvbRowsPerHead * kMlaLatentDim)),
        q_nope(size_t(T * H * 128)),
        o_lat(size_t(T * H * kMlaLatentDim)) {
    std::mt19937 rng(3);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    for (bf16& w : wkv_b) w = float_to_bf16(0.05f * dist(rng));
    for (float& x : q_nope) x = round_to_bf16(dist(rng));
    for (float& x : o_lat) x = round_to_bf16(dist(rng));
  }
  float w(int64_t h, int64_t row, int64_t c) const {
    return bf16_to_float(wkv_b[(h * kMlaWkvbRowsPerHead + row) * kMlaLatentDim + c]);
  }
};

void check_query_absorption() {
  const Case c;
  const MlaAbsorbParams p{c.wkv_b.data(), c.T, c.H};
  for (int version = 0; version < 3; ++version) {
    std::vector<float> q_abs(size_t(c.T * c.H * kMlaKeyDim), 42.0f);
    if (version == 0) {
      absorb_query_ref(p, c.q_nope.data(), q_abs.data());
    } else {
      ThreadPool pool(version);
      absorb_query(p, c.q_nope.data(), q_abs.data(), pool);
    }
    for (int64_t row = 0; row < c.T * c.H; ++row) {
      const int64_t h = row % c.H;
      for (int ch = 0; ch < kMlaLatentDim; ++ch) {
        double exact = 0, magnitude = 0;
        for (int d = 0; d < kMlaNopeDim; ++d) {
          const double term = double(c.q_nope[row * kMlaNopeDim + d]) * c.w(h, d, ch);
          exact += term;
          magnitude += std::fabs(term);
        }
        ASSERT_NEAR(q_abs[row * kMlaKeyDim + ch], exact, tolerance(exact, magnitude, kMlaNopeDim))
            << "version " << version << " row " << row << " c " << ch;
      }
      for (int r = kMlaLatentDim; r < kMlaKeyDim; ++r) {
        ASSERT_EQ(q_abs[row * kMlaKeyDim + r], 42.0f) << "the q_pe slot was written";
      }
    }
  }
}

void check_output_projection() {
  const Case c;
  const MlaAbsorbParams p{c.wkv_b.data(), c.T, c.H};
  for (int version = 0; version < 3; ++version) {
    std::vector<float> o(size_t(c.T * c.H * kMlaNopeDim));
    if (version == 0) {
      project_output_ref(p, c.o_lat.data(), o.data());
    } else {
      ThreadPool pool(version);
      project_output(p, c.o_lat.data(), o.data(), pool);
    }
    for (int64_t row = 0; row < c.T * c.H; ++row) {
      const int64_t h = row % c.H;
      for (int d = 0; d < kMlaNopeDim; ++d) {
        double exact = 0, magnitude = 0;
        for (int ch = 0; ch < kMlaLatentDim; ++ch) {
          const double term =
              double(c.o_lat[row * kMlaLatentDim + ch]) * c.w(h, kMlaNopeDim + d, ch);
          exact += term;
          magnitude += std::fabs(term);
        }
        ASSERT_NEAR(o[row * kMlaNopeDim + d], exact, tolerance(exact, magnitude, kMlaLatentDim))
            << "version " << version << " row " << row << " d " << d;
      }
    }
  }
}

TEST(MlaAbsorb, QueryAbsorptionMatchesExactSum) {
  test::for_each_simd_target(check_query_absorption);
}

TEST(MlaAbsorb, OutputProjectionMatchesExactSum) {
  test::for_each_simd_target(check_output_projection);
}

TEST(MlaAbsorb, RejectsBadShapes) {
  const MlaAbsorbParams p{nullptr, 1, 0};
  float x = 0;
  try {
    absorb_query_ref(p, &x, &x);
    FAIL();
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("bad shape tokens=1 heads=0"), std::string::npos);
  }
  ThreadPool pool(1);
  EXPECT_THROW(project_output(p, &x, &x, pool), Error);
}

}  // namespace
}  // namespace dsa

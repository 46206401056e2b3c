// MLA weight absorption: q_abs = q_nope · W_UK and o = o_lat · W_UVᵀ per head, reference and
// fast, against exact double sums, for V3.2's widths and smaller configs'. Tolerance: an fp32 sum
// of K terms is within γ_K Σ|terms| (γ_K = K 2^-24 / (1 - K 2^-24)); the bf16 output adds u = 2^-8
// relative.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/float_formats.h"
#include "ops/attention/mla_absorb.h"
#include "simd_targets.h"

namespace dsa {
namespace {

double tolerance(double exact, double magnitude, int terms) {
  const double gamma = terms * 0x1p-24 / (1 - terms * 0x1p-24);
  return gamma * magnitude + 0x1p-8 * (std::fabs(exact) + gamma * magnitude);
}

struct Shape {
  int64_t nope, v, latent, q_abs_stride;
};
// V3.2; the tiny preset (latent 128, rope 64, nope 32, v 32); latent 256, rope 32, nope 48, v 16;
// and widths that end in partial SIMD vectors (latent 140).
const Shape kShapes[] = {
    {128, 128, 512, 576}, {32, 32, 128, 192}, {48, 16, 256, 288}, {7, 3, 140, 150}};

struct Case {
  int64_t T = 3, H = 5;
  Shape shape;
  std::vector<bf16> wkv_b;
  std::vector<float> q_nope, o_lat;
  explicit Case(Shape s)
      : shape(s),
        wkv_b(size_t(H * (s.nope + s.v) * s.latent)),
        q_nope(size_t(T * H * s.nope)),
        o_lat(size_t(T * H * s.latent)) {
    std::mt19937 rng(3);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    for (bf16& w : wkv_b) w = float_to_bf16(0.05f * dist(rng));
    for (float& x : q_nope) x = round_to_bf16(dist(rng));
    for (float& x : o_lat) x = round_to_bf16(dist(rng));
  }
  MlaAbsorbParams params() const {
    return {wkv_b.data(), T, H, shape.nope, shape.v, shape.latent, shape.q_abs_stride};
  }
  float w(int64_t h, int64_t row, int64_t c) const {
    return bf16_to_float(wkv_b[(h * (shape.nope + shape.v) + row) * shape.latent + c]);
  }
};

void check_query_absorption(Shape shape) {
  const Case c(shape);
  const MlaAbsorbParams p = c.params();
  for (int version = 0; version < 3; ++version) {
    std::vector<float> q_abs(size_t(c.T * c.H * shape.q_abs_stride), 42.0f);
    if (version == 0) {
      absorb_query_ref(p, c.q_nope.data(), q_abs.data());
    } else {
      ThreadPool pool(version);
      absorb_query(p, c.q_nope.data(), q_abs.data(), pool);
    }
    for (int64_t row = 0; row < c.T * c.H; ++row) {
      const int64_t h = row % c.H;
      for (int64_t ch = 0; ch < shape.latent; ++ch) {
        double exact = 0, magnitude = 0;
        for (int64_t d = 0; d < shape.nope; ++d) {
          const double term = double(c.q_nope[row * shape.nope + d]) * c.w(h, d, ch);
          exact += term;
          magnitude += std::fabs(term);
        }
        ASSERT_NEAR(q_abs[row * shape.q_abs_stride + ch], exact,
                    tolerance(exact, magnitude, int(shape.nope)))
            << "latent " << shape.latent << " version " << version << " row " << row << " c " << ch;
      }
      for (int64_t r = shape.latent; r < shape.q_abs_stride; ++r) {
        ASSERT_EQ(q_abs[row * shape.q_abs_stride + r], 42.0f) << "the q_pe slot was written";
      }
    }
  }
}

void check_output_projection(Shape shape) {
  const Case c(shape);
  const MlaAbsorbParams p = c.params();
  for (int version = 0; version < 3; ++version) {
    std::vector<float> o(size_t(c.T * c.H * shape.v));
    if (version == 0) {
      project_output_ref(p, c.o_lat.data(), o.data());
    } else {
      ThreadPool pool(version);
      project_output(p, c.o_lat.data(), o.data(), pool);
    }
    for (int64_t row = 0; row < c.T * c.H; ++row) {
      const int64_t h = row % c.H;
      for (int64_t d = 0; d < shape.v; ++d) {
        double exact = 0, magnitude = 0;
        for (int64_t ch = 0; ch < shape.latent; ++ch) {
          const double term = double(c.o_lat[row * shape.latent + ch]) * c.w(h, shape.nope + d, ch);
          exact += term;
          magnitude += std::fabs(term);
        }
        ASSERT_NEAR(o[row * shape.v + d], exact, tolerance(exact, magnitude, int(shape.latent)))
            << "latent " << shape.latent << " version " << version << " row " << row << " d " << d;
      }
    }
  }
}

TEST(MlaAbsorb, QueryAbsorptionMatchesExactSum) {
  test::for_each_simd_target([] {
    for (const Shape& shape : kShapes) check_query_absorption(shape);
  });
}

TEST(MlaAbsorb, OutputProjectionMatchesExactSum) {
  test::for_each_simd_target([] {
    for (const Shape& shape : kShapes) check_output_projection(shape);
  });
}

TEST(MlaAbsorb, RejectsBadShapes) {
  const auto message = [](const MlaAbsorbParams& p) {
    float x = 0;
    ThreadPool pool(1);
    EXPECT_THROW(project_output(p, &x, &x, pool), Error);
    try {
      absorb_query_ref(p, &x, &x);
    } catch (const Error& error) {
      return std::string(error.what());
    }
    return std::string("accepted");
  };
  const bf16 w{};
  EXPECT_NE(message({&w, 1, 0, 128, 128, 512, 576}).find("bad shape tokens=1 heads=0"),
            std::string::npos);
  EXPECT_NE(message({&w, 1, 1, 128, 0, 512, 576})
                .find("nope_dim, v_dim and latent_dim must be positive, got 128, 0 and 512"),
            std::string::npos);
  EXPECT_NE(message({&w, 1, 1, 128, 128, 512, 500})
                .find("q_abs_stride 500 is narrower than latent_dim 512"),
            std::string::npos);
  EXPECT_NE(message({nullptr, 1, 1, 128, 128, 512, 576}).find("no wkv_b weight"),
            std::string::npos);
}

}  // namespace
}  // namespace dsa

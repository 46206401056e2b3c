#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "ops/rope/rope_train.h"
#include "simd_targets.h"

namespace dsa {
namespace {

constexpr double kU = 0x1p-24;  // fp32 unit roundoff

template <typename Real>
std::vector<Real> random_vector(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<Real> out(n);
  for (auto& v : out) v = Real(normal(rng));
  return out;
}

struct RopeCase {
  int rope_dim;
  RopeLayout layout;
  int64_t tokens, heads, offset, trailing, start_pos;
};

// MLA-like (interleaved, rotated part after an odd offset), indexer-like (halves, first dims),
// and a narrow table with offset > 0 in both layouts, the last one ending at the table's end.
const RopeCase kCases[] = {
    {64, RopeLayout::kInterleaved, 13, 3, 37, 3, 5},
    {64, RopeLayout::kHalves, 11, 1, 0, 64, 0},
    {16, RopeLayout::kInterleaved, 7, 2, 5, 0, 50},
    {16, RopeLayout::kHalves, 9, 5, 9, 2, 55},
};

const RopeTable& table_for(int rope_dim) {
  static const RopeTable wide(YarnRopeConfig{.rope_dim = 64, .max_seq_len = 64});
  static const RopeTable narrow(YarnRopeConfig{.rope_dim = 16, .max_seq_len = 64});
  return rope_dim == 64 ? wide : narrow;
}

template <typename Real>
RopeTrain<Real> params_for(const RopeCase& c, Real* x) {
  const RopeTable& table = table_for(c.rope_dim);
  return {.x = x,
          .tokens = c.tokens,
          .heads = c.heads,
          .row = c.offset + 2 * table.pairs() + c.trailing,
          .offset = c.offset,
          .start_pos = c.start_pos,
          .layout = c.layout,
          .table = &table};
}

template <typename Real>
size_t elements(const RopeTrain<Real>& p) {
  return size_t(p.tokens * p.heads * p.row);
}

// Calls body(element a, element b, cos, sin) for every rotated pair (indices into x).
template <typename Real, typename Body>
void for_each_pair(const RopeTrain<Real>& p, Body body) {
  const int pairs = p.table->pairs();
  for (int64_t t = 0; t < p.tokens; ++t) {
    for (int64_t h = 0; h < p.heads; ++h) {
      const size_t base = size_t((t * p.heads + h) * p.row + p.offset);
      for (int i = 0; i < pairs; ++i) {
        const bool interleaved = p.layout == RopeLayout::kInterleaved;
        const size_t a = base + size_t(interleaved ? 2 * i : i);
        const size_t b = base + size_t(interleaved ? 2 * i + 1 : i + pairs);
        body(a, b, double(p.table->cos(p.start_pos + t)[i]),
             double(p.table->sin(p.start_pos + t)[i]));
      }
    }
  }
}

// Elements outside [offset, offset + 2 pairs) of each row.
template <typename Real>
std::vector<bool> rotated_mask(const RopeTrain<Real>& p) {
  std::vector<bool> mask(elements(p), false);
  for_each_pair(p, [&](size_t a, size_t b, double, double) { mask[a] = mask[b] = true; });
  return mask;
}

TEST(RopeTrain, ForwardReferenceMatchesTheFormula) {
  for (const RopeCase& c : kCases) {
    SCOPED_TRACE(testing::Message()
                 << "rope_dim " << c.rope_dim << " halves " << (c.layout == RopeLayout::kHalves));
    const YarnRopeConfig config{.rope_dim = c.rope_dim, .max_seq_len = 64};
    const std::vector<float> freqs = yarn_rope_frequencies(config);
    const auto x0 = random_vector<double>(elements(params_for<double>(c, nullptr)), 1);
    std::vector<double> x = x0;
    const RopeTrain<double> p = params_for(c, x.data());
    rope_train_forward_reference(p);
    const std::vector<bool> mask = rotated_mask(p);
    for (size_t k = 0; k < x.size(); ++k) {
      if (!mask[k]) {
        ASSERT_EQ(x[k], x0[k]) << "element " << k << " is not rotated";
      }
    }
    // θ(t, i) = fp32(position · freq[i]) as the table builds it; cos and sin of it in long
    // double. The table holds them rounded to fp32 (< 1 ulp <= 2^-24 for |v| <= 1), so each
    // output may differ by 2^-24 (|a| + |b|) from the exact rotation, plus double rounding.
    const int pairs = c.rope_dim / 2;
    for (int64_t t = 0; t < c.tokens; ++t) {
      for (int64_t h = 0; h < c.heads; ++h) {
        const size_t base = size_t((t * c.heads + h) * p.row + c.offset);
        for (int i = 0; i < pairs; ++i) {
          const bool interleaved = c.layout == RopeLayout::kInterleaved;
          const size_t ia = base + size_t(interleaved ? 2 * i : i);
          const size_t ib = base + size_t(interleaved ? 2 * i + 1 : i + pairs);
          const long double angle = float(c.start_pos + t) * freqs[i];
          const long double co = std::cos(angle), si = std::sin(angle);
          const double a = x0[ia], b = x0[ib];
          const double tol = (kU + 0x1p-50) * (std::fabs(a) + std::fabs(b));
          ASSERT_NEAR(x[ia], double(a * co - b * si), tol) << "t " << t << " pair " << i;
          ASSERT_NEAR(x[ib], double(a * si + b * co), tol) << "t " << t << " pair " << i;
        }
      }
    }
  }
}

// L = Σ dy · rope(x) is linear in x, so central differences have no truncation error. Between
// the two evaluations only the perturbed pair's two outputs change (every other term is
// recomputed bit for bit, so its rounding cancels): their rounding, <= 4·2^-53 |dy| (|a| + |b|)
// ~ 1e-15, and the long double sum's (2^-64 S, S = Σ |dy y| ~ 1e4) over the step 2e-6 stay
// below 1e-9. A wrong sign or pairing is off by O(1).
TEST(RopeTrain, BackwardMatchesFiniteDifferences) {
  for (const RopeCase& c : kCases) {
    SCOPED_TRACE(testing::Message()
                 << "rope_dim " << c.rope_dim << " halves " << (c.layout == RopeLayout::kHalves));
    const size_t n = elements(params_for<double>(c, nullptr));
    std::vector<double> x = random_vector<double>(n, 2);
    const std::vector<double> dy = random_vector<double>(n, 3);
    std::vector<double> dx = dy, y(n);
    rope_backward_reference(params_for(c, dx.data()));
    const auto loss = [&] {
      y = x;
      rope_train_forward_reference(params_for(c, y.data()));
      long double sum = 0.0L;
      for (size_t k = 0; k < n; ++k) sum += (long double)dy[k] * y[k];
      return double(sum);
    };
    for (size_t k = 0; k < n; ++k) {
      const double saved = x[k];
      const double h = 1e-6 * std::max(1.0, std::fabs(saved));
      x[k] = saved + h;
      const double plus = loss();
      x[k] = saved - h;
      const double minus = loss();
      x[k] = saved;
      ASSERT_NEAR((plus - minus) / (2 * h), dx[k], 1e-8) << "element " << k;
    }
  }
}

// R(−θ) R(θ) = (c² + s²) I with the table's fp32 c, s: the round trip is off by
// |c² + s² − 1| (|a| + |b|) plus the roundings of the two rotations (4 per output in Real, each
// at most unit roundoff of |a| + |b|, c and s being <= 1).
template <typename Real>
void check_round_trip(const RopeCase& c, const std::vector<Real>& x0, const std::vector<Real>& x,
                      double unit) {
  const RopeTrain<Real> p = params_for(c, const_cast<Real*>(x.data()));
  const std::vector<bool> mask = rotated_mask(p);
  for_each_pair(p, [&](size_t a, size_t b, double co, double si) {
    const double tol = (std::fabs(co * co + si * si - 1.0) + 8 * unit) *
                       (std::fabs(double(x0[a])) + std::fabs(double(x0[b])));
    ASSERT_NEAR(x[a], x0[a], tol);
    ASSERT_NEAR(x[b], x0[b], tol);
  });
  for (size_t k = 0; k < x.size(); ++k) {
    if (!mask[k]) {
      ASSERT_EQ(x[k], x0[k]) << "element " << k;
    }
  }
}

TEST(RopeTrain, BackwardOfForwardIsTheIdentity) {
  ThreadPool pool(2);
  for (const RopeCase& c : kCases) {
    const size_t n = elements(params_for<double>(c, nullptr));
    const std::vector<double> x0 = random_vector<double>(n, 4);
    std::vector<double> x = x0;
    rope_train_forward_reference(params_for(c, x.data()));
    rope_backward_reference(params_for(c, x.data()));
    check_round_trip(c, x0, x, 0x1p-53);
    const std::vector<float> x0f = random_vector<float>(n, 5);
    std::vector<float> xf = x0f;
    rope_train_forward_reference(params_for(c, xf.data()));
    rope_backward_reference(params_for(c, xf.data()));
    check_round_trip(c, x0f, xf, kU);
    xf = x0f;
    rope_train_forward(params_for(c, xf.data()), pool);
    rope_backward(params_for(c, xf.data()), pool);
    check_round_trip(c, x0f, xf, kU);
  }
}

// Both sides compute each output from the same two fp32 products and one sum, but on targets
// with FMA the compiler may fuse one product into the sum: round(a c − round(b s)) instead of
// round(round(a c) − round(b s)), which differ by <= u |a c| + 2 u |result| <= 3 u (|a| + |b|).
TEST(RopeTrain, FastMatchesReference) {
  std::vector<RopeCase> cases(std::begin(kCases), std::end(kCases));
  cases.push_back({64, RopeLayout::kInterleaved, 64, 4, 128, 0, 0});  // many rows for the threads
  cases.push_back({64, RopeLayout::kHalves, 61, 3, 1, 63, 3});
  for (const RopeCase& c : cases) {
    SCOPED_TRACE(testing::Message() << "rope_dim " << c.rope_dim << " halves "
                                    << (c.layout == RopeLayout::kHalves) << " tokens " << c.tokens);
    const size_t n = elements(params_for<float>(c, nullptr));
    const std::vector<float> x0 = random_vector<float>(n, 6);
    for (const bool backward : {false, true}) {
      std::vector<float> ref = x0;
      if (backward) {
        rope_backward_reference(params_for(c, ref.data()));
      } else {
        rope_train_forward_reference(params_for(c, ref.data()));
      }
      std::vector<float> first;
      for (int threads : {1, 2, 3}) {
        ThreadPool pool(threads);
        test::for_each_simd_target([&] {
          std::vector<float> x = x0;
          const RopeTrainParams p = params_for(c, x.data());
          if (backward) {
            rope_backward(p, pool);
          } else {
            rope_train_forward(p, pool);
          }
          for_each_pair(p, [&](size_t a, size_t b, double, double) {
            const double tol = 3 * kU * (std::fabs(x0[a]) + std::fabs(x0[b]));
            ASSERT_NEAR(x[a], ref[a], tol) << "element " << a << (backward ? " backward" : "");
            ASSERT_NEAR(x[b], ref[b], tol) << "element " << b << (backward ? " backward" : "");
          });
          const std::vector<bool> mask = rotated_mask(p);
          for (size_t k = 0; k < n; ++k) {
            if (!mask[k]) {
              ASSERT_EQ(x[k], x0[k]) << "element " << k << " is not rotated";
            }
          }
        });
        // Determinism: rows are independent, so the best target gives the same bits for every
        // thread count and every run.
        for (int run = 0; run < 2; ++run) {
          std::vector<float> x = x0;
          const RopeTrainParams p = params_for(c, x.data());
          backward ? rope_backward(p, pool) : rope_train_forward(p, pool);
          if (first.empty()) first = x;
          for (size_t k = 0; k < n; ++k) ASSERT_EQ(x[k], first[k]) << "element " << k;
        }
      }
    }
  }
}

TEST(RopeTrain, BadParametersThrow) {
  const RopeTable& table = table_for(16);
  std::vector<float> x(4 * 20);
  ThreadPool pool(2);
  const RopeTrainParams good{
      .x = x.data(), .tokens = 4, .heads = 1, .row = 20, .offset = 4, .table = &table};
  EXPECT_NO_THROW(rope_train_forward(good, pool));
  EXPECT_NO_THROW(rope_backward_reference(good));
  auto p = good;
  p.offset = 5;  // 5 + 16 > 20
  EXPECT_THROW(validate(p), Error);
  EXPECT_THROW(rope_train_forward(p, pool), Error);
  p = good;
  p.offset = -1;
  EXPECT_THROW(rope_backward(p, pool), Error);
  p = good;
  p.start_pos = 61;  // 61 + 4 > 64 positions
  EXPECT_THROW(rope_train_forward_reference(p), Error);
  p = good;
  p.heads = 0;
  EXPECT_THROW(rope_backward(p, pool), Error);
  p = good;
  p.table = nullptr;
  EXPECT_THROW(rope_train_forward(p, pool), Error);
  p = good;
  p.x = nullptr;
  EXPECT_THROW(rope_backward_reference(p), Error);
  p = good;
  p.tokens = -1;
  EXPECT_THROW(validate(p), Error);
  try {
    p = good;
    p.row = 19;
    validate(p);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("row of 19"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace dsa

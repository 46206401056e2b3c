#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/error.h"
#include "ops/indexer/indexer.h"
#include "ops/indexer/indexer_scores_internal.h"
#include "simd_targets.h"

namespace dsa {
namespace {

constexpr int kDim = kIndexerHeadDim;
const double kUnit = std::ldexp(1.0, -24);  // fp32 unit roundoff

// Random fp8 codes as act_quant makes them: values up to +-448, never the NaN codes.
std::vector<fp8_e4m3> random_codes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 120.0f);
  std::vector<fp8_e4m3> out(n);
  for (auto& c : out) c = float_to_fp8(std::clamp(normal(rng), -448.0f, 448.0f));
  return out;
}

std::vector<float> random_floats(size_t n, uint32_t seed, float stddev) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> out(n);
  for (auto& v : out) v = normal(rng);
  return out;
}

std::vector<bf16> random_bf16(size_t n, uint32_t seed, float stddev) {
  std::vector<bf16> out(n);
  const std::vector<float> f = random_floats(n, seed, stddev);
  for (size_t i = 0; i < n; ++i) out[i] = float_to_bf16(f[i]);
  return out;
}

struct ScoresCase {
  int64_t tokens, heads, keys, start_pos;
  std::vector<fp8_e4m3> q, k;
  std::vector<float> weights, key_scales;

  ScoresCase(int64_t t, int64_t h, int64_t s, int64_t p, uint32_t seed)
      : tokens(t), heads(h), keys(s), start_pos(p) {
    q = random_codes(size_t(t * h * kDim), seed);
    k = random_codes(size_t(s * kDim), seed + 1);
    weights = random_floats(size_t(t * h), seed + 2, 1e-4f);  // signed, as weights_proj gives
    key_scales.resize(size_t(s));
    for (int64_t i = 0; i < s; ++i) key_scales[size_t(i)] = std::ldexp(1.0f, -6 - int(i % 5));
  }
  IndexerScoresParams params(float* scores) const {
    return {.q_codes = q.data(),
            .head_weights = weights.data(),
            .key_codes = k.data(),
            .key_scales = key_scales.data(),
            .scores = scores,
            .tokens = tokens,
            .heads = heads,
            .keys = keys,
            .start_pos = start_pos};
  }
};

// Exact score in double, and the bound on how far an fp32 evaluation in any summation order can
// be from it: each of the 128-term dots is within 127 u sum|q k| of the exact (the products are
// exact: fp8 has 4-bit significands), ReLU does not grow an error, and the H-term head sum adds
// H u sum|w ReLU(l)| (products with w add u each); the power-of-two key scale is exact.
struct ExactScore {
  double value, error_bound;
};
ExactScore exact_score(const ScoresCase& c, int64_t t, int64_t s) {
  double value = 0.0, bound = 0.0;
  for (int64_t h = 0; h < c.heads; ++h) {
    double dot = 0.0, abs_dot = 0.0;
    for (int d = 0; d < kDim; ++d) {
      const double p = double(fp8_to_float(c.q[size_t((t * c.heads + h) * kDim + d)])) *
                       fp8_to_float(c.k[size_t(s * kDim + d)]);
      dot += p;
      abs_dot += std::fabs(p);
    }
    const double w = c.weights[size_t(t * c.heads + h)];
    value += std::max(dot, 0.0) * w;
    bound +=
        std::fabs(w) * (128 * kUnit * abs_dot + (double(c.heads) + 2) * kUnit * std::fabs(dot));
  }
  const double scale = c.key_scales[size_t(s)];
  return {value * scale, bound * scale};
}

TEST(IndexerScores, ReferenceMatchesExactFormulaAndMasksTheFuture) {
  const ScoresCase c(3, 8, 10, 5, 1);  // rows at positions 5, 6, 7 of a 10-key cache
  std::vector<float> scores(size_t(c.tokens * c.keys));
  indexer_scores_reference(c.params(scores.data()));
  for (int64_t t = 0; t < c.tokens; ++t) {
    for (int64_t s = 0; s < c.keys; ++s) {
      const float got = scores[size_t(t * c.keys + s)];
      if (s > c.start_pos + t) {
        EXPECT_EQ(got, -std::numeric_limits<float>::infinity()) << t << " " << s;
        continue;
      }
      const ExactScore e = exact_score(c, t, s);
      EXPECT_NEAR(got, e.value, e.error_bound) << t << " " << s;
    }
  }
}

TEST(IndexerScores, OrderIsReluThenWeightThenHeadSumThenKeyScale) {
  // One key, two heads: logits +2 and -3 (the second is cut by ReLU before its weight), weights
  // 0.5 and 100, key scale 4: I = (2 * 0.5 + 0 * 100) * 4 = 4.
  std::vector<fp8_e4m3> q(2 * kDim, float_to_fp8(0.0f)), k(kDim, float_to_fp8(0.0f));
  q[0] = float_to_fp8(2.0f);
  q[kDim] = float_to_fp8(-3.0f);
  k[0] = float_to_fp8(1.0f);
  const std::vector<float> weights = {0.5f, 100.0f}, key_scales = {4.0f};
  float score = 0.0f;
  IndexerScoresParams params{.q_codes = q.data(),
                             .head_weights = weights.data(),
                             .key_codes = k.data(),
                             .key_scales = key_scales.data(),
                             .scores = &score,
                             .tokens = 1,
                             .heads = 2,
                             .keys = 1,
                             .start_pos = 0};
  indexer_scores_reference(params);
  EXPECT_EQ(score, 4.0f);
  ThreadPool pool(1);
  for (bool allow_avx512bf16 : {true, false}) {
    params.allow_avx512bf16 = allow_avx512bf16;
    score = 0.0f;
    indexer_scores(params, pool);
    EXPECT_EQ(score, 4.0f) << "allow_avx512bf16 " << allow_avx512bf16;
  }
}

// Calls body(path, run) once per fast path this machine has, where run(params) computes the
// scores: the AVX512-BF16 kernel (directly, so a broken dispatch cannot hide it, and through
// indexer_scores) where the CPU has it, and the Highway fallback on every SIMD target.
template <class Body>
void for_each_scores_path(ThreadPool& pool, Body body) {
  if (detect_cpu_features().avx512bf16) {
    body("avx512bf16 kernel", [&](const IndexerScoresParams& p) {
      indexer_internal::score_items_avx512bf16(p, 0, p.tokens * indexer_internal::key_blocks(p),
                                               indexer_internal::next_scores_call());
    });
    body("avx512bf16 dispatched", [&](const IndexerScoresParams& p) { indexer_scores(p, pool); });
  } else {
    std::printf("note: this CPU has no AVX512-BF16; only the Highway path is tested\n");
  }
  test::for_each_simd_target([&] {
    body("highway", [&](IndexerScoresParams p) {
      p.allow_avx512bf16 = false;
      indexer_scores(p, pool);
    });
  });
}

TEST(IndexerScores, FastMatchesReference) {
  // Both are fp32 evaluations of the same exact products; each is within the bound of
  // exact_score, so they are within twice that bound of each other.
  struct Shape {
    int64_t tokens, heads, keys, start_pos;
  };
  const Shape shapes[] = {
      {1, 64, 777, 776},  // decode: one query, 64 heads, every key valid
      {1, 64, 1, 0},      // a single key
      {5, 64, 261, 254},  // chunk crossing the 256-key block boundary
      {4, 16, 9, 5},      // keys not a multiple of the key tile; one 16-lane head vector
      {3, 20, 40, 37},    // heads not a multiple of the vector width
      {2, 1, 5, 3},       // one head
      {6, 4, 6, 0},       // prefill from 0: causal triangle
      {2, 8, 300, 100},   // keys beyond the causal window: -inf
      {1, 32, 515, 514},  // two head vectors; two full blocks and 3 keys
      {2, 48, 70, 68},    // three head vectors (the remainder group)
      {2, 80, 13, 11},    // a full group of four head vectors plus one
      {3, 17, 258, 255},  // 16 + 1 heads; rows end on both sides of a block boundary
      {6, 32, 300, 270},  // chunked prefill: 6 rows from position 270 over two key blocks
      {1, 8, 300, 299},   // 8 heads: 16-key tiles, then 8-, 4- and 1-key tiles for the rest
      {3, 24, 61, 58},    // two head vectors: 8-key tiles, then 4- and 1-key tiles
      {2, 16, 31, 29},    // exactly one head vector; fewer keys than two 16-key tiles
  };
  uint32_t seed = 10;
  for (const Shape& shape : shapes) {
    const ScoresCase c(shape.tokens, shape.heads, shape.keys, shape.start_pos, seed++);
    std::vector<float> ref(size_t(c.tokens * c.keys));
    indexer_scores_reference(c.params(ref.data()));
    std::vector<double> bounds(ref.size(), 0.0);
    for (int64_t t = 0; t < c.tokens; ++t) {
      for (int64_t s = 0; s <= std::min(c.keys - 1, c.start_pos + t); ++s) {
        bounds[size_t(t * c.keys + s)] = 2 * exact_score(c, t, s).error_bound;
      }
    }
    for (int threads : {1, 2}) {
      ThreadPool pool(threads);
      for_each_scores_path(pool, [&](const char* path, auto run) {
        std::vector<float> fast(ref.size(), 123.0f);
        run(c.params(fast.data()));
        for (size_t i = 0; i < ref.size(); ++i) {
          if (std::isinf(ref[i])) {
            ASSERT_EQ(fast[i], ref[i]) << "masked element " << i << " path " << path;
          } else {
            ASSERT_NEAR(fast[i], ref[i], bounds[i])
                << "element " << i << " of T=" << c.tokens << " H=" << c.heads << " S=" << c.keys
                << " start " << c.start_pos << " threads " << threads << " path " << path;
          }
        }
      });
    }
  }
}

// Each thread keeps the query panel it converted for the rest of one call. A later call must
// convert again even when its query codes sit in the same buffer (decode reuses its buffers) and
// it scores the same row.
TEST(IndexerScores, EachCallConvertsItsOwnQuery) {
  ScoresCase c(1, 64, 777, 776, 40);
  const std::vector<fp8_e4m3> second_query = random_codes(c.q.size(), 41);
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    for_each_scores_path(pool, [&](const char* path, auto run) {
      for (int call = 0; call < 2; ++call) {
        if (call == 1) std::copy(second_query.begin(), second_query.end(), c.q.begin());
        std::vector<float> ref(size_t(c.keys)), fast(size_t(c.keys), 123.0f);
        indexer_scores_reference(c.params(ref.data()));
        run(c.params(fast.data()));
        for (int64_t s = 0; s < c.keys; ++s) {
          ASSERT_NEAR(fast[size_t(s)], ref[size_t(s)], 2 * exact_score(c, 0, s).error_bound)
              << "key " << s << ", call " << call << ", path " << path << ", threads " << threads;
        }
      }
      c.q = random_codes(c.q.size(), 40);  // the first query again for the next path
    });
  }
}

TEST(IndexerScores, FastIsExactOnEveryFp8Code) {
  // Every non-NaN fp8 value (subnormals and +-448 included) as a key and as a query value, with a
  // dot that has a single nonzero product by 1.0 and heads +q, -q weighted +1, -1: the score is
  // ReLU(v) - ReLU(-v) = v exactly in any summation order, so a conversion error shows up as is.
  std::vector<uint8_t> codes;
  for (int bits = 0; bits < 256; ++bits) {
    if ((bits & 0x7F) != 0x7F) codes.push_back(uint8_t(bits));
  }
  const int64_t n = int64_t(codes.size());
  const fp8_e4m3 one = float_to_fp8(1.0f), zero{0};
  const std::vector<float> unit_scales(size_t(n), 1.0f);

  // Keys: key s holds code s at dim s % 128; the query is all ones (head 0) and all minus ones.
  std::vector<fp8_e4m3> keys(size_t(n * kDim), zero), ones_q(2 * kDim, one);
  for (int d = 0; d < kDim; ++d) ones_q[kDim + d] = float_to_fp8(-1.0f);
  for (int64_t s = 0; s < n; ++s) keys[size_t(s * kDim + s % kDim)] = fp8_e4m3{codes[size_t(s)]};
  const std::vector<float> plus_minus = {1.0f, -1.0f};
  std::vector<float> key_scores(codes.size());
  const IndexerScoresParams key_params{.q_codes = ones_q.data(),
                                       .head_weights = plus_minus.data(),
                                       .key_codes = keys.data(),
                                       .key_scales = unit_scales.data(),
                                       .scores = key_scores.data(),
                                       .tokens = 1,
                                       .heads = 2,
                                       .keys = n,
                                       .start_pos = n - 1};

  // Queries: row t holds code t at dim t % 128 in head 0 and its negation in head 1; every key
  // is all ones, so row t scores its value against each of the keys it sees.
  std::vector<fp8_e4m3> queries(size_t(n * 2 * kDim), zero), ones_k(size_t(n * kDim), one);
  std::vector<float> row_weights(size_t(2 * n));
  for (int64_t t = 0; t < n; ++t) {
    queries[size_t(t * 2 * kDim + t % kDim)] = fp8_e4m3{codes[size_t(t)]};
    queries[size_t(t * 2 * kDim + kDim + t % kDim)] = fp8_e4m3{uint8_t(codes[size_t(t)] ^ 0x80)};
    row_weights[size_t(2 * t)] = 1.0f;
    row_weights[size_t(2 * t + 1)] = -1.0f;
  }
  std::vector<float> query_scores(codes.size() * codes.size());
  const IndexerScoresParams query_params{.q_codes = queries.data(),
                                         .head_weights = row_weights.data(),
                                         .key_codes = ones_k.data(),
                                         .key_scales = unit_scales.data(),
                                         .scores = query_scores.data(),
                                         .tokens = n,
                                         .heads = 2,
                                         .keys = n,
                                         .start_pos = 0};

  ThreadPool pool(2);
  for_each_scores_path(pool, [&](const char* path, auto run) {
    run(key_params);
    for (int64_t s = 0; s < n; ++s) {
      ASSERT_EQ(key_scores[size_t(s)], fp8_to_float(fp8_e4m3{codes[size_t(s)]}))
          << "key code " << int(codes[size_t(s)]) << " path " << path;
    }
    run(query_params);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t s = 0; s <= t; ++s) {
        ASSERT_EQ(query_scores[size_t(t * n + s)], fp8_to_float(fp8_e4m3{codes[size_t(t)]}))
            << "query code " << int(codes[size_t(t)]) << " key " << s << " path " << path;
      }
    }
  });
}

TEST(IndexerScores, RejectsACacheShorterThanTheQueries) {
  const ScoresCase c(4, 2, 6, 3, 1);
  std::vector<float> scores(24);
  ThreadPool pool(1);
  try {
    indexer_scores(c.params(scores.data()), pool);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "query positions [3, 7) need keys up to 7, but the cache holds 6"),
              std::string::npos)
        << e.what();
  }
}

// ---- q/k pipelines --------------------------------------------------------------------------

// RoPE (halves, on the first 2 * table.pairs() dims) then Hadamard-128, in double: what the
// pipelines compute before their bf16 roundings and the FP8 quantization.
std::vector<double> rope_hadamard(const double* x, const RopeTable& table, int64_t position) {
  double rotated[kDim];
  for (int d = 0; d < kDim; ++d) rotated[d] = x[d];
  const int pairs = table.pairs();
  for (int i = 0; i < pairs; ++i) {
    const double c = table.cos(position)[i], s = table.sin(position)[i];
    rotated[i] = x[i] * c - x[i + pairs] * s;
    rotated[i + pairs] = x[i] * s + x[i + pairs] * c;
  }
  std::vector<double> out(kDim, 0.0);
  for (int i = 0; i < kDim; ++i) {
    for (int j = 0; j < kDim; ++j) {
      out[size_t(i)] += (std::popcount(unsigned(i & j)) % 2 ? -1.0 : 1.0) * rotated[j];
    }
    out[size_t(i)] /= std::sqrt(128.0);
  }
  return out;
}

// Dequantized code vs. the double pipeline: the FP8 rounding (half a step: 2^-4 relative, or
// 2^-10 * scale among subnormals), the bf16 rounding of the Hadamard output (2^-8 relative),
// and up to two earlier bf16 roundings, each moving every output by at most 2^-8 ||v||_2 after
// the orthonormal rotations.
void expect_quantized_close(const fp8_e4m3* codes, float scale, const std::vector<double>& v,
                            int rounding_steps, const std::string& where) {
  double norm = 0.0;
  for (double x : v) norm += x * x;
  norm = std::sqrt(norm);
  EXPECT_EQ(std::bit_cast<uint32_t>(scale) & 0x7FFFFFu, 0u) << where << ": scale not a power of 2";
  for (int d = 0; d < kDim; ++d) {
    const double got = double(fp8_to_float(codes[d])) * scale;
    const double tol = std::ldexp(std::fabs(v[size_t(d)]), -4) + std::ldexp(double(scale), -10) +
                       std::ldexp(std::fabs(v[size_t(d)]), -8) +
                       rounding_steps * std::ldexp(norm, -8);
    ASSERT_NEAR(got, v[size_t(d)], tol) << where << " dim " << d;
  }
}

YarnRopeConfig rope_config(int rope_dim) {
  YarnRopeConfig c;
  c.rope_dim = rope_dim;
  c.max_seq_len = 8192;
  return c;
}

// The pipelines with V3.2's 64-dim RoPE and a 32-dim one (qk_rope_head_dim of a smaller config).
class IndexerPipelines : public ::testing::TestWithParam<int> {
 protected:
  RopeTable table_{rope_config(GetParam())};
};

INSTANTIATE_TEST_SUITE_P(RopeDims, IndexerPipelines, ::testing::Values(64, 32),
                         [](const auto& test_info) {
                           return "rope" + std::to_string(test_info.param);
                         });

TEST_P(IndexerPipelines, KeysAreNormalizedRotatedAndQuantizedIntoTheCache) {
  const int64_t tokens = 3, start_pos = 4094, capacity = 4100;
  const std::vector<bf16> k = random_bf16(size_t(tokens * kDim), 1, 2.0f);
  std::vector<float> norm_weight = random_floats(kDim, 2, 0.3f);  // around 1, as trained
  const std::vector<float> norm_bias = random_floats(kDim, 3, 0.1f);
  for (auto& w : norm_weight) w += 1.0f;
  std::vector<fp8_e4m3> codes(size_t(capacity * kDim), fp8_e4m3{0x55});
  std::vector<float> scales(size_t(capacity), -1.0f);
  IndexerKeyParams params{.k = k.data(),
                          .norm_weight = norm_weight.data(),
                          .norm_bias = norm_bias.data(),
                          .rope = &table_,
                          .tokens = tokens,
                          .start_pos = start_pos,
                          .key_codes = codes.data(),
                          .key_scales = scales.data(),
                          .cache_capacity = capacity};
  indexer_keys_reference(params);
  for (int64_t t = 0; t < tokens; ++t) {
    double x[kDim], mean = 0.0, variance = 0.0;
    for (int d = 0; d < kDim; ++d) mean += bf16_to_float(k[size_t(t * kDim + d)]) / kDim;
    for (int d = 0; d < kDim; ++d)
      variance += std::pow(bf16_to_float(k[size_t(t * kDim + d)]) - mean, 2) / kDim;
    for (int d = 0; d < kDim; ++d) {
      x[d] = (bf16_to_float(k[size_t(t * kDim + d)]) - mean) / std::sqrt(variance + 1e-6) *
                 norm_weight[size_t(d)] +
             norm_bias[size_t(d)];
    }
    const int64_t slot = start_pos + t;
    expect_quantized_close(codes.data() + slot * kDim, scales[size_t(slot)],
                           rope_hadamard(x, table_, slot), 2, "key " + std::to_string(t));
  }
  // Rows outside [start_pos, start_pos + tokens) are untouched.
  EXPECT_EQ(scales[size_t(start_pos - 1)], -1.0f);
  EXPECT_EQ(scales[size_t(capacity - 1)], -1.0f);
  EXPECT_EQ(codes[size_t((start_pos - 1) * kDim)].bits, 0x55);

  // Fast: same codes up to one fp8 step where a bf16 intermediate rounded the other way.
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    test::for_each_simd_target([&] {
      std::vector<fp8_e4m3> fast_codes(codes.size(), fp8_e4m3{0x55});
      std::vector<float> fast_scales(scales.size(), -1.0f);
      params.key_codes = fast_codes.data();
      params.key_scales = fast_scales.data();
      indexer_keys(params, pool);
      for (int64_t slot = start_pos; slot < start_pos + tokens; ++slot) {
        for (int d = 0; d < kDim; ++d) {
          const double r = fp8_to_float(codes[size_t(slot * kDim + d)]) * scales[size_t(slot)];
          const double f =
              fp8_to_float(fast_codes[size_t(slot * kDim + d)]) * fast_scales[size_t(slot)];
          ASSERT_NEAR(f, r, std::ldexp(std::fabs(r), -3) + std::ldexp(scales[size_t(slot)], -8))
              << slot << " " << d;
        }
      }
      EXPECT_EQ(fast_scales[size_t(start_pos - 1)], -1.0f);
    });
  }
}

TEST_P(IndexerPipelines, QueriesAreRotatedQuantizedAndWeightsFoldTheScales) {
  const int64_t tokens = 2, heads = 64, start_pos = 300;
  const std::vector<bf16> q = random_bf16(size_t(tokens * heads * kDim), 4, 1.5f);
  const std::vector<float> weights_proj = random_floats(size_t(tokens * heads), 5, 3.0f);
  std::vector<fp8_e4m3> codes(q.size());
  std::vector<float> head_weights(size_t(tokens * heads));
  IndexerQueryParams params{.q = q.data(),
                            .weights_proj = weights_proj.data(),
                            .rope = &table_,
                            .tokens = tokens,
                            .heads = heads,
                            .start_pos = start_pos,
                            .q_codes = codes.data(),
                            .head_weights = head_weights.data()};
  indexer_queries_reference(params);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t r = t * heads + h;
      double x[kDim];
      for (int d = 0; d < kDim; ++d) x[d] = bf16_to_float(q[size_t(r * kDim + d)]);
      const std::vector<double> v = rope_hadamard(x, table_, start_pos + t);
      // head_weight = weights_proj * 64^-0.5 * q_scale * 128^-0.5 with q_scale = 2^ceil(log2(
      // amax / 448)): recover q_scale and check it is that power of two (amax within bf16
      // rounding of the double value: 2^-7 relative either side).
      const double q_scale = head_weights[size_t(r)] /
                             (weights_proj[size_t(r)] * 0.125 * double(kIndexerSoftmaxScale));
      // The fp32 product with 128^-0.5 rounds, so the recovered value is a power of two only to
      // within 2^-23 relative.
      const float q_scale_f = float(std::exp2(std::round(std::log2(q_scale))));
      ASSERT_NEAR(q_scale, q_scale_f, 1e-6 * q_scale) << r;
      double amax = 0.0;
      for (double y : v) amax = std::max(amax, std::fabs(y));
      EXPECT_GE(q_scale * 448.0 * (1 + 1.0 / 64), amax) << r;
      EXPECT_LT(q_scale * 224.0 * (1 - 1.0 / 64), amax) << r;
      expect_quantized_close(codes.data() + r * kDim, q_scale_f, v, 1,
                             "query " + std::to_string(r));
    }
  }
  ThreadPool pool(2);
  test::for_each_simd_target([&] {
    std::vector<fp8_e4m3> fast_codes(codes.size());
    std::vector<float> fast_weights(head_weights.size());
    params.q_codes = fast_codes.data();
    params.head_weights = fast_weights.data();
    indexer_queries(params, pool);
    for (size_t r = 0; r < head_weights.size(); ++r) {
      // Equal unless a bf16 intermediate moved amax across a power of two (then x2 or /2).
      const float ratio = fast_weights[r] / head_weights[r];
      ASSERT_TRUE(ratio == 1.0f || ratio == 2.0f || ratio == 0.5f) << r << " ratio " << ratio;
    }
  });
}

class IndexerValidation : public ::testing::Test {
 protected:
  YarnRopeConfig config_ = rope_config(64);
  RopeTable table_{config_};
};

TEST_F(IndexerValidation, RejectsKeysBeyondTheCache) {
  std::vector<bf16> k(kDim);
  std::vector<float> w(kDim), scales(4);
  std::vector<fp8_e4m3> codes(4 * kDim);
  IndexerKeyParams params{.k = k.data(),
                          .norm_weight = w.data(),
                          .norm_bias = w.data(),
                          .rope = &table_,
                          .tokens = 1,
                          .start_pos = 4,
                          .key_codes = codes.data(),
                          .key_scales = scales.data(),
                          .cache_capacity = 4};
  try {
    indexer_keys_reference(params);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("positions [4, 5) exceed the key cache capacity 4"),
              std::string::npos)
        << e.what();
  }
}

TEST_F(IndexerValidation, RejectsARopeWiderThanTheHeadAndNoHeads) {
  YarnRopeConfig wide = config_;
  wide.rope_dim = 130;
  wide.max_seq_len = 16;
  const RopeTable wide_table(wide);
  std::vector<bf16> q(kDim);
  std::vector<float> w(1);
  std::vector<fp8_e4m3> codes(kDim);
  IndexerQueryParams params{.q = q.data(),
                            .weights_proj = w.data(),
                            .rope = &wide_table,
                            .tokens = 1,
                            .heads = 1,
                            .start_pos = 0,
                            .q_codes = codes.data(),
                            .head_weights = w.data()};
  ThreadPool pool(1);
  try {
    indexer_queries(params, pool);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "indexer_queries: the RoPE table must rotate 2 to 128 dims (within the indexer "
                  "head), got 130"),
              std::string::npos)
        << e.what();
  }
  params.rope = &table_;
  params.heads = 0;
  try {
    indexer_queries_reference(params);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("heads > 0; got 1, 0, 0"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace dsa

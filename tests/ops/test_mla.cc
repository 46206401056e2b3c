// Absorbed-mode (MQA) MLA over the latent cache: sparse rows (decode T = 1 and prefill T > 1)
// and dense decode, reference and fast, both checked against an exact (double) attention written
// here from the definition, over both cache formats and 1 and 2 threads.
//
// Tolerances. Let u = 2^-8 (bf16 unit roundoff). The reference rounds q·latent, q_pe·rope, their
// sum and the scaled score to bf16, so a scaled score is off by at most
//   Δ_j = scale * 3u * (|nope_j| + |pe_j|) + u * |scaled_j|        (rounding of the last step)
// A shift of every score by at most Δ moves each probability by a factor within e^{±2Δ}, and the
// bf16 rounding of p adds u, so |Δp_j| <= p_j (e^{2Δ}(1 + u) - 1) and
//   |out_ref - out| <= (e^{2Δ}(1 + u) - 1) * max|v| + u * |out| (output rounding),
//   |lse_ref - lse| <= Δ + u (the bf16 softmax inputs).
// The fast version keeps fp32: Δ_fast = scale * 576 * 2^-24 * Σ|q k| (fp32 dot bound) plus the
// Highway exp's error (a few fp32 ulps, covered by doubling), and rounds only the output.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/float_formats.h"
#include "ops/mla.h"
#include "ops/mla_scores_avx512bf16.h"
#include "simd_targets.h"

namespace dsa {
namespace {

constexpr float kU = 1.0f / 256;  // bf16 unit roundoff (8 significant bits)

struct Cache {
  LatentCacheFormat format;
  std::vector<std::byte> bytes;
  std::vector<float> keys;  // unpacked [n, 576], what both versions compute with
  LatentCacheView view() const {
    return {format, bytes.data(), int64_t(bytes.size() / latent_token_bytes(format))};
  }
};

Cache make_cache(LatentCacheFormat format, int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  Cache cache{format, std::vector<std::byte>(size_t(n) * latent_token_bytes(format)),
              std::vector<float>(size_t(n) * kMlaKeyDim)};
  std::vector<float> latent(kMlaLatentDim), rope(kMlaRopeDim);
  for (int64_t j = 0; j < n; ++j) {
    for (float& x : latent) x = round_to_bf16(dist(rng) * (1.0f + float(j % 5)));
    for (float& x : rope) x = round_to_bf16(dist(rng));
    pack_latent_token(latent, rope, format, ScaleFormat::kUe8m0,
                      cache.bytes.data() + j * latent_token_bytes(format));
    unpack_latent_token(cache.view().token(j), format,
                        std::span<float>(cache.keys.data() + j * kMlaKeyDim, kMlaKeyDim));
  }
  return cache;
}

std::vector<float> make_queries(int64_t rows, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> q(size_t(rows) * kMlaKeyDim);
  for (float& x : q) x = round_to_bf16(dist(rng));
  return q;
}

// Exact attention of one head over `ids` (-1 skipped), plus the error bounds of both versions.
struct Expected {
  std::vector<double> out;
  double lse;
  double ref_score_error;   // Δ of the reference
  double fast_score_error;  // Δ_fast
  double max_abs_value;
};

Expected exact_head(const float* q, const Cache& cache, const std::vector<int32_t>& ids,
                    float scale) {
  Expected e{std::vector<double>(kMlaLatentDim, 0.0), std::numeric_limits<double>::infinity(), 0, 0,
             0};
  std::vector<double> scores;
  std::vector<const float*> keys;
  for (int32_t id : ids) {
    if (id < 0) continue;
    const float* key = &cache.keys[size_t(id) * kMlaKeyDim];
    double nope = 0, pe = 0, magnitude = 0;
    for (int c = 0; c < kMlaLatentDim; ++c) nope += double(q[c]) * key[c];
    for (int c = kMlaLatentDim; c < kMlaKeyDim; ++c) pe += double(q[c]) * key[c];
    for (int c = 0; c < kMlaKeyDim; ++c) magnitude += std::fabs(double(q[c]) * key[c]);
    const double scaled = (nope + pe) * scale;
    scores.push_back(scaled);
    keys.push_back(key);
    e.ref_score_error =
        std::max(e.ref_score_error,
                 scale * 3 * kU * (std::fabs(nope) + std::fabs(pe)) + kU * std::fabs(scaled));
    e.fast_score_error = std::max(e.fast_score_error, scale * kMlaKeyDim * 0x1p-24 * magnitude);
    for (int c = 0; c < kMlaLatentDim; ++c)
      e.max_abs_value = std::max(e.max_abs_value, std::fabs(double(key[c])));
  }
  if (scores.empty()) return e;
  double max_score = -std::numeric_limits<double>::infinity();
  for (double s : scores) max_score = std::max(max_score, s);
  double sum = 0;
  for (double s : scores) sum += std::exp(s - max_score);
  for (size_t j = 0; j < scores.size(); ++j) {
    const double p = std::exp(scores[j] - max_score) / sum;
    for (int c = 0; c < kMlaLatentDim; ++c) e.out[c] += p * keys[j][c];
  }
  e.lse = max_score + std::log(sum);
  return e;
}

// Checks out [H, 512] and lse [H] of one query row against the exact attention.
void expect_row_close(const float* out, const float* lse, const float* q, int64_t heads,
                      const Cache& cache, const std::vector<int32_t>& ids, float scale,
                      bool reference, const std::string& what) {
  for (int64_t h = 0; h < heads; ++h) {
    const Expected e = exact_head(q + h * kMlaKeyDim, cache, ids, scale);
    const double delta = reference ? e.ref_score_error : 2 * e.fast_score_error + 1e-6;
    const double p_error = std::exp(2 * delta) * (1 + (reference ? kU : 0)) - 1;
    if (std::isinf(e.lse)) {
      EXPECT_TRUE(std::isinf(lse[h]) && lse[h] > 0) << what << " head " << h << ": lse " << lse[h];
    } else {
      EXPECT_NEAR(lse[h], e.lse, delta + kU * std::fabs(e.lse)) << what << " head " << h;
    }
    for (int c = 0; c < kMlaLatentDim; ++c) {
      const double tolerance = p_error * e.max_abs_value + kU * std::fabs(e.out[c]) + 1e-6;
      ASSERT_NEAR(out[h * kMlaLatentDim + c], e.out[c], tolerance)
          << what << " head " << h << " dim " << c;
    }
  }
}

// Versions compared with the exact attention: 0 = reference; 1, 2 = fast on 1 and 2 threads with
// the AVX512-BF16 scores where the CPU has them; 3, 4 = the same with the Highway fp32 scores.
constexpr int kVersions = 5;
int threads_of(int version) { return version % 2 ? 1 : 2; }
bool allows_avx512bf16(int version) { return version <= 2; }

struct SparseCase {
  int64_t heads;
  std::vector<std::vector<int32_t>> rows;  // one index list per query, all of length topk
};

void run_sparse_case(const SparseCase& test, LatentCacheFormat format, int64_t cache_tokens,
                     const std::string& name) {
  const Cache cache = make_cache(format, cache_tokens, 11);
  const int64_t T = int64_t(test.rows.size());
  const int64_t topk = int64_t(test.rows[0].size());
  const std::vector<float> q = make_queries(T * test.heads, 12);
  std::vector<int32_t> indices;
  for (const auto& row : test.rows) indices.insert(indices.end(), row.begin(), row.end());
  SparseMlaParams p;
  p.q = q.data();
  p.cache = cache.view();
  p.indices = indices.data();
  p.num_queries = T;
  p.num_heads = test.heads;
  p.topk = topk;
  p.softmax_scale = mla_softmax_scale();
  for (int version = 0; version < kVersions; ++version) {
    std::vector<float> out(size_t(T * test.heads * kMlaLatentDim), -7.0f),
        lse(size_t(T * test.heads));
    p.out = out.data();
    p.lse = lse.data();
    if (version == 0) {
      sparse_mla_ref(p);
    } else {
      ThreadPool pool(threads_of(version));
      p.allow_avx512bf16 = allows_avx512bf16(version);
      sparse_mla(p, pool);
    }
    for (int64_t t = 0; t < T; ++t) {
      expect_row_close(out.data() + t * test.heads * kMlaLatentDim, lse.data() + t * test.heads,
                       q.data() + t * test.heads * kMlaKeyDim, test.heads, cache, test.rows[t],
                       p.softmax_scale, version == 0,
                       name + " version " + std::to_string(version) + " row " + std::to_string(t));
    }
  }
}

std::vector<int32_t> range_indices(int32_t begin, int32_t end, int32_t step = 1) {
  std::vector<int32_t> ids;
  for (int32_t i = begin; i < end; i += step) ids.push_back(i);
  return ids;
}

class SparseMla : public ::testing::TestWithParam<LatentCacheFormat> {};

TEST_P(SparseMla, DecodeAroundChunkAndHeadBlockSizes) {
  // Key counts around the 64-key chunk and the 4-key score block; head counts around 4.
  for (int64_t heads : {1, 3, 4, 5, 8}) {
    for (int32_t keys : {1, 3, 4, 63, 64, 65, 130}) {
      run_sparse_case({heads, {range_indices(0, keys)}}, GetParam(), 140,
                      "heads " + std::to_string(heads) + " keys " + std::to_string(keys));
    }
  }
}

TEST_P(SparseMla, InvalidIndicesAreSkipped) {
  std::vector<int32_t> ids = range_indices(0, 100, 3);
  for (size_t i = 0; i < ids.size(); i += 4) ids[i] = -1;
  ids.insert(ids.begin() + 5, 70, -1);  // a whole chunk of -1 in the middle
  run_sparse_case({6, {ids}}, GetParam(), 100, "scattered -1");
}

TEST_P(SparseMla, TopkBeyondTheNumberOfKeysIsPaddedWithMinusOne) {
  std::vector<int32_t> ids = range_indices(0, 10);
  ids.resize(96, -1);
  run_sparse_case({4, {ids}}, GetParam(), 10, "k > keys");
}

TEST_P(SparseMla, PrefillRowsEachWithTheirOwnKeys) {
  // Rows of 70 slots: all valid, every other key (44, then -1), none, and a single key.
  std::vector<int32_t> strided = range_indices(3, 90, 2);
  strided.resize(70, -1);
  std::vector<int32_t> single(70, -1);
  single[40] = 89;
  run_sparse_case({5, {range_indices(0, 70), strided, std::vector<int32_t>(70, -1), single}},
                  GetParam(), 90, "prefill rows");
}

TEST_P(SparseMla, EverySimdTarget) {
  // The paths of machines without AVX-512 (AVX2, SSE4, ...): key and head tails, -1 entries.
  std::vector<int32_t> ids = range_indices(0, 67);
  ids[10] = -1;
  test::for_each_simd_target([&] { run_sparse_case({5, {ids}}, GetParam(), 67, "simd"); });
}

INSTANTIATE_TEST_SUITE_P(Formats, SparseMla,
                         ::testing::Values(LatentCacheFormat::kFp8, LatentCacheFormat::kBf16));

TEST(SparseMlaRows, AllInvalidGivesZeroAndInfiniteLse) {
  const Cache cache = make_cache(LatentCacheFormat::kFp8, 8, 1);
  const std::vector<float> q = make_queries(3, 2);
  const std::vector<int32_t> ids(16, -1);
  for (int version = 0; version < 2; ++version) {
    std::vector<float> out(3 * kMlaLatentDim, 5.0f), lse(3, 0.0f);
    SparseMlaParams p{q.data(), cache.view(), ids.data(),         out.data(), lse.data(), 1,
                      3,        16,           mla_softmax_scale()};
    ThreadPool pool(2);
    version == 0 ? sparse_mla_ref(p) : sparse_mla(p, pool);
    for (float x : out) ASSERT_EQ(x, 0.0f);
    for (float x : lse) EXPECT_EQ(x, std::numeric_limits<float>::infinity());
  }
}

TEST(SparseMlaRows, DuplicateIndicesCountAsSeparateKeys) {
  // FlashMLA's rule: keys {a, a, b} weigh a twice. With two distinct keys the exact answer is
  // (2 e^{s_a} v_a + e^{s_b} v_b) / (2 e^{s_a} + e^{s_b}), which exact_head computes from the list.
  run_sparse_case({3, {{4, 4, 9}}}, LatentCacheFormat::kFp8, 10, "duplicates");
  // The same key many times is that key's value exactly.
  const Cache cache = make_cache(LatentCacheFormat::kBf16, 3, 5);
  const std::vector<float> q = make_queries(1, 6);
  const std::vector<int32_t> ids(70, 2);
  std::vector<float> out(kMlaLatentDim), lse(1);
  SparseMlaParams p{q.data(), cache.view(), ids.data(),         out.data(), lse.data(), 1,
                    1,        70,           mla_softmax_scale()};
  ThreadPool pool(1);
  sparse_mla(p, pool);
  for (int c = 0; c < kMlaLatentDim; ++c) {
    // p = 1/70 per copy: the sum of 70 copies is the value up to fp32 rounding, then bf16.
    EXPECT_NEAR(out[c], cache.keys[2 * kMlaKeyDim + c], kU * std::fabs(out[c]) + 1e-6) << c;
  }
}

TEST(SparseMlaRows, RejectsIndicesOutsideTheCache) {
  const Cache cache = make_cache(LatentCacheFormat::kFp8, 4, 1);
  const std::vector<float> q = make_queries(2, 2);
  std::vector<float> out(2 * kMlaLatentDim), lse(2);
  for (int32_t bad : {4, -2}) {
    const std::vector<int32_t> ids = {0, -1, 1, 2, 3, bad};
    SparseMlaParams p{q.data(), cache.view(),       ids.data(), out.data(), lse.data(), 2, 1,
                      3,        mla_softmax_scale()};
    try {
      sparse_mla_ref(p);
      FAIL() << "accepted index " << bad;
    } catch (const Error& error) {
      EXPECT_NE(std::string(error.what()).find("indices[1, 2] = " + std::to_string(bad)),
                std::string::npos)
          << error.what();
    }
    ThreadPool pool(1);
    EXPECT_THROW(sparse_mla(p, pool), Error);
  }
  SparseMlaParams no_heads{q.data(), cache.view(), nullptr, out.data(), lse.data(), 1, 0, 0, 1.0f};
  try {
    sparse_mla_ref(no_heads);
    FAIL();
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("num_heads must be positive, got 0"),
              std::string::npos);
  }
}

TEST(DenseMla, MatchesExactAttentionOverAllKeys) {
  for (LatentCacheFormat format : {LatentCacheFormat::kFp8, LatentCacheFormat::kBf16}) {
    for (int64_t keys : {1, 64, 150}) {
      const Cache cache = make_cache(format, keys, 21);
      const int64_t heads = 6;
      const std::vector<float> q = make_queries(heads, 22);
      for (int version = 0; version < kVersions; ++version) {
        std::vector<float> out(heads * kMlaLatentDim), lse(heads);
        DenseMlaParams p{q.data(),   cache.view(), out.data(),
                         lse.data(), heads,        mla_softmax_scale()};
        if (version == 0) {
          dense_mla_ref(p);
        } else {
          ThreadPool pool(threads_of(version));
          p.allow_avx512bf16 = allows_avx512bf16(version);
          dense_mla(p, pool);
        }
        expect_row_close(
            out.data(), lse.data(), q.data(), heads, cache, range_indices(0, int32_t(keys)),
            p.softmax_scale, version == 0,
            "dense keys " + std::to_string(keys) + " version " + std::to_string(version));
      }
    }
  }
}

TEST(MlaAvx512Bf16Scores, PairsAreExactAndScoresMatchExactDots) {
  // Called directly (not through the dispatch), so a dispatch that never picks it cannot hide
  // it. 5 rows x 7 keys cover the 4 x 4 blocks and both tails. The products of bf16 values are
  // exact in fp32, so each score is within 576 u sum|q k| of the exact dot (u = 2^-24), plus one
  // rounding for the scale.
  if (!detect_cpu_features().avx512bf16) GTEST_SKIP() << "this CPU has no AVX512-BF16";
  constexpr int kPairs = kMlaKeyDim / 2, kRows = 5, kKeys = 7, kStride = 8;
  const std::vector<float> q = make_queries(kRows, 31), k = make_queries(kKeys, 32);
  std::vector<uint32_t> q_pairs(kRows * kPairs), k_pairs(kKeys * kPairs);
  mla_internal::to_bf16_pairs_avx512bf16(q.data(), kRows, kMlaKeyDim, kMlaKeyDim, q_pairs.data());
  mla_internal::to_bf16_pairs_avx512bf16(k.data(), kKeys, kMlaKeyDim, kMlaKeyDim, k_pairs.data());
  for (int i = 0; i < kRows * kPairs; ++i) {
    const uint32_t expected =
        float_to_bf16(q[2 * i]).bits | uint32_t(float_to_bf16(q[2 * i + 1]).bits) << 16;
    ASSERT_EQ(q_pairs[i], expected) << "pair " << i;
  }
  const float scale = mla_softmax_scale();
  std::vector<float> scores(kRows * kStride, -1.0f);
  mla_internal::score_chunk_avx512bf16(q_pairs.data(), kRows, k_pairs.data(), kKeys, kPairs, scale,
                                       scores.data(), kStride);
  for (int r = 0; r < kRows; ++r) {
    for (int c = 0; c < kKeys; ++c) {
      double dot = 0.0, magnitude = 0.0;
      for (int d = 0; d < kMlaKeyDim; ++d) {
        const double product = double(q[r * kMlaKeyDim + d]) * k[c * kMlaKeyDim + d];
        dot += product;
        magnitude += std::fabs(product);
      }
      const double bound = scale * (kMlaKeyDim * 0x1p-24 * magnitude + 0x1p-24 * std::fabs(dot));
      EXPECT_NEAR(scores[r * kStride + c], scale * dot, bound) << "row " << r << " key " << c;
    }
    EXPECT_EQ(scores[r * kStride + kKeys], -1.0f) << "row " << r << ": wrote past the keys";
  }
}

TEST(DenseMla, SoftmaxScaleIsV32s) {
  // 192^-0.5 * (0.1 ln 40 + 1)^2 (dsa-reference.md §5.2).
  EXPECT_FLOAT_EQ(mla_softmax_scale(), 0.1352337788608801f);
}

}  // namespace
}  // namespace dsa

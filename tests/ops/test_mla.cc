// Absorbed-mode (MQA) MLA over the latent cache: sparse rows (decode T = 1 and prefill T > 1)
// and dense decode, reference and fast, both checked against an exact (double) attention written
// here from the definition, over both cache formats, 1 and 2 threads, and V3.2's dims (latent 512,
// rope 64) as well as smaller configs: latent 128 / rope 64, latent 256 / rope 32, and latent 128 /
// rope 18 (a key of 146 dims: partial SIMD vectors and padded bf16 pairs).
//
// Tolerances. Let u = 2^-8 (bf16 unit roundoff). The reference rounds q·latent, q_pe·rope, their
// sum and the scaled score to bf16, so a scaled score is off by at most
//   Δ_j = scale * 3u * (|nope_j| + |pe_j|) + u * |scaled_j|        (rounding of the last step)
// A shift of every score by at most Δ moves each probability by a factor within e^{±2Δ}, and the
// bf16 rounding of p adds u, so |Δp_j| <= p_j (e^{2Δ}(1 + u) - 1) and
//   |out_ref - out| <= (e^{2Δ}(1 + u) - 1) * max|v| + u * |out| (output rounding),
//   |lse_ref - lse| <= Δ + u (the bf16 softmax inputs).
// The fast version keeps fp32: Δ_fast = scale * K * 2^-24 * Σ|q k| (fp32 dot bound over the K =
// latent + rope key dims) plus the Highway exp's error (a few fp32 ulps, covered by doubling), and
// rounds only the output.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/float_formats.h"
#include "ops/attention/mla.h"
#include "ops/attention/mla_scores_avx512bf16.h"
#include "simd_targets.h"

namespace dsa {
namespace {

constexpr float kU = 1.0f / 256;  // bf16 unit roundoff (8 significant bits)

const LatentDims kDimsList[] = {{512, 64}, {128, 64}, {256, 32}, {128, 18}};

std::string dims_name(LatentDims dims) {
  return "latent" + std::to_string(dims.latent) + "_rope" + std::to_string(dims.rope);
}

struct Cache {
  LatentCacheFormat format;
  LatentDims dims;
  std::vector<std::byte> bytes;
  std::vector<float> keys;  // unpacked [n, dims.key()], what both versions compute with
  LatentCacheView view() const {
    return {format, dims, bytes.data(), int64_t(bytes.size() / latent_token_bytes(format, dims))};
  }
};

Cache make_cache(LatentCacheFormat format, int64_t n, uint32_t seed, LatentDims dims = {}) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const size_t token_bytes = latent_token_bytes(format, dims), key_dim = size_t(dims.key());
  Cache cache{format, dims, std::vector<std::byte>(size_t(n) * token_bytes),
              std::vector<float>(size_t(n) * key_dim)};
  std::vector<float> latent(dims.latent), rope(dims.rope);
  for (int64_t j = 0; j < n; ++j) {
    for (float& x : latent) x = round_to_bf16(dist(rng) * (1.0f + float(j % 5)));
    for (float& x : rope) x = round_to_bf16(dist(rng));
    pack_latent_token(latent, rope, format, ScaleFormat::kUe8m0,
                      cache.bytes.data() + j * token_bytes);
    unpack_latent_token(cache.view().token(j), format, dims,
                        std::span<float>(cache.keys.data() + j * key_dim, key_dim));
  }
  return cache;
}

// `rows` query rows of `width` bf16 values (the key width, 576 for V3.2).
std::vector<float> make_queries(int64_t rows, uint32_t seed, int width = LatentDims{}.key()) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> q(size_t(rows) * width);
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
  const int latent = cache.dims.latent, key_dim = cache.dims.key();
  Expected e{std::vector<double>(latent, 0.0), std::numeric_limits<double>::infinity(), 0, 0, 0};
  std::vector<double> scores;
  std::vector<const float*> keys;
  for (int32_t id : ids) {
    if (id < 0) continue;
    const float* key = &cache.keys[size_t(id) * key_dim];
    double nope = 0, pe = 0, magnitude = 0;
    for (int c = 0; c < latent; ++c) nope += double(q[c]) * key[c];
    for (int c = latent; c < key_dim; ++c) pe += double(q[c]) * key[c];
    for (int c = 0; c < key_dim; ++c) magnitude += std::fabs(double(q[c]) * key[c]);
    const double scaled = (nope + pe) * scale;
    scores.push_back(scaled);
    keys.push_back(key);
    e.ref_score_error =
        std::max(e.ref_score_error,
                 scale * 3 * kU * (std::fabs(nope) + std::fabs(pe)) + kU * std::fabs(scaled));
    e.fast_score_error = std::max(e.fast_score_error, scale * key_dim * 0x1p-24 * magnitude);
    for (int c = 0; c < latent; ++c)
      e.max_abs_value = std::max(e.max_abs_value, std::fabs(double(key[c])));
  }
  if (scores.empty()) return e;
  double max_score = -std::numeric_limits<double>::infinity();
  for (double s : scores) max_score = std::max(max_score, s);
  double sum = 0;
  for (double s : scores) sum += std::exp(s - max_score);
  for (size_t j = 0; j < scores.size(); ++j) {
    const double p = std::exp(scores[j] - max_score) / sum;
    for (int c = 0; c < latent; ++c) e.out[c] += p * keys[j][c];
  }
  e.lse = max_score + std::log(sum);
  return e;
}

// Checks out [H, latent] and lse [H] of one query row against the exact attention.
void expect_row_close(const float* out, const float* lse, const float* q, int64_t heads,
                      const Cache& cache, const std::vector<int32_t>& ids, float scale,
                      bool reference, const std::string& what) {
  const int latent = cache.dims.latent;
  for (int64_t h = 0; h < heads; ++h) {
    const Expected e = exact_head(q + h * cache.dims.key(), cache, ids, scale);
    const double delta = reference ? e.ref_score_error : 2 * e.fast_score_error + 1e-6;
    const double p_error = std::exp(2 * delta) * (1 + (reference ? kU : 0)) - 1;
    if (std::isinf(e.lse)) {
      EXPECT_TRUE(std::isinf(lse[h]) && lse[h] > 0) << what << " head " << h << ": lse " << lse[h];
    } else {
      EXPECT_NEAR(lse[h], e.lse, delta + kU * std::fabs(e.lse)) << what << " head " << h;
    }
    for (int c = 0; c < latent; ++c) {
      const double tolerance = p_error * e.max_abs_value + kU * std::fabs(e.out[c]) + 1e-6;
      ASSERT_NEAR(out[h * latent + c], e.out[c], tolerance)
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
                     const std::string& name, LatentDims dims = {}) {
  const Cache cache = make_cache(format, cache_tokens, 11, dims);
  const int64_t T = int64_t(test.rows.size());
  const int64_t topk = int64_t(test.rows[0].size());
  const std::vector<float> q = make_queries(T * test.heads, 12, dims.key());
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
    std::vector<float> out(size_t(T * test.heads * dims.latent), -7.0f),
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
      expect_row_close(out.data() + t * test.heads * dims.latent, lse.data() + t * test.heads,
                       q.data() + t * test.heads * dims.key(), test.heads, cache, test.rows[t],
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

struct SparseMlaParam {
  LatentCacheFormat format;
  LatentDims dims;
};

void PrintTo(const SparseMlaParam& param, std::ostream* os) {
  *os << (param.format == LatentCacheFormat::kFp8 ? "fp8 " : "bf16 ") << dims_name(param.dims);
}

class SparseMla : public ::testing::TestWithParam<SparseMlaParam> {
 protected:
  void run(const SparseCase& test, int64_t cache_tokens, const std::string& name) {
    run_sparse_case(test, GetParam().format, cache_tokens, name, GetParam().dims);
  }
};

TEST_P(SparseMla, DecodeAroundChunkAndHeadBlockSizes) {
  // Key counts around the 64-key chunk and the 4-key score block; head counts around 4.
  for (int64_t heads : {1, 3, 4, 5, 8}) {
    for (int32_t keys : {1, 3, 4, 63, 64, 65, 130}) {
      run({heads, {range_indices(0, keys)}}, 140,
          "heads " + std::to_string(heads) + " keys " + std::to_string(keys));
    }
  }
}

TEST_P(SparseMla, InvalidIndicesAreSkipped) {
  std::vector<int32_t> ids = range_indices(0, 100, 3);
  for (size_t i = 0; i < ids.size(); i += 4) ids[i] = -1;
  ids.insert(ids.begin() + 5, 70, -1);  // a whole chunk of -1 in the middle
  run({6, {ids}}, 100, "scattered -1");
}

TEST_P(SparseMla, TopkBeyondTheNumberOfKeysIsPaddedWithMinusOne) {
  std::vector<int32_t> ids = range_indices(0, 10);
  ids.resize(96, -1);
  run({4, {ids}}, 10, "k > keys");
}

TEST_P(SparseMla, PrefillRowsEachWithTheirOwnKeys) {
  // Rows of 70 slots: all valid, every other key (44, then -1), none, and a single key.
  std::vector<int32_t> strided = range_indices(3, 90, 2);
  strided.resize(70, -1);
  std::vector<int32_t> single(70, -1);
  single[40] = 89;
  run({5, {range_indices(0, 70), strided, std::vector<int32_t>(70, -1), single}}, 90,
      "prefill rows");
}

TEST_P(SparseMla, EverySimdTarget) {
  // The paths of machines without AVX-512 (AVX2, SSE4, ...): key and head tails, -1 entries.
  std::vector<int32_t> ids = range_indices(0, 67);
  ids[10] = -1;
  test::for_each_simd_target([&] { run({5, {ids}}, 67, "simd"); });
}

std::vector<SparseMlaParam> sparse_params() {
  std::vector<SparseMlaParam> params;
  for (LatentCacheFormat format : {LatentCacheFormat::kFp8, LatentCacheFormat::kBf16}) {
    for (LatentDims dims : kDimsList) params.push_back({format, dims});
  }
  return params;
}

INSTANTIATE_TEST_SUITE_P(
    FormatsAndDims, SparseMla, ::testing::ValuesIn(sparse_params()), [](const auto& test_info) {
      return std::string(test_info.param.format == LatentCacheFormat::kFp8 ? "fp8_" : "bf16_") +
             dims_name(test_info.param.dims);
    });

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
    EXPECT_NEAR(out[c], cache.keys[2 * cache.dims.key() + c], kU * std::fabs(out[c]) + 1e-6) << c;
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
  for (LatentDims dims : kDimsList) {
    for (LatentCacheFormat format : {LatentCacheFormat::kFp8, LatentCacheFormat::kBf16}) {
      for (int64_t keys : {1, 64, 150}) {
        const Cache cache = make_cache(format, keys, 21, dims);
        const int64_t heads = 6;
        const std::vector<float> q = make_queries(heads, 22, dims.key());
        for (int version = 0; version < kVersions; ++version) {
          std::vector<float> out(heads * dims.latent), lse(heads);
          DenseMlaParams p{q.data(),   cache.view(), out.data(),
                           lse.data(), heads,        mla_softmax_scale()};
          if (version == 0) {
            dense_mla_ref(p);
          } else {
            ThreadPool pool(threads_of(version));
            p.allow_avx512bf16 = allows_avx512bf16(version);
            dense_mla(p, pool);
          }
          expect_row_close(out.data(), lse.data(), q.data(), heads, cache,
                           range_indices(0, int32_t(keys)), p.softmax_scale, version == 0,
                           "dense " + dims_name(dims) + " keys " + std::to_string(keys) +
                               " version " + std::to_string(version));
        }
      }
    }
  }
}

TEST(DenseMla, RejectsDimsTheCacheCannotHold) {
  const Cache cache = make_cache(LatentCacheFormat::kFp8, 2, 1);
  const std::vector<float> q = make_queries(1, 2);
  std::vector<float> out(kMlaLatentDim), lse(1);
  DenseMlaParams p{q.data(), cache.view(), out.data(), lse.data(), 1, mla_softmax_scale()};
  p.cache.dims.latent = 500;
  try {
    dense_mla_ref(p);
    FAIL();
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("dense_mla: latent cache dims.latent"),
              std::string::npos)
        << error.what();
  }
  p.cache.dims = {512, 7};
  ThreadPool pool(1);
  EXPECT_THROW(dense_mla(p, pool), Error);
}

// Calls the AVX512-BF16 score kernel directly (not through the dispatch, so a dispatch that never
// picks it cannot hide it) on `dim`-wide rows. 5 rows x 7 keys cover the 4 x 4 blocks and both
// tails. The products of bf16 values are exact in fp32, so each score is within dim u sum|q k| of
// the exact dot (u = 2^-24), plus one rounding for the scale.
void check_avx512bf16_scores(int dim) {
  const int pairs = mla_internal::bf16_pair_count(dim);
  constexpr int kRows = 5, kKeys = 7, kStride = 8;
  ASSERT_EQ(pairs % 16, 0);
  ASSERT_GE(2 * pairs, dim);
  const std::vector<float> q = make_queries(kRows, 31, dim), k = make_queries(kKeys, 32, dim);
  std::vector<uint32_t> q_pairs(kRows * pairs, 0xDEADBEEF), k_pairs(kKeys * pairs, 0xDEADBEEF);
  mla_internal::to_bf16_pairs_avx512bf16(q.data(), kRows, dim, dim, q_pairs.data());
  mla_internal::to_bf16_pairs_avx512bf16(k.data(), kKeys, dim, dim, k_pairs.data());
  for (int r = 0; r < kRows; ++r) {
    for (int j = 0; j < pairs; ++j) {  // zero past the row's dim values
      const auto bits = [&](int i) { return i < dim ? float_to_bf16(q[r * dim + i]).bits : 0; };
      const uint32_t expected = bits(2 * j) | uint32_t(bits(2 * j + 1)) << 16;
      ASSERT_EQ(q_pairs[r * pairs + j], expected) << "dim " << dim << " row " << r << " pair " << j;
    }
  }
  const float scale = mla_softmax_scale();
  std::vector<float> scores(kRows * kStride, -1.0f);
  mla_internal::score_chunk_avx512bf16(q_pairs.data(), kRows, k_pairs.data(), kKeys, pairs, scale,
                                       scores.data(), kStride);
  for (int r = 0; r < kRows; ++r) {
    for (int c = 0; c < kKeys; ++c) {
      double dot = 0.0, magnitude = 0.0;
      for (int d = 0; d < dim; ++d) {
        const double product = double(q[r * dim + d]) * k[c * dim + d];
        dot += product;
        magnitude += std::fabs(product);
      }
      const double bound = scale * (dim * 0x1p-24 * magnitude + 0x1p-24 * std::fabs(dot));
      EXPECT_NEAR(scores[r * kStride + c], scale * dot, bound)
          << "dim " << dim << " row " << r << " key " << c;
    }
    EXPECT_EQ(scores[r * kStride + kKeys], -1.0f) << "row " << r << ": wrote past the keys";
  }
}

TEST(MlaAvx512Bf16Scores, PairsAreExactAndScoresMatchExactDots) {
  if (!detect_cpu_features().avx512bf16) GTEST_SKIP() << "this CPU has no AVX512-BF16";
  // V3.2's 576, whole vectors of 32 values (192, 288), and padded ones: 146 (the last vector 18
  // values, its upper half partial), 130 (upper half empty), 2 (one pair).
  for (int dim : {576, 192, 288, 146, 130, 2}) check_avx512bf16_scores(dim);
}

TEST(DenseMla, SoftmaxScaleIsV32s) {
  // 192^-0.5 * (0.1 ln 40 + 1)^2 (dsa-reference.md §5.2).
  EXPECT_FLOAT_EQ(mla_softmax_scale(), 0.1352337788608801f);
}

}  // namespace
}  // namespace dsa

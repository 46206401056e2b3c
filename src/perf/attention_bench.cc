#include "perf/attention_bench.h"

#include <algorithm>
#include <cstdint>
#include <random>

#include "core/error.h"
#include "core/float_formats.h"
#include "ops/attention/latent_cache.h"
#include "ops/attention/mla.h"
#include "ops/indexer/indexer.h"
#include "ops/rope/rope.h"
#include "ops/topk/topk.h"

namespace dsa {
namespace {

constexpr double kIndexerKeyBytes = kIndexerHeadDim + 4;  // 128 fp8 codes + an fp32 scale
constexpr LatentDims kDims;  // V3.2's latent cache: 512 latent + 64 RoPE dims
constexpr double kMlaFlopsPerKeyHead = 2.0 * (kDims.key() + kDims.latent);  // q.k and p.v
constexpr size_t kLatentFp8TokenBytes = latent_token_bytes(LatentCacheFormat::kFp8, kDims);
constexpr size_t kLatentBf16TokenBytes = latent_token_bytes(LatentCacheFormat::kBf16, kDims);
constexpr int64_t kFillBlock = 1024;  // tokens per work item (and random stream) when filling

// Σ over query rows t of the keys row t sees, min(start + t + 1, cap).
double sum_keys(int64_t start, int64_t rows, int64_t cap) {
  double total = 0;
  for (int64_t t = 0; t < rows; ++t) total += double(std::min(start + t + 1, cap));
  return total;
}

constexpr int64_t kNoCap = INT64_MAX;

// The caches of `tokens` positions with realistic values, made by the real write paths: random
// normalized latents and RoPE values (unit variance, as after kv_norm) packed by act_quant into
// the FP8 cache and rounded into the bf16 one; random wk(x) rows through the indexer's key writer
// (LayerNorm, RoPE, Hadamard, act_quant).
struct SyntheticCaches {
  int64_t tokens;
  RopeTable rope;
  std::vector<std::byte> latent_fp8, latent_bf16;
  std::vector<fp8_e4m3> key_codes;
  std::vector<float> key_scales;

  SyntheticCaches(int64_t tokens_in, ThreadPool& pool)
      : tokens(tokens_in),
        rope(YarnRopeConfig{.rope_dim = kDims.rope, .max_seq_len = tokens_in}),
        latent_fp8(size_t(tokens_in) * kLatentFp8TokenBytes),
        latent_bf16(size_t(tokens_in) * kLatentBf16TokenBytes),
        key_codes(size_t(tokens_in) * kIndexerHeadDim),
        key_scales(size_t(tokens_in)) {
    std::vector<bf16> wk(size_t(tokens) * kIndexerHeadDim);
    const int64_t blocks = (tokens + kFillBlock - 1) / kFillBlock;
    pool.parallel_for(blocks, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> latent(kDims.latent), rope_values(kDims.rope);
      for (int64_t block = begin; block < end; ++block) {
        std::mt19937 rng(uint32_t(1000 + block));
        std::normal_distribution<float> normal(0.0f, 1.0f);
        const int64_t last = std::min(tokens, (block + 1) * kFillBlock);
        for (int64_t s = block * kFillBlock; s < last; ++s) {
          for (float& x : latent) x = round_to_bf16(normal(rng));
          for (float& x : rope_values) x = round_to_bf16(normal(rng));
          pack_latent_token(latent, rope_values, LatentCacheFormat::kFp8, ScaleFormat::kUe8m0,
                            latent_fp8.data() + size_t(s) * kLatentFp8TokenBytes);
          pack_latent_token(latent, rope_values, LatentCacheFormat::kBf16, ScaleFormat::kUe8m0,
                            latent_bf16.data() + size_t(s) * kLatentBf16TokenBytes);
          for (int i = 0; i < kIndexerHeadDim; ++i) {
            wk[size_t(s * kIndexerHeadDim + i)] = float_to_bf16(normal(rng));
          }
        }
      }
    });
    const std::vector<float> norm_weight(kIndexerHeadDim, 1.0f), norm_bias(kIndexerHeadDim, 0.0f);
    indexer_keys({.k = wk.data(),
                  .norm_weight = norm_weight.data(),
                  .norm_bias = norm_bias.data(),
                  .rope = &rope,
                  .tokens = tokens,
                  .start_pos = 0,
                  .key_codes = key_codes.data(),
                  .key_scales = key_scales.data(),
                  .cache_capacity = tokens},
                 pool);
  }

  LatentCacheView latent(LatentCacheFormat format, int64_t keys) const {
    const auto& bytes = format == LatentCacheFormat::kFp8 ? latent_fp8 : latent_bf16;
    return {format, kDims, bytes.data(), keys};
  }
};

std::vector<float> random_values(size_t count, float stddev, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> values(count);
  for (float& x : values) x = round_to_bf16(normal(rng));
  return values;
}

// One case: `rows` query rows from position `start`, over the first start + rows cache entries.
class CaseRunner {
 public:
  CaseRunner(const SyntheticCaches& caches, const AttentionShape& shape, int runs, ThreadPool& pool)
      : caches_(caches), shape_(shape), runs_(runs), pool_(pool) {}

  AttentionResult dense(BenchPhase phase, int64_t depth, int64_t start, int64_t rows,
                        LatentCacheFormat format) {
    const int64_t keys = start + rows;
    const std::vector<float> q = random_values(size_t(rows * shape_.heads * kDims.key()), 0.1f, 7);
    std::vector<float> out(size_t(rows * shape_.heads * kDims.latent));
    std::vector<float> lse(size_t(rows * shape_.heads));
    const LatentCacheView cache = caches_.latent(format, keys);
    std::function<void()> body;
    std::vector<int32_t> causal;  // prefill: row t lists keys 0 .. start + t, then -1
    if (rows == 1) {
      body = [&] {
        dense_mla({q.data(), cache, out.data(), lse.data(), shape_.heads, mla_softmax_scale()},
                  pool_);
      };
    } else {
      causal.assign(size_t(rows * keys), -1);
      for (int64_t t = 0; t < rows; ++t) {
        for (int64_t s = 0; s <= start + t; ++s) causal[size_t(t * keys + s)] = int32_t(s);
      }
      body = [&] {
        sparse_mla({q.data(), cache, causal.data(), out.data(), lse.data(), rows, shape_.heads,
                    keys, mla_softmax_scale()},
                   pool_);
      };
    }
    AttentionResult result;
    result.phase = phase;
    result.mode = format == LatentCacheFormat::kFp8 ? "dense_fp8" : "dense_bf16";
    result.depth = depth;
    result.tokens = rows;
    result.seconds = summarize(time_runs(1, runs_, body));
    result.flops = mla_flops(shape_, start, rows);
    result.bytes = mla_bytes(start, rows, format == LatentCacheFormat::kFp8);
    return result;
  }

  AttentionResult sparse(BenchPhase phase, int64_t depth, int64_t start, int64_t rows) {
    const int64_t keys = start + rows, ih = shape_.indexer_heads;
    std::vector<bf16> index_q(size_t(rows * ih * kIndexerHeadDim));
    const std::vector<float> index_q_values = random_values(index_q.size(), 1.0f, 11);
    for (size_t i = 0; i < index_q.size(); ++i) index_q[i] = float_to_bf16(index_q_values[i]);
    const std::vector<float> weights_proj = random_values(size_t(rows * ih), 1.0f, 13);
    std::vector<fp8_e4m3> q_codes(index_q.size());
    std::vector<float> head_weights(size_t(rows * ih)), scores(size_t(rows * keys));
    std::vector<int32_t> indices(size_t(rows * shape_.topk));
    const std::vector<float> q = random_values(size_t(rows * shape_.heads * kDims.key()), 0.1f, 7);
    std::vector<float> out(size_t(rows * shape_.heads * kDims.latent));
    std::vector<float> lse(size_t(rows * shape_.heads));

    const auto indexer = [&] {
      indexer_queries({.q = index_q.data(),
                       .weights_proj = weights_proj.data(),
                       .rope = &caches_.rope,
                       .tokens = rows,
                       .heads = ih,
                       .start_pos = start,
                       .q_codes = q_codes.data(),
                       .head_weights = head_weights.data()},
                      pool_);
      indexer_scores({.q_codes = q_codes.data(),
                      .head_weights = head_weights.data(),
                      .key_codes = caches_.key_codes.data(),
                      .key_scales = caches_.key_scales.data(),
                      .scores = scores.data(),
                      .tokens = rows,
                      .heads = ih,
                      .keys = keys,
                      .start_pos = start},
                     pool_);
    };
    const auto topk = [&] {
      topk_select({.scores = scores.data(),
                   .indices = indices.data(),
                   .rows = rows,
                   .cols = keys,
                   .k = shape_.topk},
                  pool_);
    };
    const auto attend = [&] {
      sparse_mla({q.data(), caches_.latent(LatentCacheFormat::kFp8, keys), indices.data(),
                  out.data(), lse.data(), rows, shape_.heads, shape_.topk, mla_softmax_scale()},
                 pool_);
    };

    // Each run times the three stages back to back, so the total is their per-run sum.
    std::vector<double> stage_seconds[3], total_seconds;
    const std::function<void()> stages[3] = {indexer, topk, attend};
    for (int run = -1; run < runs_; ++run) {  // run -1 is the warm-up
      double total = 0;
      for (int s = 0; s < 3; ++s) {
        const double begin = now_seconds();
        stages[s]();
        const double elapsed = now_seconds() - begin;
        total += elapsed;
        if (run >= 0) stage_seconds[s].push_back(elapsed);
      }
      if (run >= 0) total_seconds.push_back(total);
    }

    AttentionResult result;
    result.phase = phase;
    result.mode = "dsa";
    result.depth = depth;
    result.tokens = rows;
    result.seconds = summarize(total_seconds);
    result.stages = {
        {"indexer", summarize(stage_seconds[0]), indexer_flops(shape_, start, rows),
         indexer_bytes(start, rows)},
        {"topk", summarize(stage_seconds[1]), 0.0, topk_bytes(start, rows)},
        {"sparse_mla", summarize(stage_seconds[2]), sparse_mla_flops(shape_, start, rows),
         sparse_mla_bytes(shape_, start, rows)},
    };
    for (const StageResult& stage : result.stages) {
      result.flops += stage.flops;
      result.bytes += stage.bytes;
    }
    return result;
  }

 private:
  const SyntheticCaches& caches_;
  AttentionShape shape_;
  int runs_;
  ThreadPool& pool_;
};

}  // namespace

const char* phase_name(BenchPhase phase) {
  return phase == BenchPhase::kDecode ? "decode" : "prefill";
}

void validate(const AttentionBenchConfig& config) {
  if (config.depths.empty()) fail("bench attention: no depths given");
  for (int64_t depth : config.depths) {
    if (depth < 1) fail("bench attention: depth {} must be at least 1", depth);
    if (depth > (int64_t(1) << 30)) fail("bench attention: depth {} is above 2^30", depth);
  }
  if (config.chunk < 1) fail("bench attention: chunk {} must be at least 1", config.chunk);
  if (config.runs < 1) fail("bench attention: runs {} must be at least 1", config.runs);
  if (!config.decode && !config.prefill) fail("bench attention: neither decode nor prefill asked");
}

double mla_flops(const AttentionShape& shape, int64_t start, int64_t rows) {
  return double(shape.heads) * kMlaFlopsPerKeyHead * sum_keys(start, rows, kNoCap);
}

double mla_bytes(int64_t start, int64_t rows, bool fp8_cache) {
  const double key_bytes = fp8_cache ? kLatentFp8TokenBytes : kLatentBf16TokenBytes;
  return key_bytes * sum_keys(start, rows, kNoCap);
}

double sparse_mla_flops(const AttentionShape& shape, int64_t start, int64_t rows) {
  return double(shape.heads) * kMlaFlopsPerKeyHead * sum_keys(start, rows, shape.topk);
}

double sparse_mla_bytes(const AttentionShape& shape, int64_t start, int64_t rows) {
  return double(kLatentFp8TokenBytes) * sum_keys(start, rows, shape.topk);
}

double indexer_flops(const AttentionShape& shape, int64_t start, int64_t rows) {
  return double(shape.indexer_heads) * kIndexerHeadDim * 2.0 * sum_keys(start, rows, kNoCap);
}

double indexer_bytes(int64_t start, int64_t rows) {
  return kIndexerKeyBytes * sum_keys(start, rows, kNoCap);
}

double topk_bytes(int64_t start, int64_t rows) { return 4.0 * sum_keys(start, rows, kNoCap); }

int attention_bench_cases(const AttentionBenchConfig& config) {
  return ((config.decode ? 3 : 0) + (config.prefill ? 2 : 0)) * int(config.depths.size());
}

std::vector<AttentionResult> run_attention_bench(
    const AttentionBenchConfig& config, ThreadPool& pool,
    const std::function<void(int done, int total)>& on_case) {
  validate(config);
  const int64_t max_depth = *std::max_element(config.depths.begin(), config.depths.end());
  const SyntheticCaches caches(max_depth + (config.prefill ? config.chunk : 0), pool);
  CaseRunner runner(caches, config.shape, config.runs, pool);

  const int total = attention_bench_cases(config);
  std::vector<AttentionResult> results;
  const auto add = [&](AttentionResult result) {
    results.push_back(std::move(result));
    if (on_case) on_case(int(results.size()), total);
  };
  if (config.decode) {
    for (int64_t depth : config.depths) {
      const int64_t start = depth - 1;
      add(runner.dense(BenchPhase::kDecode, depth, start, 1, LatentCacheFormat::kBf16));
      add(runner.dense(BenchPhase::kDecode, depth, start, 1, LatentCacheFormat::kFp8));
      add(runner.sparse(BenchPhase::kDecode, depth, start, 1));
    }
  }
  if (config.prefill) {
    for (int64_t depth : config.depths) {
      add(runner.dense(BenchPhase::kPrefill, depth, depth, config.chunk, LatentCacheFormat::kFp8));
      add(runner.sparse(BenchPhase::kPrefill, depth, depth, config.chunk));
    }
  }
  return results;
}

}  // namespace dsa

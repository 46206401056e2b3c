// The attention benchmark behind `dsa bench attention`: per-layer cost of one query token
// (decode) or of a prefill chunk, at a range of cache depths, with DeepSeek-V3.2's attention
// shapes: 128 query heads over the latent cache (512 latent + 64 RoPE), an indexer of 64 heads
// x 128 dims, top-2048.
//
// Modes (the ops of src/ops, fast versions, on one ThreadPool):
//   dense_bf16  absorbed (MQA) MLA over every key of a bf16 latent cache (1152 B per key)
//   dense_fp8   the same over the FP8 cache (656 B per key), V3.2's cache format
//   dsa         indexer (query prep + scores) -> top-k -> sparse MLA over the FP8 cache, each
//               stage timed on its own
// Decode at depth D: one query at position D - 1 attends keys 0 .. D - 1.
// Prefill at depth P: a chunk of C query rows at positions P .. P + C - 1 (row t sees keys
// 0 .. P + t); the per-token cost is the chunk time / C. Dense prefill is absorbed MQA (sparse MLA
// given every causal key): MHA mode would first expand each of the P cached latents to 128 heads'
// k and v (128 x 256 x 512 x 2 FLOP per key, 33.5 MFLOP) against 128 x 1088 x 2 = 0.28 MFLOP per
// key and row in absorbed mode, so absorbed is cheaper for chunks below ~120 rows, and MHA's
// expanded k/v would not fit in memory at 128K (21 GB fp32).
//
// Work counts are the useful work only (dsa-reference.md shapes): per key and query row,
//   MLA      128 x (576 + 512) x 2 FLOP (q.k and p.v), cache bytes 656 (FP8) or 1152 (bf16)
//   indexer  64 x 128 x 2 FLOP, 132 B (128 fp8 codes + 1 fp32 scale)
//   top-k    0 FLOP, 4 B (the fp32 score read)
// summed over the keys each row sees (sparse MLA: min(2048, keys)). Bytes are what each query row
// reads; in prefill the rows of a chunk share keys through the caches, so GB/s there is an
// upper bound on memory traffic, not DRAM bandwidth. Cache writes for the new tokens are left
// out of every mode (the same work for all of them).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "perf/timing.h"

namespace dsa {

enum class BenchPhase { kDecode, kPrefill };

struct AttentionShape {
  int64_t heads = 128;         // MLA query heads
  int64_t indexer_heads = 64;  // index_n_heads
  int64_t topk = 2048;         // index_topk
};

struct AttentionBenchConfig {
  std::vector<int64_t> depths;  // cache depths (decode) / chunk positions (prefill), each >= 1
  bool decode = true;
  bool prefill = false;
  int64_t chunk = 64;  // prefill rows per chunk
  int runs = 5;        // timed runs per case, after one warm-up run
  AttentionShape shape;
};

// Throws dsa::Error naming the bad field (depths empty or < 1, chunk < 1, runs < 1).
void validate(const AttentionBenchConfig& config);

struct StageResult {
  std::string name;     // "indexer", "topk", "sparse_mla"
  TimingStats seconds;  // per call (one decode token or one whole chunk)
  double flops = 0;     // per call
  double bytes = 0;
};

struct AttentionResult {
  BenchPhase phase = BenchPhase::kDecode;
  std::string mode;  // "dense_bf16", "dense_fp8", "dsa"
  int64_t depth = 0;
  int64_t tokens = 1;   // query rows per call: 1 (decode) or the chunk
  TimingStats seconds;  // per call; for dsa the per-run sum of its stages
  double flops = 0;     // per call
  double bytes = 0;
  std::vector<StageResult> stages;  // dsa only

  TimingStats seconds_per_token() const { return scaled(seconds, double(tokens)); }
};

// Work counts per call, from the formulas above. `start` is the position of the first query row
// (depth - 1 for decode, depth for prefill) and `rows` the query rows; row t sees start + t + 1
// keys.
double mla_flops(const AttentionShape& shape, int64_t start, int64_t rows);
double mla_bytes(int64_t start, int64_t rows, bool fp8_cache);
double sparse_mla_flops(const AttentionShape& shape, int64_t start, int64_t rows);
double sparse_mla_bytes(const AttentionShape& shape, int64_t start, int64_t rows);
double indexer_flops(const AttentionShape& shape, int64_t start, int64_t rows);
double indexer_bytes(int64_t start, int64_t rows);
double topk_bytes(int64_t start, int64_t rows);

// The number of cases run_attention_bench runs: 3 modes per decode depth, 2 per prefill depth
// (dense_fp8 and dsa: dense prefill over the bf16 cache would only repeat dense decode's story).
int attention_bench_cases(const AttentionBenchConfig& config);

// Builds the synthetic caches once (for the largest depth) and runs every case; `on_case` is
// called after each (for a progress bar) with the number of cases done and the total.
std::vector<AttentionResult> run_attention_bench(
    const AttentionBenchConfig& config, ThreadPool& pool,
    const std::function<void(int done, int total)>& on_case = {});

const char* phase_name(BenchPhase phase);

}  // namespace dsa

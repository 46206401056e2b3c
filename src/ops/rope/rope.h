// YaRN rotary position embedding (dsa-reference.md §2.7-§2.8).
//
// One table of cos/sin per absolute position feeds both users:
//   MLA      interleaved pairs (2i, 2i+1) on the LAST 64 dims of each q head and of k_pe;
//   indexer  non-interleaved ("rotate half") pairs (i, i+32) on the FIRST 64 dims of q and k.
// The rotation runs in fp32 and the result is rounded to bf16, as REF's apply_rotary_emb does.
#pragma once

#include <cstdint>
#include <vector>

#include "core/float_formats.h"
#include "core/thread_pool.h"

namespace dsa {

// Widest rotated part a table may have (kernels keep one token's cos/sin on the stack).
constexpr int kMaxRopeDim = 512;

// DeepSeek-V3.2 defaults (ModelArgs in REF; the 671B config overrides none of them).
struct YarnRopeConfig {
  int rope_dim = 64;                // qk_rope_head_dim: 32 rotated pairs
  float theta = 10000.0f;           // rope_theta
  float factor = 40.0f;             // rope_factor
  int64_t original_seq_len = 4096;  // YaRN is on only when max_seq_len exceeds this
  float beta_fast = 32.0f;
  float beta_slow = 1.0f;
  int64_t max_seq_len = 16384;  // table length (positions 0 .. max_seq_len-1)
};

// The per-pair angular frequencies after the YaRN ramp correction, fp32: [rope_dim / 2].
std::vector<float> yarn_rope_frequencies(const YarnRopeConfig& config);

// cos and sin of angle[p, i] = fp32(p) * freqs[i], for every position of the table.
class RopeTable {
 public:
  explicit RopeTable(const YarnRopeConfig& config);

  int64_t positions() const { return positions_; }
  int pairs() const { return pairs_; }
  const float* cos(int64_t position) const { return cos_.data() + position * pairs_; }  // [pairs]
  const float* sin(int64_t position) const { return sin_.data() + position * pairs_; }  // [pairs]

 private:
  int64_t positions_;
  int pairs_;
  std::vector<float> cos_;  // [positions, pairs]
  std::vector<float> sin_;  // [positions, pairs]
};

enum class RopeLayout {
  kInterleaved,  // MLA: pairs (2i, 2i+1)
  kHalves,       // indexer: pairs (i, i + pairs)
};

// Rotates x[t, h, offset : offset + 2 * pairs] in place, token t at position start_pos + t.
struct RopeParams {
  bf16* x = nullptr;      // [T, H, row]
  int64_t tokens = 0;     // T
  int64_t heads = 1;      // H (1 for a key without a head axis)
  int64_t row = 0;        // elements per head (192 for MLA q, 576 for wkv_a's output, 128 indexer)
  int64_t offset = 0;     // first rotated element (128 MLA q, 512 MLA k_pe, 0 indexer)
  int64_t start_pos = 0;  // absolute position of token 0
  RopeLayout layout = RopeLayout::kInterleaved;
  const RopeTable* table = nullptr;
};

// Throws dsa::Error naming the bad field.
void validate(const RopeParams& params);

// Scalar reference, line by line REF's apply_rotary_emb.
void apply_rope_reference(const RopeParams& params);
// SIMD (Highway, runtime dispatch) over the pool's threads; same result up to fp32 contraction
// of the rotation (at most one bf16 ulp).
void apply_rope(const RopeParams& params, ThreadPool& pool);

}  // namespace dsa

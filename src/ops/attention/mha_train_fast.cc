// Fast causal MHA for training (mha_train.h): flash-attention style, fp32, Highway SIMD with
// runtime dispatch. Work is done in tiles of kBlock query rows x kBlock keys, each a pair of small
// matrix products (outer-product kernels, no horizontal sums). Costs in multiply-adds, with
// D = Dqk + Dv:
//
// Dense:
//   forward  task (head, query block): scores, online softmax over the key blocks up to the
//            diagonal (masked), out += P·v, lse saved. T²/2 · H · D.
//   dq       task (head, query block): P = exp(scale q·k - lse) recomputed, dP = dout·vᵀ,
//            dq += dS·k. T²/2 · H · (2 Dqk + Dv).
//   dk, dv   task (head, key block), visiting the query blocks in increasing order (the
//            deterministic scheme of FlashAttention-2: no two tasks write one row).
//            T²/2 · H · 2D.
// Sparse (indices), task = a block of 64 query rows (forward, dq) or keys (dk, dv), all heads:
//   the block's selection is the union of what its rows list (or of the rows that list its keys,
//   from a transposed index of O(T·topk) ints). A block whose listed pairs fill >= 1/8 of
//   64 x |union| runs the tiles above, masked to the listed pairs (<= 8x the listed work at tile
//   speed: DSA's neighbouring rows share most keys); a sparser block goes row by row (key by key)
//   over the listed pairs only, gathering k and v rows. Either way O(T · topk · H · D).
// Memory besides inputs and outputs: per-task tiles (O(kBlock · D)), a block's union and its
// membership bytes (O(kBlock · T)), Δ [T, H] and the transposed index. Every element is computed
// by one task in a fixed order, and the path a block takes depends on the indices only, so the
// results are bit-identical run to run and for any thread count.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/attention/mha_train_fast.cc"
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
// After highway.h: a per-target header that foreach_target.h re-includes for every target.
#include "hwy/contrib/math/math-inl.h"
#include "ops/attention/mha_train.h"
#include "ops/attention/mha_train_blocks-inl.h"

HWY_BEFORE_NAMESPACE();
namespace dsa {
namespace HWY_NAMESPACE {
namespace {

using namespace mha_train;  // NOLINT: the building blocks of mha_train_blocks-inl.h

// Rows per batch in the key-by-key dk/dv pass; a multiple of every vector width.
constexpr int kBatch = 16;
constexpr float kInf = std::numeric_limits<float>::infinity();

// ---------------------------------------------------------------------------------------------
// Tiles of kBlock query rows x kBlock keys, shared by the dense path and by the sparse blocks
// whose listed pairs fill enough of their tiles.

// The keys a block of query rows attends to (forward, dq), or the rows that attend to a block of
// keys (dk, dv): `ids` ascending; pair (i, u) of block item i and ids[u] attends if
// member[i * count + u] (sparse), or else if it is causal (dense: ids are consecutive positions).
struct Selection {
  const int32_t* ids = nullptr;
  int64_t count = 0;
  const uint8_t* member = nullptr;  // [block items, count], or null: causal
};

// Sets s[u - c0] = fill for the ids u in [c0, c0 + cols) that query row i (position t) does not
// attend to.
void MaskQueryRow(const Selection& keys, int64_t c0, int cols, int i, int64_t t, float fill,
                  float* s) {
  if (keys.member) {
    const uint8_t* m = keys.member + i * keys.count + c0;
    for (int j = 0; j < cols; ++j) {
      if (!m[j]) s[j] = fill;
    }
    return;
  }
  const int valid = int(std::clamp<int64_t>(t - keys.ids[c0] + 1, 0, cols));  // keys <= t
  std::fill(s + valid, s + cols, fill);
}

// Sets s[u - c0] = 0 for the rows u in [c0, c0 + cols) that do not attend to key j (position s).
void MaskKeyRow(const Selection& rows, int64_t c0, int cols, int j, int64_t s, float* x) {
  if (rows.member) {
    const uint8_t* m = rows.member + j * rows.count + c0;
    for (int i = 0; i < cols; ++i) {
      if (!m[i]) x[i] = 0.0f;
    }
    return;
  }
  const int first = int(std::clamp<int64_t>(s - rows.ids[c0], 0, cols));  // rows t >= s
  std::fill(x, x + first, 0.0f);
}

// Per-task buffers.
struct Tiles {
  std::vector<float> at, bt;                 // transposed gathers [max(Dqk, Dv), kBlock]
  std::vector<float> s, ds;                  // [kBlock, kBlock]
  std::vector<float> acc, acc2;              // [kBlock, Dqk], [kBlock, Dv]
  std::vector<const float*> rows_a, rows_b;  // [kBlock]
  explicit Tiles(const Layout& L)
      : at(std::max(L.Dqk, L.Dv) * kBlock),
        bt(at.size()),
        s(kBlock * kBlock),
        ds(s.size()),
        acc(kBlock * L.Dqk),
        acc2(kBlock * L.Dv),
        rows_a(kBlock),
        rows_b(kBlock) {}
};

// out and lse of query rows t0 .. t0 + rows of head h: online softmax over the selected keys,
// kBlock at a time.
// `kt`: the head's keys transposed (dense: keys are positions 0 .. count-1), or null to gather.
void ForwardTile(const MhaTrainParams& p, const Layout& L, int64_t h, int64_t t0, int rows,
                 const Selection& keys, const float* kt_head, size_t kt_ld, Tiles& w) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const float* q = p.q + L.qk_row(t0, h);
  float row_max[kBlock], row_sum[kBlock];
  std::fill(row_max, row_max + rows, -kInf);
  std::fill(row_sum, row_sum + rows, 0.0f);
  float* acc = w.acc2.data();
  std::fill(acc, acc + rows * L.Dv, 0.0f);
  float* kt = w.at.data();
  float* scores = w.s.data();
  const float** krows = w.rows_a.data();
  const float** vrows = w.rows_b.data();
  const VF scale = hn::Set(d, p.scale);
  for (int64_t c0 = 0; c0 < keys.count; c0 += kBlock) {
    const int cols = int(std::min<int64_t>(kBlock, keys.count - c0));
    for (int j = 0; j < cols; ++j) {
      krows[j] = p.k + L.qk_row(keys.ids[c0 + j], h);
      vrows[j] = p.v + L.v_row(keys.ids[c0 + j], h);
    }
    // Columns >= cols (beyond the last key) are masked to -inf below.
    const StridedRows k_rows = kt_head ? StridedRows{kt_head + c0, kt_ld} : StridedRows{kt, kBlock};
    if (!kt_head) GatherTranspose(krows, cols, L.Dqk, kt);
    MatMul(q, L.q_stride, k_rows, scores, kBlock, rows, kBlock, int(L.Dqk), false);
    for (int r = 0; r < rows; ++r) {
      float* s = scores + r * kBlock;
      for (int j = 0; j < kBlock; j += int(N)) {
        hn::StoreU(hn::Mul(hn::LoadU(d, s + j), scale), d, s + j);
      }
      MaskQueryRow(keys, c0, cols, r, t0 + r, -kInf, s);
      std::fill(s + cols, s + kBlock, -kInf);
      VF max_v = hn::Set(d, -kInf);
      for (int j = 0; j < kBlock; j += int(N)) max_v = hn::Max(max_v, hn::LoadU(d, s + j));
      const float new_max = std::max(row_max[r], hn::GetLane(hn::MaxOfLanes(d, max_v)));
      if (new_max == -kInf) {  // no key for this row yet: P = 0
        std::fill(s, s + kBlock, 0.0f);
        continue;
      }
      const float correction = std::exp(row_max[r] - new_max);  // 0 on the row's first keys
      const VF shift = hn::Set(d, new_max);
      VF sum = hn::Zero(d);
      for (int j = 0; j < kBlock; j += int(N)) {
        const VF e = hn::Exp(d, hn::Sub(hn::LoadU(d, s + j), shift));  // masked: exp(-inf) = 0
        hn::StoreU(e, d, s + j);
        sum = hn::Add(sum, e);
      }
      row_sum[r] = row_sum[r] * correction + hn::GetLane(hn::SumOfLanes(d, sum));
      row_max[r] = new_max;
      if (correction != 1.0f) ScaleRow(acc + r * L.Dv, correction, L.Dv, acc + r * L.Dv);
    }
    if (kt_head) {  // dense: the keys' value rows are consecutive
      MatMul(scores, kBlock, StridedRows{p.v + L.v_row(c0, h), L.v_stride}, acc, L.Dv, rows, L.Dv,
             cols, true);
    } else {
      MatMul(scores, kBlock, GatheredRows{vrows}, acc, L.Dv, rows, L.Dv, cols, true);
    }
  }
  for (int r = 0; r < rows; ++r) {
    float* out = p.out + L.v_row(t0 + r, h);
    if (row_sum[r] == 0.0f) {  // no valid key
      std::fill(out, out + L.Dv, 0.0f);
      p.lse[(t0 + r) * L.H + h] = kInf;
      continue;
    }
    ScaleRow(acc + r * L.Dv, 1.0f / row_sum[r], L.Dv, out);
    p.lse[(t0 + r) * L.H + h] = row_max[r] + std::log(row_sum[r]);
  }
}

// dq of query rows t0 .. t0 + rows of head h: P = exp(scale q·k - lse), dS = P (dP - Δ),
// dq = scale Σ dS k over the selected keys, kBlock at a time.
// `kt`, `vt`: the head's keys and values transposed (dense), or null to gather.
void DqTile(const MhaTrainParams& p, const Layout& L, const float* delta, int64_t h, int64_t t0,
            int rows, const Selection& keys, const float* kt_head, const float* vt_head, size_t ld,
            Tiles& w) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const float* q = p.q + L.qk_row(t0, h);
  const float* dout = p.dout + L.v_row(t0, h);
  float* acc = w.acc.data();
  std::fill(acc, acc + rows * L.Dqk, 0.0f);
  float* kt = w.at.data();
  float* vt = w.bt.data();
  float* scores = w.s.data();
  float* dprobs = w.ds.data();
  const float** krows = w.rows_a.data();
  const float** vrows = w.rows_b.data();
  const VF scale = hn::Set(d, p.scale);
  for (int64_t c0 = 0; c0 < keys.count; c0 += kBlock) {
    const int cols = int(std::min<int64_t>(kBlock, keys.count - c0));
    for (int j = 0; j < cols; ++j) {
      krows[j] = p.k + L.qk_row(keys.ids[c0 + j], h);
      vrows[j] = p.v + L.v_row(keys.ids[c0 + j], h);
    }
    // Columns >= cols are never read back (the dS product has depth cols).
    if (!kt_head) {
      GatherTranspose(krows, cols, L.Dqk, kt);
      GatherTranspose(vrows, cols, L.Dv, vt);
    }
    const StridedRows k_rows = kt_head ? StridedRows{kt_head + c0, ld} : StridedRows{kt, kBlock};
    const StridedRows v_rows = vt_head ? StridedRows{vt_head + c0, ld} : StridedRows{vt, kBlock};
    MatMul(q, L.q_stride, k_rows, scores, kBlock, rows, kBlock, int(L.Dqk), false);
    MatMul(dout, L.v_stride, v_rows, dprobs, kBlock, rows, kBlock, int(L.Dv), false);
    for (int r = 0; r < rows; ++r) {
      const int64_t row = (t0 + r) * L.H + h;
      const VF lse = hn::Set(d, p.lse[row]), dlt = hn::Set(d, delta[row]);
      float* s = scores + r * kBlock;
      const float* dp = dprobs + r * kBlock;
      for (int j = 0; j < kBlock; j += int(N)) {
        const VF prob = hn::Exp(d, hn::MulSub(hn::LoadU(d, s + j), scale, lse));
        hn::StoreU(hn::Mul(prob, hn::Sub(hn::LoadU(d, dp + j), dlt)), d, s + j);  // dS
      }
      MaskQueryRow(keys, c0, cols, r, t0 + r, 0.0f, s);  // the product reads j < cols only
    }
    if (kt_head) {  // dense: the key rows are consecutive
      MatMul(scores, kBlock, StridedRows{p.k + L.qk_row(c0, h), L.q_stride}, acc, L.Dqk, rows,
             L.Dqk, cols, true);
    } else {
      MatMul(scores, kBlock, GatheredRows{krows}, acc, L.Dqk, rows, L.Dqk, cols, true);
    }
  }
  for (int r = 0; r < rows; ++r) {
    ScaleRow(acc + r * L.Dqk, p.scale, L.Dqk, p.dq + L.qk_row(t0 + r, h));
  }
}

// dk, dv of keys s0 .. s0 + cols of head h from the selected query rows, kBlock at a time in
// increasing order. Tiles are transposed (keys x rows) so that P and dS are the left operands.
// `qt`, `dot`: the head's queries and output gradients transposed (dense: the rows are
// positions s0 .. T-1), or null to gather.
void DkDvTile(const MhaTrainParams& p, const Layout& L, const float* delta, int64_t h, int64_t s0,
              int cols, const Selection& rows, const float* qt_head, const float* dot_head,
              size_t ld, Tiles& w) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const float* k = p.k + L.qk_row(s0, h);
  const float* v = p.v + L.v_row(s0, h);
  float* dk_acc = w.acc.data();
  float* dv_acc = w.acc2.data();
  std::fill(dk_acc, dk_acc + cols * L.Dqk, 0.0f);
  std::fill(dv_acc, dv_acc + cols * L.Dv, 0.0f);
  float* qt = w.at.data();
  float* dot = w.bt.data();
  float* probs = w.s.data();
  float* dscores = w.ds.data();
  const float** qrows = w.rows_a.data();
  const float** dorows = w.rows_b.data();
  const VF scale = hn::Set(d, p.scale);
  alignas(64) float lse[kBlock], dlt[kBlock];
  for (int64_t c0 = 0; c0 < rows.count; c0 += kBlock) {
    const int n = int(std::min<int64_t>(kBlock, rows.count - c0));
    for (int i = 0; i < kBlock; ++i) {  // padding: any finite value, never read back
      const int64_t t = i < n ? rows.ids[c0 + i] : 0;
      if (i < n) {
        qrows[i] = p.q + L.qk_row(t, h);
        dorows[i] = p.dout + L.v_row(t, h);
      }
      lse[i] = i < n ? p.lse[t * L.H + h] : 0.0f;
      dlt[i] = i < n ? delta[t * L.H + h] : 0.0f;
    }
    if (!qt_head) {
      GatherTranspose(qrows, n, L.Dqk, qt);
      GatherTranspose(dorows, n, L.Dv, dot);
    }
    // Transposed: columns >= n are the zero padding beyond T (rows are consecutive positions).
    const size_t first = qt_head ? size_t(rows.ids[c0]) : 0;
    const StridedRows q_cols = qt_head ? StridedRows{qt_head + first, ld} : StridedRows{qt, kBlock};
    const StridedRows do_cols =
        dot_head ? StridedRows{dot_head + first, ld} : StridedRows{dot, kBlock};
    MatMul(k, L.q_stride, q_cols, probs, kBlock, cols, kBlock, int(L.Dqk), false);
    MatMul(v, L.v_stride, do_cols, dscores, kBlock, cols, kBlock, int(L.Dv), false);
    for (int j = 0; j < cols; ++j) {
      float* pr = probs + j * kBlock;
      float* ds = dscores + j * kBlock;
      for (int i = 0; i < kBlock; i += int(N)) {
        const VF prob = hn::Exp(d, hn::MulSub(hn::LoadU(d, pr + i), scale, hn::LoadU(d, lse + i)));
        hn::StoreU(prob, d, pr + i);
        hn::StoreU(hn::Mul(prob, hn::Sub(hn::LoadU(d, ds + i), hn::LoadU(d, dlt + i))), d, ds + i);
      }
      MaskKeyRow(rows, c0, n, j, s0 + j, pr);
      MaskKeyRow(rows, c0, n, j, s0 + j, ds);
    }
    // depth n: the padding columns i >= n are never read.
    if (qt_head) {  // dense: the query rows are consecutive positions
      MatMul(probs, kBlock, StridedRows{p.dout + L.v_row(int64_t(first), h), L.v_stride}, dv_acc,
             L.Dv, cols, L.Dv, n, true);
      MatMul(dscores, kBlock, StridedRows{p.q + L.qk_row(int64_t(first), h), L.q_stride}, dk_acc,
             L.Dqk, cols, L.Dqk, n, true);
    } else {
      MatMul(probs, kBlock, GatheredRows{dorows}, dv_acc, L.Dv, cols, L.Dv, n, true);
      MatMul(dscores, kBlock, GatheredRows{qrows}, dk_acc, L.Dqk, cols, L.Dqk, n, true);
    }
  }
  for (int j = 0; j < cols; ++j) {
    ScaleRow(dk_acc + j * L.Dqk, p.scale, L.Dqk, p.dk + L.qk_row(s0 + j, h));
    std::copy(dv_acc + j * L.Dv, dv_acc + (j + 1) * L.Dv, p.dv + L.v_row(s0 + j, h));
  }
}

// ---------------------------------------------------------------------------------------------
// Sparse blocks too thin for tiles: row by row (forward, dq) and key by key (dk, dv)

// The valid keys row t lists, in slot order; returns their count.
int ListedKeys(const MhaTrainParams& p, int64_t t, int32_t* keys) {
  int n = 0;
  for (int64_t slot = 0; slot < p.topk; ++slot) {
    const int32_t s = p.indices[t * p.topk + slot];
    if (s >= 0) keys[n++] = s;
  }
  return n;
}

size_t RoundUp(size_t n) {
  const size_t N = hn::Lanes(DF());
  return (n + N - 1) / N * N;
}

// out and lse of row t, all heads. Scratch: keys [topk], rows [topk] pointers, scores
// [RoundUp(topk)], acc [Dv].
void SparseForwardRow(const MhaTrainParams& p, const Layout& L, int64_t t, int32_t* keys,
                      const float** rows, float* scores, float* acc) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const int n = ListedKeys(p, t, keys);
  const size_t padded = RoundUp(size_t(n));
  for (int64_t h = 0; h < L.H; ++h) {
    float* out = p.out + L.v_row(t, h);
    if (n == 0) {
      std::fill(out, out + L.Dv, 0.0f);
      p.lse[t * L.H + h] = kInf;
      continue;
    }
    for (int j = 0; j < n; ++j) rows[j] = p.k + L.qk_row(keys[j], h);
    DotMany(p.q + L.qk_row(t, h), rows, n, L.Dqk, scores);
    float max = -kInf;
    for (int j = 0; j < n; ++j) {
      scores[j] *= p.scale;
      max = std::max(max, scores[j]);
    }
    std::fill(scores + n, scores + padded, -kInf);
    const VF shift = hn::Set(d, max);
    VF sum_v = hn::Zero(d);
    for (size_t j = 0; j < padded; j += N) {
      const VF e = hn::Exp(d, hn::Sub(hn::LoadU(d, scores + j), shift));
      hn::StoreU(e, d, scores + j);
      sum_v = hn::Add(sum_v, e);
    }
    const float sum = hn::GetLane(hn::SumOfLanes(d, sum_v));
    for (int j = 0; j < n; ++j) rows[j] = p.v + L.v_row(keys[j], h);
    std::fill(acc, acc + L.Dv, 0.0f);
    AccumulateScaled(scores, rows, n, L.Dv, acc);
    ScaleRow(acc, 1.0f / sum, L.Dv, out);
    p.lse[t * L.H + h] = max + std::log(sum);
  }
}

// dq of row t, all heads. Scratch: keys [topk], rows [topk], scores and dprobs [RoundUp(topk)],
// acc [Dqk].
void SparseDqRow(const MhaTrainParams& p, const Layout& L, const float* delta, int64_t t,
                 int32_t* keys, const float** rows, float* scores, float* dprobs, float* acc) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const int n = ListedKeys(p, t, keys);
  const size_t padded = RoundUp(size_t(n));
  const VF scale = hn::Set(d, p.scale);
  for (int64_t h = 0; h < L.H; ++h) {
    std::fill(acc, acc + L.Dqk, 0.0f);
    if (n > 0) {
      for (int j = 0; j < n; ++j) rows[j] = p.v + L.v_row(keys[j], h);
      DotMany(p.dout + L.v_row(t, h), rows, n, L.Dv, dprobs);
      for (int j = 0; j < n; ++j) rows[j] = p.k + L.qk_row(keys[j], h);
      DotMany(p.q + L.qk_row(t, h), rows, n, L.Dqk, scores);
      std::fill(scores + n, scores + padded, 0.0f);  // padding: finite, never read back
      std::fill(dprobs + n, dprobs + padded, 0.0f);
      const VF lse = hn::Set(d, p.lse[t * L.H + h]), dlt = hn::Set(d, delta[t * L.H + h]);
      for (size_t j = 0; j < padded; j += N) {
        const VF prob = hn::Exp(d, hn::MulSub(hn::LoadU(d, scores + j), scale, lse));
        hn::StoreU(hn::Mul(prob, hn::Sub(hn::LoadU(d, dprobs + j), dlt)), d, scores + j);
      }
      AccumulateScaled(scores, rows, n, L.Dqk, acc);
    }
    ScaleRow(acc, p.scale, L.Dqk, p.dq + L.qk_row(t, h));
  }
}

// For each key s, the rows that list it, increasing: rows[offsets[s] .. offsets[s + 1]).
struct KeyRows {
  std::vector<int64_t> offsets;
  std::vector<int32_t> rows;
};

KeyRows TransposeIndices(const MhaTrainParams& p) {
  KeyRows kr;
  kr.offsets.assign(size_t(p.tokens + 1), 0);
  for (int64_t i = 0; i < p.tokens * p.topk; ++i) {
    if (p.indices[i] >= 0) ++kr.offsets[size_t(p.indices[i]) + 1];
  }
  std::partial_sum(kr.offsets.begin(), kr.offsets.end(), kr.offsets.begin());
  kr.rows.resize(size_t(kr.offsets.back()));
  std::vector<int64_t> next(kr.offsets.begin(), kr.offsets.end() - 1);
  for (int64_t t = 0; t < p.tokens; ++t) {
    for (int64_t slot = 0; slot < p.topk; ++slot) {
      const int32_t s = p.indices[t * p.topk + slot];
      if (s >= 0) kr.rows[size_t(next[s]++)] = int32_t(t);
    }
  }
  return kr;
}

// dk and dv of key s, all heads, from the rows that list it in batches of kBatch.
// Scratch: acc [Dqk + Dv].
void SparseDkDvKey(const MhaTrainParams& p, const Layout& L, const float* delta, const KeyRows& kr,
                   int64_t s, float* acc) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const int32_t* listing = kr.rows.data() + kr.offsets[s];
  const int64_t count = kr.offsets[s + 1] - kr.offsets[s];
  const VF scale = hn::Set(d, p.scale);
  float* dk_acc = acc;
  float* dv_acc = acc + L.Dqk;
  for (int64_t h = 0; h < L.H; ++h) {
    std::fill(acc, acc + L.Dqk + L.Dv, 0.0f);
    const float* k = p.k + L.qk_row(s, h);
    const float* v = p.v + L.v_row(s, h);
    for (int64_t b = 0; b < count; b += kBatch) {
      const int m = int(std::min<int64_t>(kBatch, count - b));
      const float* q_rows[kBatch];
      const float* dout_rows[kBatch];
      alignas(64) float probs[kBatch] = {}, dscores[kBatch] = {}, lse[kBatch] = {},
                        dlt[kBatch] = {};
      for (int i = 0; i < m; ++i) {
        const int64_t t = listing[b + i];
        q_rows[i] = p.q + L.qk_row(t, h);
        dout_rows[i] = p.dout + L.v_row(t, h);
        lse[i] = p.lse[t * L.H + h];
        dlt[i] = delta[t * L.H + h];
      }
      DotMany(k, q_rows, m, L.Dqk, probs);
      DotMany(v, dout_rows, m, L.Dv, dscores);
      for (int i = 0; i < kBatch; i += int(N)) {  // lanes >= m: finite, never read back
        const VF prob =
            hn::Exp(d, hn::MulSub(hn::LoadU(d, probs + i), scale, hn::LoadU(d, lse + i)));
        hn::StoreU(prob, d, probs + i);
        hn::StoreU(hn::Mul(prob, hn::Sub(hn::LoadU(d, dscores + i), hn::LoadU(d, dlt + i))), d,
                   dscores + i);
      }
      AccumulateScaled(probs, dout_rows, m, L.Dv, dv_acc);
      AccumulateScaled(dscores, q_rows, m, L.Dqk, dk_acc);
    }
    ScaleRow(dk_acc, p.scale, L.Dqk, p.dk + L.qk_row(s, h));
    std::copy(dv_acc, dv_acc + L.Dv, p.dv + L.v_row(s, h));
  }
}

// The union of what the items of one block list (the keys of a block of query rows, or the rows
// of a block of keys), ascending, with its membership matrix [items, |ids|].
struct BlockSelection {
  std::vector<int32_t> ids;
  std::vector<uint8_t> member;
  std::vector<int32_t> pos;  // [T]: position of an id in `ids`; -1 between builds
  int64_t pairs = 0;         // listed (item, id) pairs
  explicit BlockSelection(int64_t T) : pos(static_cast<size_t>(T), -1) {}

  // for_each(i, f) calls f(id) for every id that item i lists.
  template <class ForEach>
  void build(int items, const ForEach& for_each) {
    ids.clear();
    pairs = 0;
    for (int i = 0; i < items; ++i) {
      for_each(i, [&](int32_t id) {
        ++pairs;
        if (pos[id] < 0) {
          pos[id] = 0;
          ids.push_back(id);
        }
      });
    }
    std::sort(ids.begin(), ids.end());
    for (size_t u = 0; u < ids.size(); ++u) pos[ids[u]] = int32_t(u);
    member.assign(size_t(items) * ids.size(), 0);
    for (int i = 0; i < items; ++i) {
      for_each(i, [&](int32_t id) { member[size_t(i) * ids.size() + size_t(pos[id])] = 1; });
    }
    for (int32_t id : ids) pos[id] = -1;
  }

  // Tiles compute items x |ids| pairs, at about 10x the rate of the per-row gathers (~90 vs ~9
  // GFLOP/s measured on 2 Zen 5 cores at V3.2's widths); they are used while the listed pairs
  // fill at least 1/kMinFill of that area, so their cost stays within kMinFill x the listed pairs.
  static constexpr int64_t kMinFill = 8;
  bool use_tiles(int items) const {
    return pairs * kMinFill >= int64_t(items) * int64_t(ids.size());
  }
  Selection selection() const { return {ids.data(), int64_t(ids.size()), member.data()}; }
};

// Scratch of the per-row sparse functions.
struct RowScratch {
  std::vector<int32_t> keys;
  std::vector<const float*> rows;
  std::vector<float> scores, dprobs, acc;
  RowScratch(const MhaTrainParams& p, const Layout& L)
      : keys(static_cast<size_t>(p.topk)),
        rows(static_cast<size_t>(p.topk)),
        scores(RoundUp(static_cast<size_t>(p.topk))),
        dprobs(scores.size()),
        acc(L.Dqk + L.Dv) {}
};

// Calls f(s) for every valid key that row t lists.
template <class F>
void ForEachListedKey(const MhaTrainParams& p, int64_t t, const F& f) {
  for (int64_t slot = 0; slot < p.topk; ++slot) {
    const int32_t s = p.indices[t * p.topk + slot];
    if (s >= 0) f(s);
  }
}

std::vector<int32_t> Positions(int64_t T) {
  std::vector<int32_t> ids(static_cast<size_t>(T));
  std::iota(ids.begin(), ids.end(), 0);
  return ids;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Passes (exported per SIMD target). Query blocks run from the last (the most keys) to the first,
// key blocks from the first (the most rows) to the last, so that the pool's dynamic chunks
// balance.

void MhaTrainForwardPass(const MhaTrainParams& p, ThreadPool& pool) {
  const Layout L(p);
  const int64_t blocks = (L.T + kBlock - 1) / kBlock;
  const auto block_rows = [&](int64_t t0) { return int(std::min<int64_t>(kBlock, L.T - t0)); };
  if (!p.indices) {
    const std::vector<int32_t> ids = Positions(L.T);
    const Transposed kt = TransposeHeads(p.k, L, L.Dqk, pool);
    pool.parallel_for(blocks * L.H, 1, [&](int64_t begin, int64_t end) {
      Tiles w(L);
      for (int64_t i = begin; i < end; ++i) {
        const int64_t t0 = (blocks - 1 - i / L.H) * kBlock, h = i % L.H;
        const int rows = block_rows(t0);
        ForwardTile(p, L, h, t0, rows, {ids.data(), t0 + rows, nullptr}, kt.head(h), kt.ld, w);
      }
    });
    return;
  }
  pool.parallel_for(blocks, 1, [&](int64_t begin, int64_t end) {
    Tiles w(L);
    RowScratch rs(p, L);
    BlockSelection sel(L.T);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t t0 = (blocks - 1 - i) * kBlock;
      const int rows = block_rows(t0);
      sel.build(rows, [&](int r, const auto& f) { ForEachListedKey(p, t0 + r, f); });
      if (sel.use_tiles(rows)) {
        for (int64_t h = 0; h < L.H; ++h) {
          ForwardTile(p, L, h, t0, rows, sel.selection(), nullptr, 0, w);
        }
      } else {
        for (int64_t t = t0; t < t0 + rows; ++t) {
          SparseForwardRow(p, L, t, rs.keys.data(), rs.rows.data(), rs.scores.data(),
                           rs.acc.data());
        }
      }
    }
  });
}

void MhaTrainBackwardPass(const MhaTrainParams& p, ThreadPool& pool) {
  const Layout L(p);
  const int64_t blocks = (L.T + kBlock - 1) / kBlock;
  const auto block_rows = [&](int64_t t0) { return int(std::min<int64_t>(kBlock, L.T - t0)); };
  // Δ[t, h] = dout[t, h] · out[t, h]
  std::vector<float> delta(static_cast<size_t>(L.T * L.H));
  pool.parallel_for(L.T * L.H, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float* out = p.out + size_t(i) * L.Dv;
      DotRows<1>(p.dout + size_t(i) * L.Dv, &out, L.Dv, &delta[size_t(i)]);
    }
  });
  if (!p.indices) {
    const std::vector<int32_t> ids = Positions(L.T);
    {
      const Transposed kt = TransposeHeads(p.k, L, L.Dqk, pool);
      const Transposed vt = TransposeHeads(p.v, L, L.Dv, pool);
      pool.parallel_for(blocks * L.H, 1, [&](int64_t begin, int64_t end) {
        Tiles w(L);
        for (int64_t i = begin; i < end; ++i) {
          const int64_t t0 = (blocks - 1 - i / L.H) * kBlock, h = i % L.H;
          const int rows = block_rows(t0);
          DqTile(p, L, delta.data(), h, t0, rows, {ids.data(), t0 + rows, nullptr}, kt.head(h),
                 vt.head(h), kt.ld, w);
        }
      });
    }
    const Transposed qt = TransposeHeads(p.q, L, L.Dqk, pool);
    const Transposed dot = TransposeHeads(p.dout, L, L.Dv, pool);
    pool.parallel_for(blocks * L.H, 1, [&](int64_t begin, int64_t end) {
      Tiles w(L);
      for (int64_t i = begin; i < end; ++i) {
        const int64_t s0 = (i / L.H) * kBlock, h = i % L.H;
        DkDvTile(p, L, delta.data(), h, s0, block_rows(s0), {ids.data() + s0, L.T - s0, nullptr},
                 qt.head(h), dot.head(h), qt.ld, w);
      }
    });
    return;
  }
  pool.parallel_for(blocks, 1, [&](int64_t begin, int64_t end) {
    Tiles w(L);
    RowScratch rs(p, L);
    BlockSelection sel(L.T);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t t0 = (blocks - 1 - i) * kBlock;
      const int rows = block_rows(t0);
      sel.build(rows, [&](int r, const auto& f) { ForEachListedKey(p, t0 + r, f); });
      if (sel.use_tiles(rows)) {
        for (int64_t h = 0; h < L.H; ++h) {
          DqTile(p, L, delta.data(), h, t0, rows, sel.selection(), nullptr, nullptr, 0, w);
        }
      } else {
        for (int64_t t = t0; t < t0 + rows; ++t) {
          SparseDqRow(p, L, delta.data(), t, rs.keys.data(), rs.rows.data(), rs.scores.data(),
                      rs.dprobs.data(), rs.acc.data());
        }
      }
    }
  });
  const KeyRows kr = TransposeIndices(p);
  pool.parallel_for(blocks, 1, [&](int64_t begin, int64_t end) {
    Tiles w(L);
    RowScratch rs(p, L);
    BlockSelection sel(L.T);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t s0 = i * kBlock;
      const int cols = block_rows(s0);
      sel.build(cols, [&](int j, const auto& f) {
        for (int64_t o = kr.offsets[s0 + j]; o < kr.offsets[s0 + j + 1]; ++o) f(kr.rows[o]);
      });
      if (sel.use_tiles(cols)) {
        for (int64_t h = 0; h < L.H; ++h) {
          DkDvTile(p, L, delta.data(), h, s0, cols, sel.selection(), nullptr, nullptr, 0, w);
        }
      } else {
        for (int64_t s = s0; s < s0 + cols; ++s)
          SparseDkDvKey(p, L, delta.data(), kr, s, rs.acc.data());
      }
    }
  });
}

}  // namespace HWY_NAMESPACE

}  // namespace dsa
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace dsa {

HWY_EXPORT(MhaTrainForwardPass);
HWY_EXPORT(MhaTrainBackwardPass);

void mha_train_forward(const MhaTrainParams& params, ThreadPool& pool) {
  validate_forward(params);
  if (params.tokens == 0) return;
  HWY_DYNAMIC_DISPATCH(MhaTrainForwardPass)(params, pool);
}

void mha_backward(const MhaTrainParams& params, ThreadPool& pool) {
  validate_backward(params);
  if (params.tokens == 0) return;
  HWY_DYNAMIC_DISPATCH(MhaTrainBackwardPass)(params, pool);
}

}  // namespace dsa
#endif  // HWY_ONCE

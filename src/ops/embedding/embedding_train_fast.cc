// Embedding lookup and its gradient over the pool's threads (see embedding_train.h).
#include <algorithm>

#include "ops/embedding/embedding_train.h"

namespace dsa {
namespace {

// Columns per backward task: whole cache lines (so threads never share one in dtable) and long
// enough rows for the copy loop to vectorize.
constexpr int64_t kColumnBlock = 256;

}  // namespace

void embedding_train_forward(const EmbeddingTrainParams& p, ThreadPool& pool) {
  validate_forward(p);
  pool.parallel_for(p.tokens, std::max<int64_t>(1, 4096 / p.dim), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const float* row = p.table + int64_t(p.ids[t]) * p.dim;
      std::copy(row, row + p.dim, p.out + t * p.dim);
    }
  });
}

void embedding_backward(const EmbeddingTrainParams& p, ThreadPool& pool) {
  validate_backward(p);
  if (p.tokens == 0) return;
  // Each task owns columns [c0, c1) of every dtable row and adds the tokens in order, so rows
  // that repeat an id are summed in the reference's order, without atomics.
  const int64_t blocks = (p.dim + kColumnBlock - 1) / kColumnBlock;
  pool.parallel_for(blocks, 1, [&](int64_t begin, int64_t end) {
    const int64_t c0 = begin * kColumnBlock, c1 = std::min(p.dim, end * kColumnBlock);
    for (int64_t t = 0; t < p.tokens; ++t) {
      float* dst = p.dtable + int64_t(p.ids[t]) * p.dim;
      const float* src = p.dout + t * p.dim;
      for (int64_t i = c0; i < c1; ++i) dst[i] += src[i];
    }
  });
}

}  // namespace dsa

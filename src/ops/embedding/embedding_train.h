// Token embedding lookup for training (docs/training-engine.md: h = embed_tokens[tokens]):
//   forward   out[t] = table[ids[t]]
//   backward  dtable[ids[t]] += dout[t]     for t = 0 .. T−1 in order, ACCUMULATED
// A token id that repeats sums its rows' gradients in token order, in the reference and in the
// fast version alike, so both give the same bits.
#pragma once

#include <cstdint>

#include "core/thread_pool.h"

namespace dsa {

template <typename Real>
struct EmbeddingTrain {
  const Real* table = nullptr;   // [V, D]
  const int32_t* ids = nullptr;  // [T], each in [0, V)
  Real* out = nullptr;           // [T, D] forward
  const Real* dout = nullptr;    // [T, D] backward input
  Real* dtable = nullptr;        // [V, D] backward: accumulated (+=)
  int64_t tokens = 0;            // T
  int64_t vocab = 0;             // V
  int64_t dim = 0;               // D
};
using EmbeddingTrainParams = EmbeddingTrain<float>;

// Shapes and every id (0 <= id < V; the error names the index and the id); throws dsa::Error.
template <typename Real>
void validate(const EmbeddingTrain<Real>& params);
// validate() plus the pointers that pass reads and writes.
template <typename Real>
void validate_forward(const EmbeddingTrain<Real>& params);
template <typename Real>
void validate_backward(const EmbeddingTrain<Real>& params);

// Scalar references (Real = float or double).
template <typename Real>
void embedding_train_forward_reference(const EmbeddingTrain<Real>& params);
template <typename Real>
void embedding_backward_reference(const EmbeddingTrain<Real>& params);

// Threads over tokens (forward) and over disjoint column blocks of D, each walking the tokens in
// order (backward): deterministic, and equal to the reference for any thread count.
void embedding_train_forward(const EmbeddingTrainParams& params, ThreadPool& pool);
void embedding_backward(const EmbeddingTrainParams& params, ThreadPool& pool);

}  // namespace dsa

#include "core/error.h"
#include "ops/embedding/embedding_train.h"

namespace dsa {
namespace {

void require(const void* pointer, const char* op, const char* field) {
  if (pointer == nullptr) fail("{}: {} must be set", op, field);
}

}  // namespace

template <typename Real>
void validate(const EmbeddingTrain<Real>& p) {
  if (p.tokens < 0) fail("embedding_train: tokens must be >= 0, got {}", p.tokens);
  if (p.vocab <= 0) fail("embedding_train: vocab must be > 0, got {}", p.vocab);
  if (p.dim <= 0) fail("embedding_train: dim must be > 0, got {}", p.dim);
  if (p.tokens == 0) return;
  require(p.ids, "embedding_train", "ids");
  for (int64_t t = 0; t < p.tokens; ++t) {
    if (p.ids[t] < 0 || p.ids[t] >= p.vocab) {
      fail("embedding_train: ids[{}] = {} is outside the vocabulary [0, {})", t, p.ids[t], p.vocab);
    }
  }
}

template <typename Real>
void validate_forward(const EmbeddingTrain<Real>& p) {
  validate(p);
  if (p.tokens == 0) return;
  require(p.table, "embedding_train_forward", "table");
  require(p.out, "embedding_train_forward", "out");
}

template <typename Real>
void validate_backward(const EmbeddingTrain<Real>& p) {
  validate(p);
  if (p.tokens == 0) return;
  require(p.dout, "embedding_backward", "dout");
  require(p.dtable, "embedding_backward", "dtable");
}

template <typename Real>
void embedding_train_forward_reference(const EmbeddingTrain<Real>& p) {
  validate_forward(p);
  for (int64_t t = 0; t < p.tokens; ++t) {
    const Real* row = p.table + int64_t(p.ids[t]) * p.dim;
    for (int64_t i = 0; i < p.dim; ++i) p.out[t * p.dim + i] = row[i];
  }
}

template <typename Real>
void embedding_backward_reference(const EmbeddingTrain<Real>& p) {
  validate_backward(p);
  for (int64_t t = 0; t < p.tokens; ++t) {
    Real* row = p.dtable + int64_t(p.ids[t]) * p.dim;
    for (int64_t i = 0; i < p.dim; ++i) row[i] += p.dout[t * p.dim + i];
  }
}

template void validate(const EmbeddingTrain<float>&);
template void validate_forward(const EmbeddingTrain<float>&);
template void validate_backward(const EmbeddingTrain<float>&);
template void embedding_train_forward_reference(const EmbeddingTrain<float>&);
template void embedding_backward_reference(const EmbeddingTrain<float>&);

template void validate(const EmbeddingTrain<double>&);
template void validate_forward(const EmbeddingTrain<double>&);
template void validate_backward(const EmbeddingTrain<double>&);
template void embedding_train_forward_reference(const EmbeddingTrain<double>&);
template void embedding_backward_reference(const EmbeddingTrain<double>&);

}  // namespace dsa

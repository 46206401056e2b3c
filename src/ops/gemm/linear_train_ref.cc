#include <climits>

#include "core/error.h"
#include "ops/gemm/linear_train.h"

namespace dsa {
namespace {

void require(const void* pointer, const char* op, const char* field) {
  if (pointer == nullptr) fail("{}: {} must be set", op, field);
}

}  // namespace

template <typename Real>
void validate(const LinearTrain<Real>& p) {
  if (p.m < 0) fail("linear_train: m must be >= 0, got {}", p.m);
  if (p.n <= 0) fail("linear_train: n must be > 0, got {}", p.n);
  if (p.k <= 0) fail("linear_train: k must be > 0, got {}", p.k);
  // BLAS takes int dimensions and leading dimensions.
  if (p.m > INT_MAX || p.n > INT_MAX || p.k > INT_MAX) {
    fail("linear_train: m {}, n {}, k {} must each be at most {}", p.m, p.n, p.k, INT_MAX);
  }
}

template <typename Real>
void validate_forward(const LinearTrain<Real>& p) {
  validate(p);
  if (p.m == 0) return;
  require(p.x, "linear_train_forward", "x");
  require(p.weight, "linear_train_forward", "weight");
  require(p.y, "linear_train_forward", "y");
}

template <typename Real>
void validate_backward(const LinearTrain<Real>& p) {
  validate(p);
  if (p.m == 0) return;
  require(p.dy, "linear_backward", "dy");
  if (p.dx) require(p.weight, "linear_backward", "weight (needed for dx)");
  if (p.dweight) require(p.x, "linear_backward", "x (needed for dweight)");
}

template <typename Real>
void linear_train_forward_reference(const LinearTrain<Real>& p) {
  validate_forward(p);
  for (int64_t i = 0; i < p.m; ++i) {
    for (int64_t j = 0; j < p.n; ++j) {
      double sum = 0.0;
      for (int64_t l = 0; l < p.k; ++l) sum += double(p.x[i * p.k + l]) * p.weight[j * p.k + l];
      p.y[i * p.n + j] = Real(sum);
    }
  }
}

template <typename Real>
void linear_backward_reference(const LinearTrain<Real>& p) {
  validate_backward(p);
  if (p.dx) {
    for (int64_t i = 0; i < p.m; ++i) {
      for (int64_t l = 0; l < p.k; ++l) {
        double sum = 0.0;
        for (int64_t j = 0; j < p.n; ++j) sum += double(p.dy[i * p.n + j]) * p.weight[j * p.k + l];
        p.dx[i * p.k + l] += Real(sum);
      }
    }
  }
  if (p.dweight) {
    for (int64_t j = 0; j < p.n; ++j) {
      for (int64_t l = 0; l < p.k; ++l) {
        double sum = 0.0;
        for (int64_t i = 0; i < p.m; ++i) sum += double(p.dy[i * p.n + j]) * p.x[i * p.k + l];
        p.dweight[j * p.k + l] += Real(sum);
      }
    }
  }
}

template void validate(const LinearTrain<float>&);
template void validate_forward(const LinearTrain<float>&);
template void validate_backward(const LinearTrain<float>&);
template void linear_train_forward_reference(const LinearTrain<float>&);
template void linear_backward_reference(const LinearTrain<float>&);

template void validate(const LinearTrain<double>&);
template void validate_forward(const LinearTrain<double>&);
template void validate_backward(const LinearTrain<double>&);
template void linear_train_forward_reference(const LinearTrain<double>&);
template void linear_backward_reference(const LinearTrain<double>&);

}  // namespace dsa
